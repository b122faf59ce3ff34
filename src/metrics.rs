//! `/metrics`: the Prometheus exposition, rendered at scrape time from the latest [`Snapshot`].
//!
//! Per-service series are a *view* of the snapshot (the Collector pattern), not metrics kept up
//! to date by hand, so a service removed by a reload has no series left at the next scrape.
//! They are built as the prometheus crate's `MetricFamily` and encoded by its `TextEncoder`, but
//! one family at a time rather than through `Collector::collect`, which must materialize every
//! family at once: at 10,000 services that cost 13 MB per scrape, during a sweep.
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
        let mut out = Vec::with_capacity(1024 + snapshot.services.len() * 256);
        for (family, sample) in &PER_SERVICE {
            let mf = per_service_family(family, *sample, &snapshot);
            if !mf.get_metric().is_empty() {
                encode(&encoder, &[mf], &mut out);
            }
        }
        let checks = checks_family(&snapshot);
        if !checks.get_metric().is_empty() {
            encode(&encoder, &[checks], &mut out);
        }
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

fn per_service_family(
    f: &Family,
    sample: fn(&ServiceStatus) -> Option<Sample>,
    snapshot: &Snapshot,
) -> MetricFamily {
    let metrics = snapshot
        .services
        .iter()
        .filter_map(|status| {
            let s = sample(status)?;
            let mut labels = target_labels(status);
            if let Some(reason) = s.reason {
                labels.push(label("reason", reason));
            }
            Some(metric(f, labels, s.value))
        })
        .collect();
    family(f, metrics)
}

/// `healthsweep_checks_total{result}`: `ok` for every checked service, and each failure reason
/// that happened at least once.
fn checks_family(snapshot: &Snapshot) -> MetricFamily {
    let mut metrics = Vec::new();
    for status in snapshot.services.iter().filter(|s| s.last.is_some()) {
        let results = std::iter::once(("ok", status.counts.ok))
            .chain(status.counts.failures().map(|(r, n)| (r.as_str(), n)));
        for (result, n) in results {
            let mut labels = target_labels(status);
            labels.push(label("result", result));
            metrics.push(metric(&CHECKS, labels, f64::from(n)));
        }
    }
    family(&CHECKS, metrics)
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
}
