//! `/metrics`: the Prometheus exposition, rendered at scrape time from the latest [`Snapshot`].
//!
//! Per-service series are a *view* of the snapshot (the Collector pattern), not metrics kept up
//! to date by hand, so a service removed by a reload has no series left at the next scrape.
//! They are built as the prometheus crate's `MetricFamily` and encoded by its `TextEncoder`, but
//! a family and 1,024 services at a time (`Chunked`) rather than through `Collector::collect`,
//! which must materialize every family at once: at 10,000 services that cost 13 MB per scrape,
//! during a sweep, and one whole family alone is 65 MB at 100,000.
//!
//! Metric names follow blackbox_exporter where they mean the same thing (`probe_success`,
//! `probe_duration_seconds`, `probe_http_status_code`) so dashboards and alerts carry over; the
//! daemon's own are `healthsweep_*`. The process metrics and build info live in a registry the
//! daemon owns, not the global default one.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::watch;

use crate::body::Pieces;
use crate::labels;
use crate::reload::ReloadStatus;
use crate::snapshot::{ServiceStatus, Snapshot, State};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family the collector renders.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: MetricType::GAUGE,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: MetricType::COUNTER,
    }
}

const PROBE_SUCCESS: Family = gauge(
    "probe_success",
    "Whether the latest check of the target passed (1) or failed (0).",
);
const PROBE_DURATION: Family = gauge(
    "probe_duration_seconds",
    "How long the latest check of the target took.",
);
const PROBE_HTTP_STATUS: Family = gauge(
    "probe_http_status_code",
    "Response status of the latest check; 0 when no response arrived.",
);
const FAILURE_REASON: Family = gauge(
    "healthsweep_probe_failure_reason",
    "1 for the reason the latest check of the target failed; absent when it passed.",
);
const CONSECUTIVE_FAILURES: Family = gauge(
    "healthsweep_target_consecutive_failures",
    "Checks of the target failed in a row.",
);
const TARGET_UP: Family = gauge(
    "healthsweep_target_up",
    "The target's state: 1 up (or degraded), 0 down; absent while unknown (not checked yet).",
);
const TARGET_MAINTENANCE: Family = gauge(
    "healthsweep_target_maintenance",
    "1 while the target is in a maintenance window (scheduled in the config, or opened through POST /-/maintenance), 0 otherwise. Only for targets a window covers.",
);
const TARGET_BLOCKED: Family = gauge(
    "healthsweep_target_blocked",
    "1 while a dependency of the target (depends_on, and theirs) is down: its own failure is not the root cause. Only for targets with depends_on.",
);
const LAST_CHECK: Family = gauge(
    "healthsweep_target_last_check_timestamp_seconds",
    "When the latest check of the target started, in seconds since the Unix epoch. Only for targets with an interval of their own (checked every Nth sweep): their series stay between checks, and this says how old they are.",
);
const TARGET_DEGRADED: Family = gauge(
    "healthsweep_target_degraded",
    "1 while the target is up but slower than its max_latency; absent while unknown.",
);
const SSL_EXPIRY: Family = gauge(
    "probe_ssl_earliest_cert_expiry",
    "Earliest notAfter in the certificate chain the target presented, in seconds since the Unix epoch.",
);
const DNS_LOOKUP: Family = gauge(
    "probe_dns_lookup_time_seconds",
    "For dns:// services: seconds from sending the query to its answer (TCP retry included).",
);
const DNS_ANSWER_RRS: Family = gauge(
    "probe_dns_answer_rrs",
    "For dns:// services: records in the answer section of the latest answer.",
);
const GRPC_STATUS_CODE: Family = gauge(
    "probe_grpc_status_code",
    "For grpc:// services: the gRPC status code of the latest health check (0 OK).",
);
const GRPC_HEALTH: Family = gauge(
    "probe_grpc_healthcheck_response",
    "For grpc:// services: 1 for the serving status the latest health check answered, 0 for the others.",
);
const GRPC_SSL: Family = gauge(
    "probe_grpc_ssl",
    "For grpc:// services: whether the check ran over TLS (grpcs://).",
);
const HTTP_VERSION: Family = gauge(
    "probe_http_version",
    "HTTP version of the latest response (1, 1.1 or 2).",
);
const CHECKS: Family = counter(
    "healthsweep_checks_total",
    "Checks of the target since it was added, by result: ok, or the failure reason.",
);
const SWEEPS: Family = counter("healthsweep_sweeps_total", "Sweeps completed.");
const DEADLINE_EXCEEDED: Family = counter(
    "healthsweep_checks_deadline_exceeded_total",
    "Checks cut off (or never started) because the sweep deadline arrived.",
);
const LAST_SWEEP_DURATION: Family = gauge(
    "healthsweep_last_sweep_duration_seconds",
    "How long the latest sweep took.",
);
const LAST_SWEEP_TIMESTAMP: Family = gauge(
    "healthsweep_last_sweep_timestamp_seconds",
    "When the latest sweep finished, in seconds since the Unix epoch.",
);
const LAST_SWEEP_DEADLINE_EXCEEDED: Family = gauge(
    "healthsweep_last_sweep_deadline_exceeded",
    "Checks of the latest sweep cut off by the deadline.",
);
const LAST_SWEEP_NOT_STARTED: Family = gauge(
    "healthsweep_last_sweep_checks_not_started",
    "Checks of the latest sweep that never started (every slot was busy until the deadline): no verdict on their service.",
);
const LAST_SWEEP_CUT_SHORT: Family = gauge(
    "healthsweep_last_sweep_checks_cut_short",
    "Checks of the latest sweep that started too late to have their full time and were cut off: no verdict on their service.",
);
const LAST_SWEEP_REUSED: Family = gauge(
    "healthsweep_last_sweep_connections_reused",
    "Checks of the latest sweep that ran on a connection kept from an earlier sweep.",
);
const IDLE_CONNECTIONS: Family = gauge(
    "healthsweep_idle_connections",
    "Connections kept open now for reuse by the next checks.",
);
const STORE_ERRORS: Family = counter(
    "healthsweep_state_store_errors_total",
    "State store operations that failed (opening, reading or writing the database); the daemon goes on with memory only meanwhile.",
);
const MAX_IN_FLIGHT: Family = gauge(
    "healthsweep_sweep_max_in_flight",
    "Checks in flight at most during the latest sweep (from max_in_flight or the open-file limit).",
);
const SWEEP_INTERVAL: Family = gauge(
    "healthsweep_sweep_interval_seconds",
    "Configured time between sweep starts.",
);
const SWEEP_DEADLINE: Family = gauge(
    "healthsweep_sweep_deadline_seconds",
    "Configured time a sweep may take.",
);
const TARGETS: Family = gauge("healthsweep_targets", "Configured targets by state.");
const RELOAD_OK: Family = gauge(
    "healthsweep_config_last_reload_successful",
    "Whether the latest config load succeeded (1) or failed (0).",
);
const RELOAD_TIME: Family = gauge(
    "healthsweep_config_last_reload_success_timestamp_seconds",
    "When the config was last loaded successfully, in seconds since the Unix epoch.",
);
const GENERATION: Family = gauge(
    "healthsweep_config_generation",
    "Successful config loads since start (1 after start-up).",
);
const SHARD_INFO: Family = gauge(
    "healthsweep_shard_info",
    "Always 1; index and count say which shard of the fleet this replica checks (0 of 1: all).",
);
const DISCOVERY_TARGETS: Family = gauge(
    "healthsweep_discovery_targets",
    "Services a discovery source adds now (after keep/drop, duplicates and rejected targets).",
);
const DISCOVERY_OK: Family = gauge(
    "healthsweep_discovery_last_refresh_successful",
    "Whether the source's latest refresh succeeded (1) or failed and kept its last good targets (0).",
);
const DISCOVERY_TIME: Family = gauge(
    "healthsweep_discovery_last_refresh_timestamp_seconds",
    "When the source last refreshed, successfully or not, in seconds since the Unix epoch.",
);
const DISCOVERY_FAILURES: Family = counter(
    "healthsweep_discovery_refresh_failures_total",
    "Refreshes of the source that failed (the last good targets were kept).",
);
const DISCOVERY_SKIPPED: Family = gauge(
    "healthsweep_discovery_skipped_targets",
    "Targets of the source left out now, by reason: duplicate (a service of that name exists), rejected (the template could not make a service of it).",
);

