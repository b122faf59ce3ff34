//! The HTTP API: routes and handlers, as functions of a request and the daemon's state. The
//! `/status` document itself is in `api/status.rs`.
//!
//! Handlers read the latest snapshot (clone the `Arc`, let go) and never talk back to the
//! sweeper. Every error is JSON (`{"error": "..."}`) with the right status: 404 for unknown
//! paths and services, 405 (with `Allow`) for wrong methods, 400 for bad query strings.

mod badge;
mod maintenance;
mod page;
mod service;
mod status;

use std::sync::Arc;

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{self, Refusal};
use crate::body::Body;
use crate::config::{ConfigError, Protected};
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use crate::reload::{ReloadRequest, ReloadStatus};
use crate::snapshot::Snapshot;
use status::{StatusQuery, status_pieces};
pub use status::{rfc3339, status_document, status_document_pieces};

/// `/ui/overview` as served, for the benchmark.
pub fn overview_document(
    snapshot: &Arc<Snapshot>,
    history: &crate::history::Shared,
    query: &str,
) -> Vec<u8> {
    page::overview_body(snapshot, history, &Default::default(), query).unwrap_or_default()
}

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
    /// Every discovery source's status.
    pub discovery: watch::Receiver<crate::discovery::Statuses>,
    /// Recent results and events of every service.
    pub history: crate::history::Shared,
    /// The ad-hoc maintenance windows.
    pub windows: Arc<crate::maintenance::Windows>,
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
    /// `/` for a browser: the overview page.
    Page,
    /// `/service/{name}`: the service page.
    ServicePage,
    /// `/ui/overview`: the JSON the overview page reads.
    Overview,
    /// `/assets/{file}`: the pages' script and style.
    Asset,
    /// `/badge/...svg`.
    Badge,
    /// `/-/maintenance`: list (GET) and open (POST) maintenance windows.
    Maintenance,
    /// `/-/maintenance/{id}`: end one (DELETE).
    MaintenanceWindow,
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
            "/-/maintenance" => Route::Maintenance,
            p if p.starts_with("/-/maintenance/") && p.len() > "/-/maintenance/".len() => {
                Route::MaintenanceWindow
            }
            "/ui/overview" => Route::Overview,
            p if p.starts_with("/status/") && p.len() > "/status/".len() => Route::Service,
            p if p.starts_with("/service/") && p.len() > "/service/".len() => Route::ServicePage,
            p if p.starts_with("/assets/") => Route::Asset,
            p if p.starts_with("/badge/") => Route::Badge,
            _ => return None,
        })
    }

    /// The endpoint group `[daemon.auth] protect` names this route by, if it can be protected.
    fn protected_as(self) -> Option<Protected> {
        match self {
            Route::Metrics => Some(Protected::Metrics),
            // The pages and badges show what /status shows.
            Route::Status
            | Route::Service
            | Route::Page
            | Route::ServicePage
            | Route::Overview
            | Route::Badge => Some(Protected::Status),
            // Authenticated like reload: it changes what pages.
            Route::Reload | Route::Maintenance | Route::MaintenanceWindow => {
                Some(Protected::Reload)
            }
            Route::Index | Route::Asset | Route::Healthz | Route::Readyz => None,
        }
    }

    fn methods(self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        const GET_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
        const DELETE: &[Method] = &[Method::DELETE];
        match self {
            Route::Reload => POST,
            Route::Maintenance => GET_POST,
            Route::MaintenanceWindow => DELETE,
            _ => GET,
        }
    }
}

