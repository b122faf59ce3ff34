//! The HTTP API: routes and handlers, as functions of a request and the daemon's state.
//!
//! Handlers read the latest snapshot (clone the `Arc`, let go) and never talk back to the
//! sweeper. Every error is JSON (`{"error": "..."}`) with the right status: 404 for unknown
//! paths and services, 405 (with `Allow`) for wrong methods, 400 for bad query strings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth;
use crate::body::{Body, Pieces};
use crate::config::{ConfigError, Protected};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use crate::probe::Reason;
use crate::reload::{ReloadRequest, ReloadStatus};
use crate::snapshot::{ServiceStatus, Snapshot, State};

/// The response type of every handler.
pub type HttpResponse = Response<Body>;

/// Longest `POST /-/reload` waits for its reload's outcome before answering without it.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the handlers read, shared by every connection.
pub struct Api {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub reload_status: watch::Receiver<ReloadStatus>,
    pub reload_requests: mpsc::Sender<ReloadRequest>,
    pub metrics: Arc<Metrics>,
}

impl Api {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

/// The endpoints, and the methods each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Index,
    Metrics,
    Status,
    Service,
    Healthz,
    Readyz,
    Reload,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/" => Route::Index,
            "/metrics" => Route::Metrics,
            "/status" => Route::Status,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/-/reload" => Route::Reload,
            p if p.starts_with("/status/") && p.len() > "/status/".len() => Route::Service,
            _ => return None,
        })
    }

    /// The endpoint group `[daemon.auth] protect` names this route by, if it can be protected.
    fn protected_as(self) -> Option<Protected> {
        match self {
            Route::Metrics => Some(Protected::Metrics),
            Route::Status | Route::Service => Some(Protected::Status),
            Route::Reload => Some(Protected::Reload),
            Route::Index | Route::Healthz | Route::Readyz => None,
        }
    }

    fn methods(self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        match self {
            Route::Reload => POST,
            _ => GET,
        }
    }
}

/// Routes one request.
pub async fn handle<B>(api: &Api, req: Request<B>) -> HttpResponse {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let Some(route) = Route::of(path) else {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    };
    if !route.methods().contains(req.method()) {
        return method_not_allowed(req.method(), route.methods());
    }
    if let Some(what) = route.protected_as() {
        let config = api.snapshot().config.clone();
        if let Some(refused) = auth::refusal(config.daemon.auth.as_ref(), what, req.headers()) {
            return refused;
        }
    }
    match route {
        Route::Index => index(),
        Route::Metrics => metrics(api),
        Route::Status => status(api, query),
        Route::Service => one_service(api, &path["/status/".len()..], query),
        Route::Healthz => {
            if crate::fault::injected(crate::fault::Fault::RequestPanic) {
                panic!("injected fault: request-panic");
            }
            json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        Route::Readyz => readyz(api),
        Route::Reload => reload(api).await,
    }
}

fn method_not_allowed(method: &Method, allow: &[Method]) -> HttpResponse {
    let list = allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed; use {list}"),
    );
    if let Ok(v) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

fn index() -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({
            "name": "healthsweep",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": {
                "/metrics": "Prometheus metrics",
                "/status": "JSON status of every service (?state=up|degraded|down|unknown, ?group=NAME, ?pretty)",
                "/status/{name}": "JSON status of one service",
                "/healthz": "200 while the process runs",
                "/readyz": "200 once the first sweep has finished",
                "/-/reload": "POST: reload the config (with the token of [daemon.auth], or when reload_api = true)",
            }
        }),
    )
}