/// One per-service value: the number, and a label of its own for the families that have one
/// (`reason` for the failure reason, `serving_status` for the gRPC answer).
struct Sample {
    value: f64,
    label: Option<(&'static str, &'static str)>,
}

impl Sample {
    fn of(value: f64) -> Option<Sample> {
        Some(Sample { value, label: None })
    }
}

/// What a service's series say beyond its status: views of the whole snapshot.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    /// A dependency of it is down.
    blocked: bool,
    /// `None`: no maintenance window covers it; else whether it is in one now.
    maintenance: Option<bool>,
}

/// Each per-service family, with how to get its value from a service's status (`None`: no
/// series for that service).
type PerService = (Family, fn(&ServiceStatus, Extra) -> Option<Sample>);

const PER_SERVICE: [PerService; 17] = [
    (PROBE_SUCCESS, |s, _| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(if o.ok() { 1.0 } else { 0.0 }))
    }),
    (PROBE_DURATION, |s, _| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(o.duration.as_secs_f64()))
    }),
    (PROBE_HTTP_STATUS, |s, _| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(f64::from(o.http_status.unwrap_or(0))))
    }),
    (FAILURE_REASON, |s, _| {
        s.last.as_ref().and_then(|o| o.reason).map(|r| Sample {
            value: 1.0,
            label: Some((labels::REASON, r.as_str())),
        })
    }),
    (CONSECUTIVE_FAILURES, |s, _| {
        Sample::of(f64::from(s.consecutive_failures))
    }),
    (TARGET_UP, |s, _| match s.state {
        State::Up | State::Degraded => Sample::of(1.0),
        State::Down => Sample::of(0.0),
        State::Unknown => None,
    }),
    (TARGET_DEGRADED, |s, _| match s.state {
        State::Degraded => Sample::of(1.0),
        State::Up | State::Down => Sample::of(0.0),
        State::Unknown => None,
    }),
    (SSL_EXPIRY, |s, _| {
        let tls = s.last.as_ref()?.tls.as_ref()?;
        Sample::of(tls.earliest_expiry.as_f64())
    }),
    (HTTP_VERSION, |s, _| {
        Sample::of(s.last.as_ref()?.http_version?.as_f64())
    }),
    (DNS_LOOKUP, |s, _| {
        Sample::of(s.last.as_ref()?.dns.as_ref()?.lookup.as_secs_f64())
    }),
    (DNS_ANSWER_RRS, |s, _| {
        Sample::of(s.last.as_ref()?.dns.as_ref()?.answer_rrs as f64)
    }),
    (GRPC_STATUS_CODE, |s, _| {
        Sample::of(f64::from(s.last.as_ref()?.grpc.as_ref()?.status_code))
    }),
    (GRPC_HEALTH, |s, _| {
        let serving = s.last.as_ref()?.grpc.as_ref()?.serving_name()?;
        Some(Sample {
            value: 1.0,
            label: Some((labels::SERVING_STATUS, serving)),
        })
    }),
    (GRPC_SSL, |s, _| {
        // `grpc_service` is set exactly for grpc:// and grpcs:// services.
        if s.service.extra.grpc_service.is_none() || s.last.is_none() {
            return None;
        }
        Sample::of(if s.service.target.tls { 1.0 } else { 0.0 })
    }),
    (LAST_CHECK, |s, _| {
        // Every other target is checked every sweep: healthsweep_last_sweep_timestamp_seconds.
        if s.service.every <= 1 {
            return None;
        }
        Sample::of(crate::timestamp::UnixTime::from_system(s.last.as_ref()?.at).as_f64())
    }),
    (TARGET_MAINTENANCE, |_, x| {
        // Only for services a window covers.
        Sample::of(if x.maintenance? { 1.0 } else { 0.0 })
    }),
    (TARGET_BLOCKED, |s, x| {
        // Only for services that have dependencies: the others can never be blocked.
        s.service.extra.depends_on.as_ref()?;
        Sample::of(if x.blocked { 1.0 } else { 0.0 })
    }),
];

