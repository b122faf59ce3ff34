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

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::watch;

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
const TARGET_DEGRADED: Family = gauge(
    "healthsweep_target_degraded",
    "1 while the target is up but slower than its max_latency; absent while unknown.",
);
const SSL_EXPIRY: Family = gauge(
    "probe_ssl_earliest_cert_expiry",
    "Earliest notAfter in the certificate chain the target presented, in seconds since the Unix epoch.",
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
    "Checks of the latest sweep that never started: every slot was busy until the deadline.",
);
const LAST_SWEEP_REUSED: Family = gauge(
    "healthsweep_last_sweep_connections_reused",
    "Checks of the latest sweep that ran on a connection kept from an earlier sweep.",
);
const IDLE_CONNECTIONS: Family = gauge(
    "healthsweep_idle_connections",
    "Connections kept open now for reuse by the next checks.",
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

/// One per-service value: the number, and the `reason` label for the failure-reason family.
struct Sample {
    value: f64,
    reason: Option<&'static str>,
}

impl Sample {
    fn of(value: f64) -> Option<Sample> {
        Some(Sample {
            value,
            reason: None,
        })
    }
}

/// Each per-service family, with how to get its value from a service's status (`None`: no
/// series for that service).
type PerService = (Family, fn(&ServiceStatus) -> Option<Sample>);

const PER_SERVICE: [PerService; 9] = [
    (PROBE_SUCCESS, |s| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(if o.ok() { 1.0 } else { 0.0 }))
    }),
    (PROBE_DURATION, |s| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(o.duration.as_secs_f64()))
    }),
    (PROBE_HTTP_STATUS, |s| {
        s.last
            .as_ref()
            .and_then(|o| Sample::of(f64::from(o.http_status.unwrap_or(0))))
    }),
    (FAILURE_REASON, |s| {
        s.last.as_ref().and_then(|o| o.reason).map(|r| Sample {
            value: 1.0,
            reason: Some(r.as_str()),
        })
    }),
    (CONSECUTIVE_FAILURES, |s| {
        Sample::of(f64::from(s.consecutive_failures))
    }),
    (TARGET_UP, |s| match s.state {
        State::Up | State::Degraded => Sample::of(1.0),
        State::Down => Sample::of(0.0),
        State::Unknown => None,
    }),
    (TARGET_DEGRADED, |s| match s.state {
        State::Degraded => Sample::of(1.0),
        State::Up | State::Down => Sample::of(0.0),
        State::Unknown => None,
    }),
    (SSL_EXPIRY, |s| {
        let tls = s.last.as_ref()?.tls.as_ref()?;
        Sample::of(unix_seconds(tls.earliest_expiry))
    }),
    (HTTP_VERSION, |s| {
        Sample::of(s.last.as_ref()?.http_version?.as_f64())
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
        }
    }

    /// Also report the prober's idle connections (`healthsweep_idle_connections`).
    pub fn with_idle_connections(mut self, gauge: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        self.idle_connections = Some(gauge);
        self
    }

    /// The text exposition of every metric, all from one snapshot.
    pub fn render(&self) -> Vec<u8> {
        // Clone the Arc and let go at once: the sweeper is never held up by a scrape.
        let snapshot = self.snapshots.borrow().clone();
        let reload = self.reloads.borrow().clone();
        let encoder = TextEncoder::new();
        // Reserving more than the ~400 bytes a service takes costs nothing resident (untouched
        // pages) and spares copying tens of megabytes as the buffer grows.
        let mut out = Vec::with_capacity(4096 + snapshot.services.len() * 512);
        let mut chunked = Chunked::new(&encoder);
        for (family, sample) in &PER_SERVICE {
            chunked.family(family, &snapshot, &mut out, |status, metrics| {
                series_of(family, *sample, status, metrics)
            });
        }
        chunked.family(&CHECKS, &snapshot, &mut out, checks_of);
        let mut daemon = daemon_families(&snapshot, &reload);
        if let Some(idle) = &self.idle_connections {
            let value = idle.load(std::sync::atomic::Ordering::Relaxed) as f64;
            daemon.push(family(
                &IDLE_CONNECTIONS,
                vec![metric(&IDLE_CONNECTIONS, Vec::new(), value)],
            ));
        }
        encode(&encoder, &daemon, &mut out);
        encode(&encoder, &self.registry.gather(), &mut out);
        out
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

/// Services encoded per `MetricFamily`: the family's protobuf form takes ~650 bytes a series,
/// which at 100,000 services would be 65 MB held for one family; a chunk keeps it under 1 MB.
const CHUNK: usize = 1024;

/// Encodes per-service families a chunk of services at a time, with the `# HELP` and `# TYPE`
/// lines once per family as the text format requires.
struct Chunked<'e> {
    encoder: &'e TextEncoder,
    metrics: Vec<Metric>,
    /// Where a chunk after the first is encoded, to drop its repeated header.
    scratch: Vec<u8>,
}

