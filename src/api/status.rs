//! `/status` and `/status/{name}` as JSON: the documents, the query that filters them, and the
//! streamed rendering of a large fleet's document (see [`crate::body`]). The document is a
//! contract for every jq script and dashboard that reads it: a golden test below holds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use super::to_json;
use crate::body::Pieces;
use crate::probe::Reason;
use crate::reload::ReloadStatus;
use crate::snapshot::{ServiceStatus, Snapshot, State};

/// The parsed query string of `/status`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct StatusQuery {
    pub(super) state: Option<State>,
    pub(super) group: Option<String>,
    pub(super) pretty: bool,
}

impl StatusQuery {
    pub(super) fn parse(query: &str) -> Result<StatusQuery, String> {
        let mut q = StatusQuery::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "state" => {
                    q.state = Some(match value.as_ref() {
                        "up" => State::Up,
                        "degraded" => State::Degraded,
                        "down" => State::Down,
                        "unknown" => State::Unknown,
                        other => {
                            return Err(format!(
                                "state={other:?} is not one of up, degraded, down, unknown"
                            ));
                        }
                    })
                }
                "group" => q.group = Some(value.into_owned()),
                "pretty" => q.pretty = value.is_empty() || value == "1" || value == "true",
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}; use state, group or pretty"
                    ));
                }
            }
        }
        Ok(q)
    }

    pub(super) fn matches(&self, s: &ServiceStatus) -> bool {
        self.state.is_none_or(|st| s.state == st)
            && self
                .group
                .as_deref()
                .is_none_or(|g| s.service.extra.group.as_deref() == Some(g))
    }
}

/// `/status` as JSON. `services` comes last: the server streams the document, the head here
/// with `services` empty, then the services a few at a time (see [`status_pieces`]).
#[derive(Serialize)]
struct StatusDoc<S> {
    generation: u64,
    shard: ShardDoc,
    summary: SummaryDoc,
    sweep: Option<SweepDoc>,
    config: ConfigDoc,
    /// Every `[[discover]]` source: what it found and how its latest refresh went.
    discovery: Vec<DiscoveryDoc>,
    services: S,
}

/// A discovery source in `/status`.
#[derive(Serialize)]
struct DiscoveryDoc {
    name: String,
    kind: &'static str,
    targets: usize,
    last_refresh_at: Option<Timestamp>,
    last_success_at: Option<Timestamp>,
    last_refresh_successful: bool,
    error: Option<String>,
    refresh_failures: u64,
    duplicates_skipped: usize,
    targets_rejected: usize,
    labels_dropped: usize,
}

impl DiscoveryDoc {
    fn new(s: &crate::discovery::SourceStatus) -> Self {
        DiscoveryDoc {
            name: s.name.to_string(),
            kind: s.kind,
            targets: s.targets,
            last_refresh_at: s.last_refresh.map(at),
            last_success_at: s.last_success.map(at),
            last_refresh_successful: s.successful,
            error: s.error.clone(),
            refresh_failures: s.failures_total,
            duplicates_skipped: s.duplicates,
            targets_rejected: s.rejected,
            labels_dropped: s.dropped_labels,
        }
    }
}

/// Services of `/status` per piece of the streamed document.
const STATUS_PIECE_SERVICES: usize = 64;