/// Renders `/metrics`.
pub struct Metrics {
    /// Build info and process metrics: what does not come from the snapshot.
    registry: Registry,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    reloads: watch::Receiver<ReloadStatus>,
    /// The prober's idle connections, read live (not a property of a sweep).
    idle_connections: Option<Arc<std::sync::atomic::AtomicUsize>>,
    store_errors: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The ad-hoc maintenance windows (scheduled ones are in the snapshot's config).
    windows: Option<Arc<crate::maintenance::Windows>>,
    /// The discovery sources' status.
    discovery: Option<watch::Receiver<crate::discovery::Statuses>>,
}

impl Metrics {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        reloads: watch::Receiver<ReloadStatus>,
    ) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(build_info()))
            .expect("build info is registered once");
        // Outside a runtime (a unit test building metrics by hand) there are no tasks to count.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            registry
                .register(Box::new(TaskCollector::new(runtime)))
                .expect("the task gauge is registered once");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector is registered once");
        Metrics {
            registry,
            snapshots,
            reloads,
            idle_connections: None,
            store_errors: None,
            windows: None,
            discovery: None,
        }
    }

    /// Also report the discovery sources (`healthsweep_discovery_*{source}`).
    pub fn with_discovery(mut self, status: watch::Receiver<crate::discovery::Statuses>) -> Self {
        self.discovery = Some(status);
        self
    }

    /// Also report which targets are in a maintenance window.
    pub fn with_maintenance(mut self, windows: Arc<crate::maintenance::Windows>) -> Self {
        self.windows = Some(windows);
        self
    }

    /// Also report the state store's errors (`healthsweep_state_store_errors_total`).
    pub fn with_store_errors(mut self, errors: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.store_errors = Some(errors);
        self
    }

    /// Also report the prober's idle connections (`healthsweep_idle_connections`).
    pub fn with_idle_connections(mut self, gauge: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        self.idle_connections = Some(gauge);
        self
    }

    /// The text exposition of every metric, all from one snapshot, as pieces rendered when
    /// asked for (see [`crate::body`]): a scrape never holds the whole text.
    pub fn pieces(self: &Arc<Self>) -> Pieces {
        // Clone the Arc and let go at once: the sweeper is never held up by a scrape.
        let snapshot = self.snapshots.borrow().clone();
        let maintenance = self
            .windows
            .as_deref()
            .map(|w| crate::maintenance::View::at(&snapshot, w, crate::maintenance::now_ms()))
            .unwrap_or_default();
        Box::new(Exposition {
            metrics: self.clone(),
            snapshot,
            maintenance,
            family: 0,
            service: 0,
            header_written: false,
        })
    }

    /// The whole exposition in memory (the benchmark and tests; the server streams
    /// [`Metrics::pieces`]).
    pub fn render(self: &Arc<Self>) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in self.pieces() {
            out.extend_from_slice(&piece);
        }
        out
    }

    /// What does not come from the services: the daemon's own families and the registry's.
    fn daemon_text(&self, snapshot: &Snapshot) -> Vec<u8> {
        let reload = self.reloads.borrow().clone();
        let encoder = TextEncoder::new();
        let mut daemon = daemon_families(snapshot, &reload);
        if let Some(idle) = &self.idle_connections {
            let value = idle.load(std::sync::atomic::Ordering::Relaxed) as f64;
            daemon.push(family(
                &IDLE_CONNECTIONS,
                vec![metric(&IDLE_CONNECTIONS, Vec::new(), value)],
            ));
        }
        if let Some(errors) = &self.store_errors {
            let value = errors.load(std::sync::atomic::Ordering::Relaxed) as f64;
            daemon.push(family(
                &STORE_ERRORS,
                vec![metric(&STORE_ERRORS, Vec::new(), value)],
            ));
        }
        if let Some(d) = &self.discovery {
            let statuses = d.borrow().clone();
            daemon.extend(discovery_families(&statuses));
        }
        let mut out = Vec::new();
        encode(&encoder, &daemon, &mut out);
        encode(&encoder, &self.registry.gather(), &mut out);
        out
    }
}