impl<'e> Chunked<'e> {
    fn new(encoder: &'e TextEncoder) -> Self {
        Chunked {
            encoder,
            metrics: Vec::with_capacity(CHUNK),
            scratch: Vec::new(),
        }
    }

    /// Appends family `f`: the series `series` gives for each service, in snapshot order.
    /// Nothing at all when no service has a series (the text format has no empty families).
    fn family(
        &mut self,
        f: &Family,
        snapshot: &Snapshot,
        out: &mut Vec<u8>,
        mut series: impl FnMut(&ServiceStatus, &mut Vec<Metric>),
    ) {
        let mut header_written = false;
        for chunk in snapshot.services.chunks(CHUNK) {
            for status in chunk {
                series(status, &mut self.metrics);
            }
            if self.metrics.is_empty() {
                continue;
            }
            let mut mf = family(f, std::mem::take(&mut self.metrics));
            if header_written {
                self.scratch.clear();
                encode(self.encoder, std::slice::from_ref(&mf), &mut self.scratch);
                out.extend_from_slice(without_header(&self.scratch));
            } else {
                encode(self.encoder, std::slice::from_ref(&mf), out);
                header_written = true;
            }
            // Hand the allocation back for the next chunk.
            self.metrics = mf.take_metric();
            self.metrics.clear();
        }
    }
}

/// A family's encoding without its first two lines: `# HELP` and `# TYPE`, which the encoder
/// always writes first (help text has its newlines escaped, so each is exactly one line).
fn without_header(encoded: &[u8]) -> &[u8] {
    debug_assert!(encoded.starts_with(b"# HELP "));
    let mut rest = encoded;
    for _ in 0..2 {
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => rest = &rest[end + 1..],
            None => return &[],
        }
    }
    rest
}

/// A per-service family's series for one service, if `sample` gives it one.
fn series_of(
    family: &Family,
    sample: fn(&ServiceStatus) -> Option<Sample>,
    status: &ServiceStatus,
    metrics: &mut Vec<Metric>,
) {
    if let Some(s) = sample(status) {
        let mut labels = target_labels(status);
        labels.extend(s.reason.map(|r| label("reason", r)));
        metrics.push(metric(family, labels, s.value));
    }
}