/// `/status` in pieces: the document's head, then the services (those `query` keeps) a few at
/// a time, then its end; byte for byte what serializing the whole document would give.
pub(super) fn status_pieces(
    snapshot: Arc<Snapshot>,
    reload: ReloadStatus,
    discovery: crate::discovery::Statuses,
    history: Option<crate::history::Shared>,
    windows: Option<Arc<crate::maintenance::Windows>>,
    query: StatusQuery,
) -> Pieces {
    let now = crate::history::millis(SystemTime::now());
    let view = windows
        .as_deref()
        .map(|w| crate::maintenance::View::at(&snapshot, w, now))
        .unwrap_or_default();
    let exclusions = windows
        .as_deref()
        .map(|w| crate::maintenance::Exclusions::last_30_days(&snapshot, w, now))
        .unwrap_or_default();
    let pretty = query.pretty;
    let head = to_json(
        &StatusDoc::new(&snapshot, &reload, &discovery, [(); 0]),
        pretty,
    );
    // The head ends with `[]}` (compact) or `[]\n}` (pretty), newline after: split between
    // the brackets.
    let open = head
        .iter()
        .rposition(|&b| b == b'[')
        .expect("the services array is in the head");
    let (head, tail) = head.split_at(open + 1);
    let head = Bytes::copy_from_slice(head);
    let tail = Bytes::copy_from_slice(tail);
    let mut next = 0;
    let mut any = false;
    let services = std::iter::from_fn(move || {
        if next >= snapshot.services.len() {
            return None;
        }
        let mut out = Vec::new();
        let end = (next + STATUS_PIECE_SERVICES).min(snapshot.services.len());
        // The read lock for one piece at a time: the recorder waits at most that long.
        let h = history.as_ref().map(crate::history::read);
        for (i, st) in snapshot.services[next..end]
            .iter()
            .enumerate()
            .filter(|(_, s)| query.matches(s))
        {
            if std::mem::replace(&mut any, true) {
                out.push(b',');
            }
            let kept = h
                .as_ref()
                .and_then(|h| h.services.get(st.service.name.as_str()));
            let doc = ServiceDoc::new(
                &snapshot,
                next + i,
                UptimeDoc::of(kept, now, &exclusions.of(&st.service)),
                MaintenanceDoc::of(&view, next + i),
            );
            service_json(&mut out, &doc, pretty);
        }
        next = end;
        if next == snapshot.services.len() && any && pretty {
            out.extend_from_slice(b"\n  ");
        }
        Some(Bytes::from(out))
    });
    Box::new(
        std::iter::once(head)
            .chain(services)
            .chain(std::iter::once(tail)),
    )
}

/// One service of the streamed `/status`, as it sits in the whole document.
fn service_json(out: &mut Vec<u8>, doc: &ServiceDoc<'_>, pretty: bool) {
    if pretty {
        // Inside `"services": [` the items are indented twice; JSON text holds no raw newline
        // but between tokens, so indenting every line is exact.
        let text = serde_json::to_vec_pretty(&doc).expect("service documents serialize");
        for line in text.split(|&b| b == b'\n') {
            out.extend_from_slice(b"\n    ");
            out.extend_from_slice(line);
        }
    } else {
        serde_json::to_writer(&mut *out, &doc).expect("service documents serialize");
    }
}

/// A timestamp written as RFC 3339 straight into the output, without a `String` per value.
type Timestamp = crate::timestamp::Rfc3339;

fn at(t: SystemTime) -> Timestamp {
    crate::timestamp::UnixTime::from_system(t).rfc3339()
}

/// Which share of the fleet this replica checks.
#[derive(Serialize)]
struct ShardDoc {
    index: u32,
    count: u32,
    /// Services in the config file, across all shards.
    fleet_services: usize,
}

/// Services by state: in `/status`, and on the status page.
#[derive(Serialize)]
pub(super) struct SummaryDoc {
    total: usize,
    up: usize,
    degraded: usize,
    down: usize,
    unknown: usize,
}

impl SummaryDoc {
    pub(super) fn of(s: &Snapshot) -> Self {
        SummaryDoc {
            total: s.services.len(),
            up: s.count(State::Up),
            degraded: s.count(State::Degraded),
            down: s.count(State::Down),
            unknown: s.count(State::Unknown),
        }
    }
}

#[derive(Serialize)]
struct SweepDoc {
    number: u64,
    started_at: String,
    duration_seconds: f64,
    deadline_seconds: f64,
    interval_seconds: f64,
    checks: usize,
    failed: usize,
    deadline_exceeded: usize,
    not_started: usize,
    cut_short: usize,
    max_in_flight: usize,
    connections_reused: usize,
    idle_connections: usize,
}