/// `healthsweep_discovery_*{source}`: one series per source each (none without sources).
fn discovery_families(statuses: &[crate::discovery::SourceStatus]) -> Vec<MetricFamily> {
    if statuses.is_empty() {
        return Vec::new();
    }
    let per = |f: &Family, value: &dyn Fn(&crate::discovery::SourceStatus) -> f64| {
        family(
            f,
            statuses
                .iter()
                .map(|s| metric(f, vec![label("source", &s.name)], value(s)))
                .collect(),
        )
    };
    let mut skipped = Vec::new();
    for s in statuses {
        for (reason, n) in [("duplicate", s.duplicates), ("rejected", s.rejected)] {
            skipped.push(metric(
                &DISCOVERY_SKIPPED,
                vec![label("source", &s.name), label("reason", reason)],
                n as f64,
            ));
        }
    }
    vec![
        per(&DISCOVERY_TARGETS, &|s| s.targets as f64),
        per(&DISCOVERY_OK, &|s| if s.successful { 1.0 } else { 0.0 }),
        per(&DISCOVERY_TIME, &|s| {
            s.last_refresh.map_or(0.0, unix_seconds)
        }),
        per(&DISCOVERY_FAILURES, &|s| s.failures_total as f64),
        family(&DISCOVERY_SKIPPED, skipped),
    ]
}

/// Text a piece of `/metrics` holds, roughly: small enough that a client that stops reading
/// pins little memory and that rendering one takes well under a millisecond, large enough that
/// a scrape of 100,000 services is a few thousand pieces.
const PIECE_BYTES: usize = 32 * 1024;

/// `/metrics` being rendered: the per-service families one after the other, each over every
/// service, then the daemon's own families.
struct Exposition {
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    /// Who is in maintenance, as of the scrape's start.
    maintenance: crate::maintenance::View,
    /// Index in [`PER_SERVICE`], then [`CHECKS`] at `PER_SERVICE.len()`, then the daemon's
    /// families; past that, done.
    family: usize,
    /// Next service of the family.
    service: usize,
    /// Whether the family's `# HELP` and `# TYPE` lines are out: written with its first series,
    /// so a family no service has is left out (the text format has no empty families).
    header_written: bool,
}