fn metrics(api: &Api) -> HttpResponse {
    // Streamed: each piece is rendered when the client has taken the previous one.
    let mut r = Response::new(Body::pieces(api.metrics.pieces()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    r
}

/// The parsed query string of `/status`.
#[derive(Debug, Default, PartialEq)]
struct StatusQuery {
    state: Option<State>,
    group: Option<String>,
    pretty: bool,
}

impl StatusQuery {
    fn parse(query: &str) -> Result<StatusQuery, String> {
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

    fn matches(&self, s: &ServiceStatus) -> bool {
        self.state.is_none_or(|st| s.state == st)
            && self
                .group
                .as_deref()
                .is_none_or(|g| s.service.group.as_deref() == Some(g))
    }
}

fn status(api: &Api, query: &str) -> HttpResponse {
    let q = match StatusQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let snapshot = api.snapshot();
    let reload = api.reload_status.borrow().clone();
    let mut r = Response::new(Body::pieces(status_pieces(snapshot, reload, q)));
    json_headers(&mut r);
    r
}

fn one_service(api: &Api, raw_name: &str, query: &str) -> HttpResponse {
    let pretty = match StatusQuery::parse(query) {
        Ok(StatusQuery {
            state: None,
            group: None,
            pretty,
        }) => pretty,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "state and group filters apply to /status, not /status/{name}",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let name = percent_encoding::percent_decode_str(raw_name).decode_utf8_lossy();
    let snapshot = api.snapshot();
    match snapshot.service(&name) {
        Some(s) => json_bytes(StatusCode::OK, to_json(&ServiceDoc::new(s), pretty)),
        None => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}

fn readyz(api: &Api) -> HttpResponse {
    if api.snapshot().ready() {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not ready", "reason": "the first sweep has not finished"}),
        )
    }
}

async fn reload(api: &Api) -> HttpResponse {
    if !api.snapshot().config.daemon.reload_enabled() {
        return error(
            StatusCode::FORBIDDEN,
            "the reload API is off; protect it with a token ([daemon.auth]) or set reload_api = true under [daemon], or send SIGHUP",
        );
    }
    let (tx, rx) = oneshot::channel();
    // Never wait for a place in the queue: a full queue already holds reloads that will read
    // the file as it is by then, and a client waiting here would hold a connection slot.
    match api
        .reload_requests
        .try_send(ReloadRequest { reply: Some(tx) })
    {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "reloads are already queued; they will read the file as it is then: retry to see the outcome",
            );
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is shutting down",
            );
        }
    }
    let Ok(outcome) = tokio::time::timeout(RELOAD_WAIT, rx).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reload is taking longer than expected; see /status for its outcome",
        );
    };
    match outcome {
        Ok(Ok(r)) => json_response(
            StatusCode::OK,
            &json!({"status": "reloaded", "generation": r.generation, "services": r.services}),
        ),
        Ok(Err(e)) => {
            let status = match e.as_ref() {
                ConfigError::Read { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                ConfigError::Parse { .. } | ConfigError::Invalid { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            json_response(
                status,
                &json!({
                    "error": "config rejected; the running config is unchanged",
                    "problems": e.lines(),
                }),
            )
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        ),
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
    services: S,
}

/// Services of `/status` per piece of the streamed document.
const STATUS_PIECE_SERVICES: usize = 64;

/// `/status` in pieces: the document's head, then the services (those `query` keeps) a few at
/// a time, then its end; byte for byte what serializing the whole document would give.
fn status_pieces(snapshot: Arc<Snapshot>, reload: ReloadStatus, query: StatusQuery) -> Pieces {
    let pretty = query.pretty;
    let head = to_json(&StatusDoc::new(&snapshot, &reload, [(); 0]), pretty);
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
        for st in snapshot.services[next..end]
            .iter()
            .filter(|s| query.matches(s))
        {
            if std::mem::replace(&mut any, true) {
                out.push(b',');
            }
            service_json(&mut out, st, pretty);
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
fn service_json(out: &mut Vec<u8>, st: &ServiceStatus, pretty: bool) {
    let doc = ServiceDoc::new(st);
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

#[derive(Serialize)]
struct SummaryDoc {
    total: usize,
    up: usize,
    degraded: usize,
    down: usize,
    unknown: usize,
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
struct ServiceDoc<'a> {
    name: &'a str,
    group: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    url: &'a str,
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
}

impl<S: Serialize> StatusDoc<S> {
    fn new(s: &Snapshot, reload: &ReloadStatus, services: S) -> Self {
        StatusDoc {
            generation: s.generation,
            shard: ShardDoc {
                index: s.config.daemon.shard.index(),
                count: s.config.daemon.shard.count(),
                fleet_services: s.config.fleet_size,
            },
            summary: SummaryDoc {
                total: s.services.len(),
                up: s.count(State::Up),
                degraded: s.count(State::Degraded),
                down: s.count(State::Down),
                unknown: s.count(State::Unknown),
            },
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
            services,
        }
    }
}

impl<'a> ServiceDoc<'a> {
    fn new(s: &'a ServiceStatus) -> Self {
        ServiceDoc {
            name: &s.service.name,
            group: s.service.group.as_deref(),
            labels: &s.service.labels,
            url: s.service.redacted_url(),
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
            }),
        }
    }
}

/// `/status` for the whole fleet, unfiltered and compact, as served (the benchmark times this).
pub fn status_document(snapshot: &Arc<Snapshot>, reload: &ReloadStatus) -> Vec<u8> {
    status_pieces(snapshot.clone(), reload.clone(), StatusQuery::default())
        .flat_map(|b| b.to_vec())
        .collect()
}

/// RFC 3339, UTC, millisecond precision: `2026-11-24T16:20:15.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    crate::timestamp::rfc3339(t)
}

/// Seconds with microsecond precision: enough for latencies, short enough to read.
fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

fn to_json(value: &impl Serialize, pretty: bool) -> Vec<u8> {
    let mut out = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .expect("status documents serialize: string keys, finite numbers");
    out.push(b'\n');
    out
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut r = Response::new(Body::whole(body));
    *r.status_mut() = status;
    json_headers(&mut r);
    r
}

fn json_headers(r: &mut HttpResponse) {
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    json_bytes(status, to_json(value, false))
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json_response(status, &json!({"error": message.into()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole document as serde would write it in one go: what the streamed pieces must
    /// add up to, byte for byte.
    struct AllServices<'a>(&'a Snapshot, &'a StatusQuery);

    impl Serialize for AllServices<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(
                self.0
                    .services
                    .iter()
                    .filter(|st| self.1.matches(st))
                    .map(ServiceDoc::new),
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
        let outcomes = (0..n)
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
            config,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(5),
            outcomes,
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
                    &StatusDoc::new(&snapshot, &reload, AllServices(&snapshot, &q)),
                    q.pretty,
                );
                let streamed: Vec<u8> = status_pieces(snapshot.clone(), reload.clone(), q)
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
            "services": [
                {
                    "name": "s0", "group": "g0", "labels": {}, "url": "http://127.0.0.1:9/0",
                    "state": "up", "since": "1970-01-01T00:00:00.003Z",
                    "consecutive_failures": 0, "consecutive_successes": 1, "missed_sweeps": 0,
                    "checks": {"ok": 1},
                    "last": {
                        "ok": true, "reason": null, "http_status": null, "duration_seconds": 0.003,
                        "at": "1970-01-01T00:00:00.000Z", "error": null, "reused_connection": false,
                        "degraded": false, "http_version": null, "redirects": 0, "tls": null
                    }
                },
                {
                    "name": "s1", "group": "g1", "labels": {}, "url": "http://127.0.0.1:9/1",
                    "state": "down", "since": "1970-01-01T00:00:00.001Z",
                    "consecutive_failures": 1, "consecutive_successes": 0, "missed_sweeps": 0,
                    "checks": {"ok": 0, "connect": 1},
                    "last": {
                        "ok": false, "reason": "connect", "http_status": null,
                        "duration_seconds": 0.001, "at": "1970-01-01T00:00:00.000Z",
                        "error": "refused \"quoted\"", "reused_connection": false,
                        "degraded": false, "http_version": null, "redirects": 0, "tls": null
                    }
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

    #[test]
    fn errors_are_json_with_the_status_given() {
        let r = error(StatusCode::NOT_FOUND, "nope");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn routes_match_exact_paths_only() {
        assert_eq!(Route::of("/status"), Some(Route::Status));
        assert_eq!(Route::of("/status/"), None);
        assert_eq!(Route::of("/status/a"), Some(Route::Service));
        assert_eq!(Route::of("/metrics/"), None);
        assert_eq!(Route::of("/-/reload"), Some(Route::Reload));
        assert_eq!(Route::of(""), None);
    }

    #[test]
    fn wrong_methods_get_405_with_allow() {
        let r = method_not_allowed(&Method::DELETE, Route::Status.methods());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
}