#[derive(Serialize)]
struct ConfigDoc {
    generation: u64,
    last_reload_successful: bool,
    last_reload_success_at: String,
    last_reload_error: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ServiceDoc<'a> {
    name: &'a str,
    group: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    url: &'a str,
    /// The `[[discover]]` source that found it; `null` for a service of the config files.
    source: Option<&'a str>,
    state: State,
    since: Timestamp,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// Sweeps in a row that gave no verdict on the service (the fleet did not fit the
    /// deadline); `state` and `last` are from the latest verdict.
    missed_sweeps: u32,
    /// Checks since the service was added: `ok`, and each failure reason seen.
    checks: CountsDoc<'a>,
    last: Option<LastDoc<'a>>,
    /// The share of known time it was up (or degraded) per window, from its state changes;
    /// `null` where nothing is known of the window.
    uptime: UptimeDoc,
    /// How often it is checked (`interval`: `[daemon] interval` unless it has its own).
    interval_seconds: f64,
    /// When its next check starts (the start of the first sweep it is due in); `null` before
    /// the first sweep.
    next_check_at: Option<Timestamp>,
    /// Its dependencies (`depends_on`, and theirs) that are down, the one down longest first:
    /// while this is not empty, its own failure is not the root cause.
    blocked_by: Vec<&'a str>,
    /// The maintenance window it is in now, if any.
    maintenance: Option<MaintenanceDoc>,
}

/// A window a service is in.
#[derive(Serialize)]
pub(super) struct MaintenanceDoc {
    name: String,
    /// For a window opened through `POST /-/maintenance`.
    id: Option<String>,
    started_at: Timestamp,
    ends_at: Timestamp,
    reason: Option<String>,
}

impl MaintenanceDoc {
    pub(super) fn of(view: &crate::maintenance::View, i: usize) -> Option<MaintenanceDoc> {
        let w = view.of(i)??;
        Some(MaintenanceDoc {
            name: w.name.clone(),
            id: w.id.clone(),
            started_at: at(crate::history::system_time(w.start)),
            ends_at: at(crate::history::system_time(w.end)),
            reason: w.reason.clone(),
        })
    }
}

/// The names of the down dependencies of the service at `i`.
pub(super) fn blocked_by(snapshot: &Snapshot, i: usize) -> Vec<&str> {
    snapshot
        .blocked
        .of(i)
        .iter()
        .filter_map(|&j| snapshot.services.get(j as usize))
        .map(|s| s.service.name.as_str())
        .collect()
}

/// `{"24h": 0.9993, "7d": 0.9999, "30d": null}`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UptimeDoc(pub(super) [Option<f64>; crate::history::WINDOWS.len()]);

impl UptimeDoc {
    pub(super) fn of(
        h: Option<&crate::history::ServiceHistory>,
        now: crate::history::Millis,
        excluded: &[(i64, i64)],
    ) -> Self {
        let mut out = [None; crate::history::WINDOWS.len()];
        if let Some(h) = h {
            for (slot, (_, window)) in out.iter_mut().zip(crate::history::WINDOWS) {
                let from = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
                *slot = h
                    .uptime_excluding(from, now, excluded)
                    .map(|u| (u * 1e6).round() / 1e6);
            }
        }
        UptimeDoc(out)
    }
}

impl Serialize for UptimeDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for ((name, _), v) in crate::history::WINDOWS.iter().zip(self.0) {
            m.serialize_entry(name, &v)?;
        }
        m.end()
    }
}

/// `{"ok": 120, "http_status": 3}`, written straight from the counters.
struct CountsDoc<'a>(&'a crate::snapshot::Counts);

impl Serialize for CountsDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ok", &self.0.ok)?;
        for (reason, n) in self.0.failures() {
            m.serialize_entry(reason.as_str(), &n)?;
        }
        m.end()
    }
}

/// What the TLS handshake of the latest check showed.
#[derive(Serialize)]
struct TlsDoc {
    leaf_expires_at: Timestamp,
    /// Whole days until the leaf certificate expires (negative once it has).
    days_left: i64,
    earliest_expiry_at: Timestamp,
}