impl Iterator for Exposition {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        const CHECKS_AT: usize = PER_SERVICE.len();
        if self.family > CHECKS_AT + 1 {
            return None;
        }
        let mut out = Vec::with_capacity(PIECE_BYTES + 4096);
        let services = &self.snapshot.services;
        while out.len() < PIECE_BYTES {
            if self.family == CHECKS_AT + 1 {
                out.extend_from_slice(&self.metrics.daemon_text(&self.snapshot));
                self.family += 1;
                break;
            }
            let Some(status) = services.get(self.service) else {
                self.family += 1;
                self.service = 0;
                self.header_written = false;
                continue;
            };
            self.service += 1;
            if self.family == CHECKS_AT {
                write_checks(&mut out, status, &mut self.header_written);
            } else {
                let (f, sample) = &PER_SERVICE[self.family];
                let extra = Extra {
                    blocked: !self.snapshot.blocked.of(self.service - 1).is_empty(),
                    maintenance: self.maintenance.of(self.service - 1).map(|w| w.is_some()),
                };
                if let Some(s) = sample(status, extra) {
                    write_header(&mut out, f, &mut self.header_written);
                    if f.name == GRPC_HEALTH.name {
                        // As blackbox_exporter: a series per serving status, 1 for the one
                        // received, so `== 0` and `== 1` both mean something.
                        let received = s.label.map(|(_, v)| v);
                        for status_name in labels::SERVING_STATUSES {
                            write_series(
                                &mut out,
                                f.name,
                                &status.service.series_labels,
                                Some((labels::SERVING_STATUS, status_name)),
                                if received == Some(status_name) {
                                    1.0
                                } else {
                                    0.0
                                },
                            );
                        }
                        continue;
                    }
                    write_series(
                        &mut out,
                        f.name,
                        &status.service.series_labels,
                        s.label,
                        s.value,
                    );
                }
            }
        }
        Some(Bytes::from(out))
    }
}

/// `# HELP` and `# TYPE` of `f`, unless written already.
fn write_header(out: &mut Vec<u8>, f: &Family, written: &mut bool) {
    if std::mem::replace(written, true) {
        return;
    }
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(f.name.as_bytes());
    out.push(b' ');
    for c in f.help.bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(f.name.as_bytes());
    out.extend_from_slice(if f.kind == MetricType::COUNTER {
        b" counter\n"
    } else {
        b" gauge\n"
    });
}

/// One sample line: `name{labels,extra="value"} value`.
fn write_series(
    out: &mut Vec<u8>,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'{');
    out.extend_from_slice(labels.as_bytes());
    if let Some((k, v)) = extra {
        // Our own label values (reasons, results) are snake_case: nothing to escape.
        out.push(b',');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    write_value(out, value);
    out.push(b'\n');
}

/// A sample's value, as the Prometheus text encoder writes it (Rust's shortest `f64` form).
/// Most per-service values are whole numbers (0/1 gauges, status codes, counts): those take
/// `itoa`, which writes the same digits without the formatting machinery; the rest `Display`.
fn write_value(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    // Whole values below 2^53, where the integers f64 holds are still every integer (a bound
    // well inside i64), are shown by `Display` as plain digits without a fraction; -0.0
    // (shown "-0"), NaN (its fract is NaN) and infinities fall through.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() < EXACT && !(value == 0.0 && value.is_sign_negative()) {
        // Whole and in range by the check above, so the cast is exact.
        let whole = value as i64;
        out.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{value}");
    }
}

/// `healthsweep_checks_total{result}` for one service: `ok` once it has been checked, and each
/// failure reason that happened at least once.
fn write_checks(out: &mut Vec<u8>, status: &ServiceStatus, header_written: &mut bool) {
    if status.last.is_none() {
        return;
    }
    write_header(out, &CHECKS, header_written);
    let results = std::iter::once(("ok", status.counts.ok))
        .chain(status.counts.failures().map(|(r, n)| (r.as_str(), n)));
    for (result, n) in results {
        write_series(
            out,
            CHECKS.name,
            &status.service.series_labels,
            Some((labels::RESULT, result)),
            f64::from(n),
        );
    }
}

fn encode(encoder: &TextEncoder, families: &[MetricFamily], out: &mut Vec<u8>) {
    encoder
        .encode(families, out)
        .expect("families are well formed and a Vec cannot fail to grow");
}

fn build_info() -> IntGauge {
    let opts = Opts::new(
        "healthsweep_build_info",
        "Always 1; the labels say which build is running.",
    )
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label("revision", env!("HEALTHSWEEP_REVISION"));
    let g = IntGauge::with_opts(opts).expect("build info options are valid");
    g.set(1);
    g
}