/// Routes one request.
pub async fn handle<B>(api: &Api, req: Request<B>) -> HttpResponse
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let Some(mut route) = Route::of(path) else {
        return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"));
    };
    if route == Route::Index && page::wants_html(req.headers()) {
        route = Route::Page;
    }
    if !route.methods().contains(req.method()) {
        return method_not_allowed(req.method(), route.methods());
    }
    if let Some(what) = route.protected_as() {
        let config = api.snapshot().config.clone();
        if let Some(refused) = auth::refusal(config.daemon.auth.as_ref(), what, req.headers()) {
            // A browser opening a page is asked for the token as a password (Basic) first;
            // every protected route offers both schemes, so a page's own requests (which a
            // browser may not send credentials to unasked) get the browser's sign-in too.
            let basic = matches!(route, Route::Page | Route::ServicePage);
            return unauthorized(refused, basic);
        }
    }
    match route {
        Route::Index => index(),
        Route::Page => page::shell(page::Page::Overview),
        Route::ServicePage => page::shell(page::Page::Service),
        Route::Overview => page::overview(api, query),
        Route::Asset => page::asset(&path["/assets/".len()..]),
        Route::Badge => match badge::Badge::parse(&path["/badge/".len()..]) {
            Some(b) => badge::badge(api, b),
            None => error(
                StatusCode::NOT_FOUND,
                "badges are /badge/{name}.svg and /badge/{name}/uptime/{24h,7d,30d}.svg",
            ),
        },
        Route::Metrics => metrics(api, req.headers()),
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
        Route::Maintenance | Route::MaintenanceWindow
            if !api.snapshot().config.daemon.reload_enabled() =>
        {
            error(
                StatusCode::FORBIDDEN,
                "the maintenance API is off, as the reload API is: protect reload with a token ([daemon.auth]) or set reload_api = true under [daemon]",
            )
        }
        Route::Maintenance if req.method() == Method::POST => {
            maintenance::open(api, req.into_body()).await
        }
        Route::Maintenance => maintenance::list(api),
        Route::MaintenanceWindow => {
            let raw = &path["/-/maintenance/".len()..];
            let id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            maintenance::end(api, &id)
        }
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
                "/status/{name}": "JSON status of one service, with its recent results, events and daily uptime",
                "/ (Accept: text/html)": "the status page; /service/{name} for one service",
                "/badge/{name}.svg": "a state badge; /badge/{name}/uptime/{24h,7d,30d}.svg for uptime",
                "/healthz": "200 while the process runs",
                "/readyz": "200 once the first sweep has finished",
                "/-/reload": "POST: reload the config (with the token of [daemon.auth], or when reload_api = true)",
            }
        }),
    )
}

fn metrics(api: &Api, headers: &http::HeaderMap) -> HttpResponse {
    // Streamed: each piece is rendered (and compressed) when the client has taken the
    // previous one.
    let gzip = crate::body::accepts_gzip(headers);
    let pieces = api.metrics.pieces();
    let mut r = Response::new(Body::pieces(if gzip {
        crate::body::gzip(pieces)
    } else {
        pieces
    }));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    h.insert(
        http::header::VARY,
        HeaderValue::from_static("Accept-Encoding"),
    );
    if gzip {
        h.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    r
}

fn status(api: &Api, query: &str) -> HttpResponse {
    let q = match StatusQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let snapshot = api.snapshot();
    let reload = api.reload_status.borrow().clone();
    let discovery = api.discovery.borrow().clone();
    let history = Some(api.history.clone());
    let mut r = Response::new(Body::pieces(status_pieces(
        snapshot,
        reload,
        discovery,
        history,
        Some(api.windows.clone()),
        q,
    )));
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
    let found = snapshot
        .services
        .iter()
        .position(|s| s.service.name == name.as_ref());
    match found.map(|i| (i, &snapshot.services[i])) {
        Some((i, s)) => {
            let view =
                crate::maintenance::View::at(&snapshot, &api.windows, crate::maintenance::now_ms());
            // The history's read lock only while the document copies from it, not while it is
            // written out: the recorder waits on it.
            let h = crate::history::read(&api.history);
            let detail = service::ServiceDetail::new(
                &snapshot,
                i,
                status::MaintenanceDoc::of(&view, i),
                &crate::maintenance::Exclusions::last_30_days(
                    &snapshot,
                    &api.windows,
                    crate::maintenance::now_ms(),
                )
                .of(&s.service),
                h.services.get(name.as_ref()),
                std::time::SystemTime::now(),
            );
            drop(h);
            json_bytes(StatusCode::OK, to_json(&detail, pretty))
        }
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

/// The 401 for a request [`auth`] refused, with its `WWW-Authenticate` challenge.
fn unauthorized(refused: Refusal, basic: bool) -> HttpResponse {
    let mut r = error(StatusCode::UNAUTHORIZED, refused.message());
    let (first, second) = if basic {
        (refused.basic_challenge(), refused.challenge())
    } else {
        (refused.challenge(), refused.basic_challenge())
    };
    for challenge in [first, second] {
        r.headers_mut().append(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    r
}

/// Whether `path` is `/healthz` or `/readyz`: answered even when every connection is busy.
pub fn is_probe(path: &str) -> bool {
    matches!(Route::of(path), Some(Route::Healthz | Route::Readyz))
}

/// The answer to anything but a probe on a probe connection (see `server::limit`): 503, retry
/// in a second.
pub fn overloaded(connections: usize) -> HttpResponse {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "all {connections} connections are busy serving; only /healthz and /readyz are \
             answered until one is free: retry"
        ),
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json_response(status, &json!({"error": message.into()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_probes_are_probes() {
        assert!(is_probe("/healthz") && is_probe("/readyz"));
        for path in [
            "/healthz/",
            "/healthz2",
            "/status",
            "/metrics",
            "/",
            "/-/reload",
        ] {
            assert!(!is_probe(path), "{path}");
        }
        let r = overloaded(256);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
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