impl TlsDoc {
    fn new(facts: &crate::probe::TlsFacts) -> Self {
        let now = crate::timestamp::UnixTime::from_system(SystemTime::now());
        TlsDoc {
            leaf_expires_at: facts.leaf_expiry.rfc3339(),
            days_left: facts.leaf_expiry.days_after(now),
            earliest_expiry_at: facts.earliest_expiry.rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct LastDoc<'a> {
    ok: bool,
    reason: Option<Reason>,
    http_status: Option<u16>,
    duration_seconds: f64,
    at: Timestamp,
    error: Option<&'a str>,
    reused_connection: bool,
    degraded: bool,
    http_version: Option<&'static str>,
    redirects: u8,
    tls: Option<TlsDoc>,
    /// For `dns://`: the response code and the answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<DnsDoc<'a>>,
    /// For `grpc://`: the gRPC status code and the serving status.
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<GrpcDoc<'a>>,
}

#[derive(Serialize)]
struct GrpcDoc<'a> {
    status_code: u32,
    serving_status: Option<&'static str>,
    message: Option<&'a str>,
}

#[derive(Serialize)]
struct DnsDoc<'a> {
    rcode: &'static str,
    answer_rrs: usize,
    /// The data of the records of the type asked for (at most 16).
    answers: &'a [Box<str>],
    lookup_seconds: f64,
    transport: &'static str,
}

impl<S: Serialize> StatusDoc<S> {
    fn new(
        s: &Snapshot,
        reload: &ReloadStatus,
        discovery: &[crate::discovery::SourceStatus],
        services: S,
    ) -> Self {
        StatusDoc {
            generation: s.generation,
            shard: ShardDoc {
                index: s.config.daemon.shard.index(),
                count: s.config.daemon.shard.count(),
                fleet_services: s.config.fleet_size,
            },
            summary: SummaryDoc::of(s),
            sweep: s.last_sweep.as_ref().map(|w| SweepDoc {
                number: s.sweeps_total,
                started_at: rfc3339(w.started_at),
                duration_seconds: seconds(w.duration),
                deadline_seconds: seconds(w.deadline),
                interval_seconds: seconds(s.config.daemon.interval),
                checks: w.checks,
                failed: w.failed,
                deadline_exceeded: w.deadline_exceeded,
                not_started: w.not_started,
                cut_short: w.cut_short,
                max_in_flight: w.max_in_flight,
                connections_reused: w.reused_connections,
                idle_connections: w.idle_connections,
            }),
            config: ConfigDoc {
                generation: s.generation,
                last_reload_successful: reload.successful,
                last_reload_success_at: rfc3339(reload.last_success),
                last_reload_error: reload.last_error.clone(),
            },
            discovery: discovery.iter().map(DiscoveryDoc::new).collect(),
            services,
        }
    }
}

impl<'a> ServiceDoc<'a> {
    /// The document of the service at `i` in `snapshot`.
    pub(super) fn new(
        snapshot: &'a Snapshot,
        i: usize,
        uptime: UptimeDoc,
        maintenance: Option<MaintenanceDoc>,
    ) -> Self {
        let s = &snapshot.services[i];
        let interval = snapshot.config.daemon.interval * s.service.every.max(1);
        ServiceDoc {
            name: &s.service.name,
            group: s.service.extra.group.as_deref(),
            labels: &s.service.labels,
            url: s.service.redacted_url(),
            source: s.service.extra.source.as_deref(),
            state: s.state,
            since: at(s.since),
            consecutive_failures: s.consecutive_failures,
            consecutive_successes: s.consecutive_successes,
            missed_sweeps: s.missed,
            checks: CountsDoc(&s.counts),
            last: s.last.as_ref().map(|o| LastDoc {
                ok: o.ok(),
                reason: o.reason,
                http_status: o.http_status,
                duration_seconds: seconds(o.duration),
                at: at(o.at),
                error: o.error.as_deref(),
                reused_connection: o.reused_connection,
                degraded: o.degraded,
                http_version: o.http_version.map(|v| v.as_str()),
                redirects: o.redirects,
                tls: o.tls.as_deref().map(TlsDoc::new),
                dns: o.dns.as_deref().map(|d| DnsDoc {
                    rcode: d.rcode,
                    answer_rrs: d.answer_rrs,
                    answers: &d.answers,
                    lookup_seconds: seconds(d.lookup),
                    transport: if d.tcp { "tcp" } else { "udp" },
                }),
                grpc: o.grpc.as_deref().map(|g| GrpcDoc {
                    status_code: g.status_code,
                    serving_status: g.serving_name(),
                    message: g.message.as_deref(),
                }),
            }),
            uptime,
            interval_seconds: seconds(interval),
            next_check_at: snapshot.next_check(i).map(at),
            blocked_by: blocked_by(snapshot, i),
            maintenance,
        }
    }
}