/// `healthsweep_tokio_tasks`: tasks alive in the runtime, read at scrape time. Flat over time
/// when nothing leaks (the soak watches it); it rises with a sweep in flight and open
/// connections, and falls back after.
struct TaskCollector {
    runtime: tokio::runtime::Handle,
    gauge: IntGauge,
}

impl TaskCollector {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        let gauge = IntGauge::new(
            "healthsweep_tokio_tasks",
            "Tasks alive in the daemon's async runtime.",
        )
        .expect("the task gauge's name and help are valid");
        TaskCollector { runtime, gauge }
    }
}

impl Collector for TaskCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let alive = self.runtime.metrics().num_alive_tasks();
        self.gauge.set(i64::try_from(alive).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

fn family(f: &Family, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(f.name.into());
    mf.set_help(f.help.into());
    mf.set_field_type(f.kind);
    mf.set_metric(metrics);
    mf
}

fn metric(f: &Family, labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut m = Metric::from_label(labels);
    if f.kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn daemon_families(snapshot: &Snapshot, reload: &ReloadStatus) -> Vec<MetricFamily> {
    let one = |f: &Family, value: f64| family(f, vec![metric(f, Vec::new(), value)]);
    let mut out = vec![
        one(&SWEEPS, snapshot.sweeps_total as f64),
        one(&DEADLINE_EXCEEDED, snapshot.deadline_exceeded_total as f64),
    ];
    if let Some(sweep) = &snapshot.last_sweep {
        out.push(one(&LAST_SWEEP_DURATION, sweep.duration.as_secs_f64()));
        out.push(one(
            &LAST_SWEEP_TIMESTAMP,
            unix_seconds(crate::timestamp::saturating_add(
                sweep.started_at,
                sweep.duration,
            )),
        ));
        out.push(one(
            &LAST_SWEEP_DEADLINE_EXCEEDED,
            sweep.deadline_exceeded as f64,
        ));
        out.push(one(&LAST_SWEEP_NOT_STARTED, sweep.not_started as f64));
        out.push(one(&LAST_SWEEP_CUT_SHORT, sweep.cut_short as f64));
        out.push(one(&LAST_SWEEP_REUSED, sweep.reused_connections as f64));
        out.push(one(&MAX_IN_FLIGHT, sweep.max_in_flight as f64));
    }
    let daemon = &snapshot.config.daemon;
    out.push(one(&SWEEP_INTERVAL, daemon.interval.as_secs_f64()));
    out.push(one(&SWEEP_DEADLINE, daemon.deadline.as_secs_f64()));
    out.push(family(
        &TARGETS,
        State::ALL
            .iter()
            .map(|&st| {
                metric(
                    &TARGETS,
                    vec![label("state", st.as_str())],
                    snapshot.count(st) as f64,
                )
            })
            .collect(),
    ));
    out.push(one(&RELOAD_OK, if reload.successful { 1.0 } else { 0.0 }));
    out.push(one(&RELOAD_TIME, unix_seconds(reload.last_success)));
    out.push(one(&GENERATION, snapshot.generation as f64));
    let shard = daemon.shard;
    out.push(family(
        &SHARD_INFO,
        vec![metric(
            &SHARD_INFO,
            vec![
                label("index", &shard.index().to_string()),
                label("count", &shard.count().to_string()),
            ],
            1.0,
        )],
    ));
    out
}

fn unix_seconds(t: SystemTime) -> f64 {
    crate::timestamp::UnixTime::from_system(t).as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_prometheus_encoder_writes_them() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            200.0,
            503.0,
            1_733_280_000.0,
            1_733_280_000.25,
            0.000364,
            1e-7,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            1e300,
            -2.5,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
        ];
        for v in values {
            let mut out = Vec::new();
            write_value(&mut out, v);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                format!("{v}"),
                "{v:?}"
            );
        }
        for (v, shown) in [(f64::INFINITY, "+Inf"), (f64::NEG_INFINITY, "-Inf")] {
            let mut out = Vec::new();
            write_value(&mut out, v);
            assert_eq!(out, shown.as_bytes());
        }
    }

    #[test]
    fn family_names_are_valid_and_documented() {
        let names = PER_SERVICE.iter().map(|(f, _)| f).chain([
            &SWEEPS,
            &DEADLINE_EXCEEDED,
            &LAST_SWEEP_DURATION,
            &LAST_SWEEP_TIMESTAMP,
            &LAST_SWEEP_DEADLINE_EXCEEDED,
            &LAST_SWEEP_NOT_STARTED,
            &LAST_SWEEP_CUT_SHORT,
            &LAST_SWEEP_REUSED,
            &MAX_IN_FLIGHT,
            &SWEEP_INTERVAL,
            &SWEEP_DEADLINE,
            &TARGETS,
            &RELOAD_OK,
            &RELOAD_TIME,
            &GENERATION,
            &DISCOVERY_TARGETS,
            &DISCOVERY_OK,
            &DISCOVERY_TIME,
            &DISCOVERY_FAILURES,
            &DISCOVERY_SKIPPED,
        ]);
        let reference = include_str!("../docs/operating.md");
        for f in names {
            let valid = f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            assert!(valid && !f.help.is_empty(), "{}", f.name);
            assert!(
                reference.contains(f.name),
                "{} is not in docs/operating.md",
                f.name
            );
            assert_eq!(
                f.kind == MetricType::COUNTER,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
        }
    }

    /// A fleet larger than a chunk, half of it failing (so `reason` and several `result`
    /// series appear), with a label value that needs escaping.
    fn swept_fleet(n: usize) -> Snapshot {
        use crate::probe::{Outcome, Reason};
        use crate::snapshot::SweepReport;
        use std::time::Duration;
        let src: String = (0..n)
            .map(|i| {
                format!(
                    "[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1:9/{i}\"\n\
                     labels = {{ note = 'a \"quoted\" \\ value' }}\n"
                )
            })
            .collect();
        let config = Arc::new(
            crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid config"),
        );
        let loaded = crate::config::Loaded {
            generation: 1,
            config: config.clone(),
        };
        let outcomes: Vec<_> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    Outcome {
                        http_status: Some(200),
                        ..Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(7))
                    }
                } else {
                    Outcome::failed(
                        Reason::HttpStatus,
                        SystemTime::UNIX_EPOCH,
                        Duration::from_millis(9),
                        "status 500",
                    )
                }
            })
            .collect();
        let report = SweepReport {
            slot: 0,
            config,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(10),
            outcomes: outcomes.into_iter().map(Some).collect(),
            max_in_flight: 10,
            not_started: 0,
            cut_short: 0,
            judged: Vec::new(),
            idle_connections: 0,
        };
        Snapshot::new(&loaded, SystemTime::UNIX_EPOCH)
            .swept(report)
            .0
    }

    fn metrics_of(snapshot: Snapshot) -> Arc<Metrics> {
        let (_tx, snapshots) = watch::channel(Arc::new(snapshot));
        let (_rtx, reloads) = watch::channel(ReloadStatus {
            successful: true,
            last_success: SystemTime::UNIX_EPOCH,
            last_error: None,
        });
        Arc::new(Metrics::new(snapshots, reloads).with_maintenance(Default::default()))
    }

    /// The lines of family `name` in `text`, its header included.
    fn section<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix("# HELP ")
                    .or_else(|| l.strip_prefix("# TYPE "))
                    .unwrap_or(l)
                    .split(['{', ' '])
                    .next()
                    == Some(name)
            })
            .collect()
    }

    /// The prometheus crate's own encoding of what our encoder writes for `f`: the reference.
    fn reference(f: &Family, series: Vec<Metric>) -> String {
        let mut out = Vec::new();
        encode(&TextEncoder::new(), &[family(f, series)], &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    fn pairs(status: &ServiceStatus) -> Vec<LabelPair> {
        let s = &status.service;
        let mut v = vec![label("target", &s.name)];
        v.extend(s.extra.group.as_deref().map(|g| label("group", g)));
        v.extend(s.labels.iter().map(|(k, n)| label(k, n)));
        v
    }

    #[test]
    fn streamed_families_encode_exactly_as_the_prometheus_encoder_would() {
        let n = 2000;
        let snapshot = swept_fleet(n);
        let mut failures = Vec::new();
        let mut checks = Vec::new();
        for st in &snapshot.services {
            let o = st.last.as_ref().expect("swept");
            if let Some(r) = o.reason {
                let mut p = pairs(st);
                p.push(label("reason", r.as_str()));
                failures.push(metric(&FAILURE_REASON, p, 1.0));
            }
            let mut p = pairs(st);
            p.push(label("result", "ok"));
            checks.push(metric(&CHECKS, p, f64::from(st.counts.ok)));
            for (r, c) in st.counts.failures() {
                let mut p = pairs(st);
                p.push(label("result", r.as_str()));
                checks.push(metric(&CHECKS, p, f64::from(c)));
            }
        }
        let text = String::from_utf8(metrics_of(snapshot).render()).expect("UTF-8");
        for (f, series) in [(&FAILURE_REASON, failures), (&CHECKS, checks)] {
            let mine = section(&text, f.name).join("\n") + "\n";
            assert_eq!(mine, reference(f, series), "{}", f.name);
        }
        assert_eq!(text.matches("# TYPE healthsweep_checks_total").count(), 1);
        let lines = text
            .lines()
            .filter(|l| l.starts_with("healthsweep_checks_total{"));
        assert_eq!(lines.count(), n + n / 2);
        assert!(
            text.contains(r#"note="a \"quoted\" \\ value""#),
            "{}",
            &text[..400]
        );
    }

    #[test]
    fn a_large_fleet_is_rendered_in_bounded_pieces() {
        let metrics = metrics_of(swept_fleet(5000));
        let pieces: Vec<Bytes> = metrics.pieces().collect();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        for p in &pieces {
            assert!(p.len() < PIECE_BYTES + 8192, "a piece of {} bytes", p.len());
        }
    }

    #[test]
    fn a_family_no_service_has_is_left_out() {
        let text = String::from_utf8(metrics_of(swept_fleet(3)).render()).expect("UTF-8");
        assert!(!text.contains("probe_ssl_earliest_cert_expiry"), "{text}");
        assert!(text.contains("# TYPE probe_success gauge"));
    }

    /// Every label a per-service series carries is one the daemon names in
    /// [`crate::labels::RESERVED`] or one of the service's own: a metric that adds a label not
    /// reserved there would let a configured label of that name duplicate it, and Prometheus
    /// rejects a scrape with a duplicate label.
    #[test]
    fn every_label_on_a_per_service_series_is_reserved_or_the_services_own() {
        use crate::probe::{Outcome, Reason, TlsFacts};
        use crate::snapshot::SweepReport;
        use crate::timestamp::UnixTime;
        use std::time::Duration;
        let src = "[[service]]\nname = \"a\"\nurl = \"https://127.0.0.1:9/\"\ngroup = \"g\"\n\
                   labels = { own = \"x\" }\n\
                   depends_on = [\"b\"]\n\
                   [[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:9/\"\n\
                   interval = \"30s\"\n\
                   [[service]]\nname = \"c\"\nurl = \"grpcs://127.0.0.1:9\"\n\
                   [[maintenance]]\nname = \"always\"\ntargets = { names = [\"a\"] }\n\
                   start = \"00:00\"\nduration = \"1d\"\n";
        let config =
            Arc::new(crate::config::parse(std::path::Path::new("t.toml"), src).expect("valid"));
        let loaded = crate::config::Loaded {
            generation: 1,
            config: config.clone(),
        };
        let tls = Some(Arc::new(TlsFacts {
            earliest_expiry: UnixTime::from_secs(-5),
            leaf_expiry: UnixTime::from_secs(10),
        }));
        let passed = Outcome {
            http_status: Some(200),
            http_version: Some(crate::probe::HttpVersion::Http2),
            tls,
            // Not what an HTTPS check reports, but every per-service family must render.
            dns: Some(Arc::new(crate::probe::DnsFacts {
                rcode: "NOERROR",
                answer_rrs: 1,
                answers: vec!["10.0.0.1".into()],
                lookup: Duration::from_millis(2),
                tcp: false,
            })),
            ..Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(7))
        };
        let grpc = Outcome {
            grpc: Some(Arc::new(crate::probe::GrpcFacts {
                status_code: 0,
                serving_status: Some(1),
                message: None,
            })),
            ..Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(3))
        };
        let failed = Outcome::failed(
            Reason::HttpStatus,
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(9),
            "status 500",
        );
        let mut snapshot = Snapshot::new(&loaded, SystemTime::UNIX_EPOCH);
        for outcomes in [
            vec![failed.clone(), passed.clone(), grpc.clone()],
            vec![passed, failed, grpc],
        ] {
            let report = SweepReport {
                slot: 0,
                config: config.clone(),
                started_at: SystemTime::UNIX_EPOCH,
                duration: Duration::from_millis(10),
                outcomes: outcomes.into_iter().map(Some).collect(),
                max_in_flight: 10,
                not_started: 0,
                cut_short: 0,
                judged: Vec::new(),
                idle_connections: 0,
            };
            snapshot = snapshot.swept(report).0;
        }
        let text = String::from_utf8(metrics_of(snapshot).render()).expect("UTF-8");
        let mut families = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.contains("target=\"")) {
            let (name, rest) = line.split_once('{').expect("labels");
            families.insert(name.to_string());
            let labels = rest.rsplit_once('}').expect("closed").0;
            let mut names = Vec::new();
            for pair in labels.split("\",") {
                let name = pair.split_once('=').expect("name=value").0;
                assert!(
                    crate::labels::is_reserved(name) || name == "own",
                    "{name} on {line} is not reserved"
                );
                assert!(!names.contains(&name), "{name} twice on {line}");
                names.push(name);
            }
        }
        let per_service: Vec<&str> = PER_SERVICE
            .iter()
            .map(|(f, _)| f.name)
            .chain([CHECKS.name])
            .collect();
        for name in per_service {
            assert!(families.contains(name), "{name} was not rendered: {text}");
        }
    }
}
