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
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth;
use crate::config::{ConfigError, Protected};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use crate::probe::Reason;
use crate::reload::{ReloadRequest, ReloadStatus};
use crate::snapshot::{ServiceStatus, Snapshot, State};

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

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
        Route::Metrics => metrics(api).await,
        Route::Status => status(api, query).await,
        Route::Service => one_service(api, &path["/status/".len()..], query),
        Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
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

async fn metrics(api: &Api) -> HttpResponse {
    let m = api.metrics.clone();
    // Rendering a large fleet is CPU work; keep it off the threads the sweep's checks run on.
    match tokio::task::spawn_blocking(move || m.render()).await {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering metrics failed: {e}"),
        ),
    }
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

async fn status(api: &Api, query: &str) -> HttpResponse {
    let q = match StatusQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let snapshot = api.snapshot();
    let reload = api.reload_status.borrow().clone();
    // Serializing thousands of services is CPU work; keep it off the async workers.
    let rendered = tokio::task::spawn_blocking(move || {
        let doc = StatusDoc::new(&snapshot, &reload, &q);
        to_json(&doc, q.pretty)
    })
    .await;
    match rendered {
        Ok(body) => json_bytes(StatusCode::OK, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering status failed: {e}"),
        ),
    }
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
    if api
        .reload_requests
        .send(ReloadRequest { reply: Some(tx) })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
    }
    match rx.await {
        Ok(Ok(r)) => json_response(
            StatusCode::OK,
            &json!({"status": "reloaded", "generation": r.generation, "services": r.services}),
        ),
        Ok(Err(e)) => {
            let status = match e {
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

/// `/status` as JSON.
#[derive(Serialize)]
struct StatusDoc<'a> {
    generation: u64,
    shard: ShardDoc,
    summary: SummaryDoc,
    sweep: Option<SweepDoc>,
    config: ConfigDoc,
    services: ServicesDoc<'a>,
}

/// The services of `/status`, serialized one by one as they are read from the snapshot, so a
/// large fleet's document is never held twice (once as structs, once as text).
struct ServicesDoc<'a> {
    snapshot: &'a Snapshot,
    query: &'a StatusQuery,
}

impl Serialize for ServicesDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.snapshot
                .services
                .iter()
                .filter(|st| self.query.matches(st))
                .map(ServiceDoc::new),
        )
    }
}

/// A timestamp written as RFC 3339 straight into the output, without a `String` per value.
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
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
        let now = SystemTime::now();
        let days_left = match facts.leaf_expiry.duration_since(now) {
            Ok(d) => (d.as_secs() / 86_400) as i64,
            Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
        };
        TlsDoc {
            leaf_expires_at: Timestamp(facts.leaf_expiry),
            days_left,
            earliest_expiry_at: Timestamp(facts.earliest_expiry),
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

impl<'a> StatusDoc<'a> {
    fn new(s: &'a Snapshot, reload: &ReloadStatus, q: &'a StatusQuery) -> Self {
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
            services: ServicesDoc {
                snapshot: s,
                query: q,
            },
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
            since: Timestamp(s.since),
            consecutive_failures: s.consecutive_failures,
            consecutive_successes: s.consecutive_successes,
            checks: CountsDoc(&s.counts),
            last: s.last.as_ref().map(|o| LastDoc {
                ok: o.ok(),
                reason: o.reason,
                http_status: o.http_status,
                duration_seconds: seconds(o.duration),
                at: Timestamp(o.at),
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
pub fn status_document(snapshot: &Snapshot, reload: &ReloadStatus) -> Vec<u8> {
    to_json(
        &StatusDoc::new(snapshot, reload, &StatusQuery::default()),
        false,
    )
}

/// RFC 3339, UTC, millisecond precision: `2026-11-24T16:20:15.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
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
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
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