/// `/status` for the whole fleet, unfiltered and compact, in memory (tests).
pub fn status_document(snapshot: &Arc<Snapshot>, reload: &ReloadStatus) -> Vec<u8> {
    status_document_pieces(snapshot, reload)
        .flat_map(|b| b.to_vec())
        .collect()
}

/// [`status_document`] as served: pieces rendered one at a time (the benchmark measures this).
pub fn status_document_pieces(snapshot: &Arc<Snapshot>, reload: &ReloadStatus) -> Pieces {
    status_pieces(
        snapshot.clone(),
        reload.clone(),
        Arc::new(Vec::new()),
        None,
        None,
        StatusQuery::default(),
    )
}

/// RFC 3339, UTC, millisecond precision: `2026-11-24T16:20:15.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    crate::timestamp::rfc3339(t)
}

/// Seconds with microsecond precision: enough for latencies, short enough to read.
fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The whole document as serde would write it in one go: what the streamed pieces must
    /// add up to, byte for byte.
    struct AllServices<'a>(&'a Snapshot, &'a StatusQuery);

    impl Serialize for AllServices<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(
                self.0
                    .services
                    .iter()
                    .enumerate()
                    .filter(|(_, st)| self.1.matches(st))
                    .map(|(i, _)| ServiceDoc::new(self.0, i, UptimeDoc::default(), None)),
            )
        }
    }

    fn fleet(n: usize) -> Arc<Snapshot> {
        use crate::probe::{Outcome, Reason};
        use std::time::Duration;
        let src: String = (0..n)
            .map(|i| {
                format!(
                    "[[service]]\nname = \"s{i}\"\nurl = \"http://127.0.0.1:9/{i}\"\ngroup = \"g{}\"\n",
                    i % 3
                )
            })
            .collect();
        let config =
            Arc::new(crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid"));
        let loaded = crate::config::Loaded {
            generation: 1,
            config: config.clone(),
        };
        let outcomes: Vec<_> = (0..n)
            .map(|i| match i % 2 {
                0 => Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(3)),
                _ => Outcome::failed(
                    Reason::Connect,
                    SystemTime::UNIX_EPOCH,
                    Duration::from_millis(1),
                    "refused \"quoted\"",
                ),
            })
            .collect();
        let report = crate::snapshot::SweepReport {
            slot: 0,
            config,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(5),
            outcomes: outcomes.into_iter().map(Some).collect(),
            max_in_flight: 4,
            not_started: 0,
            cut_short: 0,
            judged: Vec::new(),
            idle_connections: 0,
        };
        Arc::new(
            Snapshot::new(&loaded, SystemTime::UNIX_EPOCH)
                .swept(report)
                .0,
        )
    }

    #[test]
    fn the_streamed_status_document_is_the_whole_document_byte_for_byte() {
        let reload = ReloadStatus {
            successful: false,
            last_success: SystemTime::UNIX_EPOCH,
            last_error: Some("line 3: bad".into()),
        };
        for n in [0, 1, STATUS_PIECE_SERVICES, 3 * STATUS_PIECE_SERVICES + 5] {
            let snapshot = fleet(n);
            for query in [
                "",
                "pretty",
                "state=down",
                "state=down&pretty",
                "group=g9&pretty",
                "group=g9",
            ] {
                let q = StatusQuery::parse(query).expect("valid query");
                let whole = to_json(
                    &StatusDoc::new(&snapshot, &reload, &[], AllServices(&snapshot, &q)),
                    q.pretty,
                );
                let streamed: Vec<u8> = status_pieces(
                    snapshot.clone(),
                    reload.clone(),
                    Arc::new(Vec::new()),
                    None,
                    None,
                    q,
                )
                .flat_map(|b| b.to_vec())
                .collect();
                assert_eq!(
                    String::from_utf8(streamed).expect("UTF-8"),
                    String::from_utf8(whole).expect("UTF-8"),
                    "{n} services, query {query:?}"
                );
            }
        }
    }

    /// The `/status` contract, field by field: a change here is a change for every jq script
    /// and dashboard that reads it.
    #[test]
    fn the_status_document_has_the_documented_shape() {
        let reload = ReloadStatus {
            successful: true,
            last_success: SystemTime::UNIX_EPOCH,
            last_error: None,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&status_document(&fleet(2), &reload)).expect("JSON");
        let golden = json!({
            "generation": 1,
            "shard": {"index": 0, "count": 1, "fleet_services": 2},
            "summary": {"total": 2, "up": 1, "degraded": 0, "down": 1, "unknown": 0},
            "sweep": {
                "number": 1, "started_at": "1970-01-01T00:00:00.000Z", "duration_seconds": 0.005,
                "deadline_seconds": 5.0, "interval_seconds": 15.0, "checks": 2, "failed": 1,
                "deadline_exceeded": 0, "not_started": 0, "cut_short": 0, "max_in_flight": 4,
                "connections_reused": 0, "idle_connections": 0
            },
            "config": {
                "generation": 1, "last_reload_successful": true,
                "last_reload_success_at": "1970-01-01T00:00:00.000Z", "last_reload_error": null
            },
            "discovery": [],
            "services": [
                {
                    "name": "s0", "group": "g0", "labels": {}, "url": "http://127.0.0.1:9/0", "source": null,
                    "state": "up", "since": "1970-01-01T00:00:00.003Z",
                    "consecutive_failures": 0, "consecutive_successes": 1, "missed_sweeps": 0,
                    "checks": {"ok": 1},
                    "last": {
                        "ok": true, "reason": null, "http_status": null, "duration_seconds": 0.003,
                        "at": "1970-01-01T00:00:00.000Z", "error": null, "reused_connection": false,
                        "degraded": false, "http_version": null, "redirects": 0, "tls": null
                    },
                    "uptime": {"24h": null, "7d": null, "30d": null},
                    "interval_seconds": 15.0, "next_check_at": "1970-01-01T00:00:15.000Z",
                    "blocked_by": [],
                    "maintenance": null
                },
                {
                    "name": "s1", "group": "g1", "labels": {}, "url": "http://127.0.0.1:9/1", "source": null,
                    "state": "down", "since": "1970-01-01T00:00:00.001Z",
                    "consecutive_failures": 1, "consecutive_successes": 0, "missed_sweeps": 0,
                    "checks": {"ok": 0, "connect": 1},
                    "last": {
                        "ok": false, "reason": "connect", "http_status": null,
                        "duration_seconds": 0.001, "at": "1970-01-01T00:00:00.000Z",
                        "error": "refused \"quoted\"", "reused_connection": false,
                        "degraded": false, "http_version": null, "redirects": 0, "tls": null
                    },
                    "uptime": {"24h": null, "7d": null, "30d": null},
                    "interval_seconds": 15.0, "next_check_at": "1970-01-01T00:00:15.000Z",
                    "blocked_by": [],
                    "maintenance": null
                }
            ]
        });
        assert_eq!(doc, golden);
    }

    #[test]
    fn status_query_parses_filters_and_rejects_the_unknown() {
        assert_eq!(
            StatusQuery::parse("state=down&group=orders"),
            Ok(StatusQuery {
                state: Some(State::Down),
                group: Some("orders".into()),
                pretty: false
            })
        );
        assert!(StatusQuery::parse("pretty").expect("valid").pretty);
        assert!(StatusQuery::parse("state=sideways").is_err());
        assert!(StatusQuery::parse("status=down").is_err());
        assert_eq!(StatusQuery::parse(""), Ok(StatusQuery::default()));
    }
}
