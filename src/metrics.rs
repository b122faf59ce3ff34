//! `/metrics`: the Prometheus exposition, rendered at scrape time from the latest [`Snapshot`].
//!
//! Per-service series are a *view* of the snapshot (a custom [`Collector`]), not metrics kept
//! up to date by hand, so a service removed by a reload has no series left at the next scrape.
//! Metric names follow blackbox_exporter where they mean the same thing (`probe_success`,
//! `probe_duration_seconds`, `probe_http_status_code`) so dashboards and alerts carry over; the
//! daemon's own are `healthsweep_*`. Everything lives in a registry the daemon owns.

use std::collections::HashMap;
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
    "The target's state: 1 up, 0 down; absent while unknown (not checked yet).",
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

const FAMILIES: &[Family] = &[
    PROBE_SUCCESS,
    PROBE_DURATION,
    PROBE_HTTP_STATUS,
    FAILURE_REASON,
    CONSECUTIVE_FAILURES,
    TARGET_UP,
    SWEEPS,
    DEADLINE_EXCEEDED,
    LAST_SWEEP_DURATION,
    LAST_SWEEP_TIMESTAMP,
    LAST_SWEEP_DEADLINE_EXCEEDED,
    SWEEP_INTERVAL,
    SWEEP_DEADLINE,
    TARGETS,
    RELOAD_OK,
    RELOAD_TIME,
    GENERATION,
];

/// The daemon's registry: the snapshot collector, build info and process metrics.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        reloads: watch::Receiver<ReloadStatus>,
    ) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(SnapshotCollector::new(snapshots, reloads)))
            .expect("snapshot collector descriptors are valid and registered once");
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
        Metrics { registry }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
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

/// Renders the latest snapshot and reload status as metric families.
struct SnapshotCollector {
    descs: Vec<Desc>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    reloads: watch::Receiver<ReloadStatus>,
}

impl SnapshotCollector {
    fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        reloads: watch::Receiver<ReloadStatus>,
    ) -> Self {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(f.name.into(), f.help.into(), Vec::new(), HashMap::new())
                    .expect("family names and help are valid")
            })
            .collect();
        SnapshotCollector {
            descs,
            snapshots,
            reloads,
        }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Clone the Arc and let go at once: the sweeper is never held up by a scrape.
        let snapshot = self.snapshots.borrow().clone();
        let reload = self.reloads.borrow().clone();
        let mut out = Families::default();
        for status in &snapshot.services {
            service_metrics(&mut out, status);
        }
        daemon_metrics(&mut out, &snapshot, &reload);
        out.into_families()
    }
}

/// Metrics by family, in [`FAMILIES`] order.
#[derive(Default)]
struct Families {
    metrics: HashMap<&'static str, Vec<Metric>>,
}

impl Families {
    fn push(&mut self, family: &Family, labels: Vec<LabelPair>, value: f64) {
        let mut m = Metric::from_label(labels);
        if family.kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.metrics.entry(family.name).or_default().push(m);
    }

    fn into_families(mut self) -> Vec<MetricFamily> {
        FAMILIES
            .iter()
            .filter_map(|f| {
                let metrics = self.metrics.remove(f.name)?;
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.into());
                mf.set_help(f.help.into());
                mf.set_field_type(f.kind);
                mf.set_metric(metrics);
                Some(mf)
            })
            .collect()
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
    let mut labels = Vec::with_capacity(2 + s.labels.len());
    labels.push(label("target", &s.name));
    if let Some(g) = &s.group {
        labels.push(label("group", g));
    }
    labels.extend(s.labels.iter().map(|(k, v)| label(k, v)));
    labels
}

fn service_metrics(out: &mut Families, status: &ServiceStatus) {
    let labels = target_labels(status);
    out.push(
        &CONSECUTIVE_FAILURES,
        labels.clone(),
        f64::from(status.consecutive_failures),
    );
    match status.state {
        State::Up => out.push(&TARGET_UP, labels.clone(), 1.0),
        State::Down => out.push(&TARGET_UP, labels.clone(), 0.0),
        State::Unknown => {}
    }
    let Some(last) = &status.last else {
        return;
    };
    out.push(&PROBE_DURATION, labels.clone(), last.duration.as_secs_f64());
    out.push(
        &PROBE_HTTP_STATUS,
        labels.clone(),
        f64::from(last.http_status.unwrap_or(0)),
    );
    if let Some(reason) = last.reason {
        let mut with_reason = labels.clone();
        with_reason.push(label("reason", reason.as_str()));
        out.push(&FAILURE_REASON, with_reason, 1.0);
    }
    out.push(&PROBE_SUCCESS, labels, if last.ok() { 1.0 } else { 0.0 });
}

fn daemon_metrics(out: &mut Families, snapshot: &Snapshot, reload: &ReloadStatus) {
    out.push(&SWEEPS, Vec::new(), snapshot.sweeps_total as f64);
    out.push(
        &DEADLINE_EXCEEDED,
        Vec::new(),
        snapshot.deadline_exceeded_total as f64,
    );
    if let Some(sweep) = &snapshot.last_sweep {
        out.push(
            &LAST_SWEEP_DURATION,
            Vec::new(),
            sweep.duration.as_secs_f64(),
        );
        out.push(
            &LAST_SWEEP_TIMESTAMP,
            Vec::new(),
            unix_seconds(sweep.started_at + sweep.duration),
        );
        out.push(
            &LAST_SWEEP_DEADLINE_EXCEEDED,
            Vec::new(),
            sweep.deadline_exceeded as f64,
        );
    }
    let daemon = &snapshot.config.daemon;
    out.push(&SWEEP_INTERVAL, Vec::new(), daemon.interval.as_secs_f64());
    out.push(&SWEEP_DEADLINE, Vec::new(), daemon.deadline.as_secs_f64());
    for state in State::ALL {
        out.push(
            &TARGETS,
            vec![label("state", state.as_str())],
            snapshot.count(state) as f64,
        );
    }
    out.push(
        &RELOAD_OK,
        Vec::new(),
        if reload.successful { 1.0 } else { 0.0 },
    );
    out.push(&RELOAD_TIME, Vec::new(), unix_seconds(reload.last_success));
    out.push(&GENERATION, Vec::new(), snapshot.generation as f64);
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