/// `healthsweep_checks_total{result}` for one service: `ok` once it has been checked, and each
/// failure reason that happened at least once.
fn checks_of(status: &ServiceStatus, metrics: &mut Vec<Metric>) {
    if status.last.is_none() {
        return;
    }
    let results = std::iter::once(("ok", status.counts.ok))
        .chain(status.counts.failures().map(|(r, n)| (r.as_str(), n)));
    for (result, n) in results {
        let mut labels = target_labels(status);
        labels.push(label("result", result));
        metrics.push(metric(&CHECKS, labels, f64::from(n)));
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

/// `target`, `group` (when set) and the service's own labels.
fn target_labels(status: &ServiceStatus) -> Vec<LabelPair> {
    let s = &status.service;
    let mut labels = Vec::with_capacity(3 + s.labels.len());
    labels.push(label("target", &s.name));
    if let Some(g) = &s.group {
        labels.push(label("group", g));
    }
    labels.extend(s.labels.iter().map(|(k, v)| label(k, v)));
    labels
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
            unix_seconds(sweep.started_at + sweep.duration),
        ));
        out.push(one(
            &LAST_SWEEP_DEADLINE_EXCEEDED,
            sweep.deadline_exceeded as f64,
        ));
        out.push(one(&LAST_SWEEP_NOT_STARTED, sweep.not_started as f64));
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
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_valid_and_documented() {
        let names = PER_SERVICE.iter().map(|(f, _)| f).chain([
            &SWEEPS,
            &DEADLINE_EXCEEDED,
            &LAST_SWEEP_DURATION,
            &LAST_SWEEP_TIMESTAMP,
            &LAST_SWEEP_DEADLINE_EXCEEDED,
            &LAST_SWEEP_NOT_STARTED,
            &LAST_SWEEP_REUSED,
            &MAX_IN_FLIGHT,
            &SWEEP_INTERVAL,
            &SWEEP_DEADLINE,
            &TARGETS,
            &RELOAD_OK,
            &RELOAD_TIME,
            &GENERATION,
        ]);
        let readme = include_str!("../README.md");
        for f in names {
            let valid = f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            assert!(valid && !f.help.is_empty(), "{}", f.name);
            assert!(readme.contains(f.name), "{} is not in the README", f.name);
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
        let outcomes = (0..n)
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
            config,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(10),
            outcomes,
            max_in_flight: 10,
            not_started: 0,
            idle_connections: 0,
        };
        Snapshot::new(&loaded, SystemTime::UNIX_EPOCH)
            .swept(report)
            .0
    }

    #[test]
    fn chunked_families_encode_exactly_as_one_family_would() {
        let n = 2 * CHUNK + 17;
        let snapshot = swept_fleet(n);
        let encoder = TextEncoder::new();
        let (failure_family, failure_sample) = &PER_SERVICE[3];
        assert_eq!(failure_family.name, "healthsweep_probe_failure_reason");
        let failure_series = |status: &ServiceStatus, metrics: &mut Vec<Metric>| {
            series_of(failure_family, *failure_sample, status, metrics)
        };
        let mut chunked = Chunked::new(&encoder);
        let mut out = Vec::new();
        chunked.family(&CHECKS, &snapshot, &mut out, checks_of);
        chunked.family(failure_family, &snapshot, &mut out, failure_series);

        // The reference: each family as one MetricFamily, as the encoder would do it.
        let mut all_checks = Vec::new();
        let mut failures = Vec::new();
        for status in snapshot.services.iter() {
            checks_of(status, &mut all_checks);
            failure_series(status, &mut failures);
        }
        let mut reference = Vec::new();
        encode(&encoder, &[family(&CHECKS, all_checks)], &mut reference);
        encode(
            &encoder,
            &[family(failure_family, failures)],
            &mut reference,
        );

        let text = String::from_utf8(out).expect("the exposition is UTF-8");
        assert_eq!(text, String::from_utf8(reference).expect("UTF-8"));
        assert_eq!(text.matches("# TYPE healthsweep_checks_total").count(), 1);
        assert_eq!(
            text.matches("# HELP healthsweep_probe_failure_reason")
                .count(),
            1
        );
        // Every service has an ok count; the failing half a second series.
        let checks = text
            .lines()
            .filter(|l| l.starts_with("healthsweep_checks_total{"));
        assert_eq!(checks.count(), n + n / 2);
        assert!(
            text.contains(r#"note="a \"quoted\" \\ value""#),
            "{}",
            &text[..400]
        );
    }

    #[test]
    fn a_family_no_service_has_is_left_out() {
        let snapshot = swept_fleet(3);
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        Chunked::new(&encoder).family(&SSL_EXPIRY, &snapshot, &mut out, |_, _| {});
        assert!(out.is_empty());
    }
}
