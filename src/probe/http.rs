//! The HTTP(S) probe: resolve, connect, TLS, request, status, body, each step mapped to its own
//! failure [`Reason`].
//!
//! The connection is built by hand (rather than with a pooled client) so every phase is timed
//! and classified, and so a check that is cancelled at the deadline closes its socket at once.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, USER_AGENT};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::{Outcome, Prober, Reason};
use crate::config::{Expect, Service};

/// hyper's limit on a response head. Health responses have a few small headers; a server that
/// sends a huge header block fails fast with `invalid_response` instead of costing memory.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("healthsweep/", env!("CARGO_PKG_VERSION"));

/// The step a check is in, kept so a timeout can say what it interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Resolve = 0,
    Connect = 1,
    Tls = 2,
    Request = 3,
    Body = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Resolve,
            1 => Phase::Connect,
            2 => Phase::Tls,
            3 => Phase::Request,
            _ => Phase::Body,
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the host name",
            Phase::Connect => "connecting",
            Phase::Tls => "in the TLS handshake",
            Phase::Request => "waiting for the response",
            Phase::Body => "reading the body",
        }
    }
}

/// What a check has got to so far. Atomics, not cells, because the check's future is `Send`.
#[derive(Default)]
struct Progress {
    phase: AtomicU8,
    status: AtomicU16,
}

impl Progress {
    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }
    fn status(&self) -> Option<u16> {
        Some(self.status.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }
}

/// A failed step: the reason and a message for people.
#[derive(Debug)]
struct Failure {
    reason: Reason,
    message: String,
}

impl Failure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let at = SystemTime::now();
    let start = Instant::now();
    let own_deadline = start + svc.timeout;
    let cut_by_sweep = sweep_deadline < own_deadline;
    let cutoff = own_deadline.min(sweep_deadline);
    let progress = Progress::default();

    let result = tokio::time::timeout_at(cutoff, attempt(prober, svc, &progress)).await;
    let duration = start.elapsed();
    let http_status = progress.status();
    let mut outcome = match result {
        Ok(Ok(())) => Outcome {
            reason: None,
            http_status,
            at,
            duration,
            error: None,
        },
        Ok(Err(f)) => Outcome::failed(f.reason, at, duration, f.message),
        Err(_) if cut_by_sweep => Outcome::failed(
            Reason::DeadlineExceeded,
            at,
            duration,
            format!(
                "sweep deadline reached after {} while {}",
                fmt_ms(duration),
                progress.phase().doing()
            ),
        ),
        Err(_) => Outcome::failed(
            Reason::Timeout,
            at,
            duration,
            format!(
                "timed out after {} while {}",
                humantime::format_duration(svc.timeout),
                progress.phase().doing()
            ),
        ),
    };
    outcome.http_status = http_status;
    outcome
}

/// The check proper; `check` bounds it in time.
async fn attempt(prober: &Prober, svc: &Service, progress: &Progress) -> Result<(), Failure> {
    let target = &svc.target;
    progress.enter(Phase::Resolve);
    let addrs = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => resolve(&target.host, target.port).await?,
    };

    progress.enter(Phase::Connect);
    let tcp = connect_any(&addrs).await?;

    let io = if target.tls {
        progress.enter(Phase::Tls);
        Either::Right(tls_handshake(prober, &target.host, tcp).await?)
    } else {
        Either::Left(tcp)
    };

    progress.enter(Phase::Request);
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| classify_hyper(&e))?;
    // The connection task must not outlive the check: when the check ends (or is cancelled at
    // the deadline) this guard aborts it and the socket closes.
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    let response = sender
        .send_request(request(svc))
        .await
        .map_err(|e| classify_hyper(&e))?;
    let status = response.status();
    progress.status.store(status.as_u16(), Ordering::Relaxed);
    if !svc.expect.status_ok(status) {
        return Err(Failure::new(
            Reason::HttpStatus,
            format!(
                "status {}, expected {}",
                status.as_u16(),
                expected(&svc.expect)
            ),
        ));
    }
    if svc.expect.needs_body() {
        progress.enter(Phase::Body);
        let body = read_capped(response, svc.max_body_bytes).await?;
        check_body(&svc.expect, &body)?;
    }
    Ok(())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::new(Reason::Dns, format!("resolving {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::new(
            Reason::Dns,
            format!("resolving {host}: no addresses"),
        ));
    }
    Ok(addrs)
}

/// Tries each address in turn until one connects; the error names the last one tried.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are one small write; don't let Nagle hold it back.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => Failure::new(Reason::Connect, format!("connect {addr}: {e}")),
        None => Failure::new(Reason::Connect, "no address to connect to"),
    })
}

async fn tls_handshake(
    prober: &Prober,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Failure::new(Reason::Tls, format!("invalid TLS server name {host}: {e}")))?;
    tokio_rustls::TlsConnector::from(prober.tls())
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::new(Reason::Tls, format!("TLS handshake with {host}: {e}")))
}

fn request(svc: &Service) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = svc.method.clone();
    *req.uri_mut() = http::Uri::from(svc.target.path_and_query.clone());
    let headers = req.headers_mut();
    headers.insert(HOST, svc.target.authority.clone());
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    // Each check opens its own connection; tell the server not to keep it.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in &svc.headers {
        headers.insert(name, value.clone());
    }
    req
}

/// Reads the body, never more than `cap` bytes: a larger body fails with `body_too_large` as
/// soon as it shows (by `Content-Length` before reading anything, or while streaming).
async fn read_capped(response: Response<Incoming>, cap: usize) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            Reason::BodyTooLarge,
            format!("body is larger than max_body_bytes ({cap} bytes)"),
        )
    };
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(too_large());
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > cap {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn check_body(expect: &Expect, body: &[u8]) -> Result<(), Failure> {
    if let Some(needle) = &expect.body_contains {
        let found = body
            .windows(needle.len().max(1))
            .any(|w| w == needle.as_bytes());
        if !found {
            return Err(Failure::new(
                Reason::BodyMismatch,
                format!("body does not contain {:?}", shorten(needle)),
            ));
        }
    }
    if expect.json.is_empty() {
        return Ok(());
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(Reason::BodyMismatch, format!("body is not JSON: {e}")))?;
    for (pointer, want) in &expect.json {
        match doc.pointer(pointer) {
            None => {
                return Err(Failure::new(
                    Reason::BodyMismatch,
                    format!("JSON body has nothing at {pointer:?}"),
                ));
            }
            Some(got) if !json_eq(got, want) => {
                return Err(Failure::new(
                    Reason::BodyMismatch,
                    format!(
                        "JSON {pointer:?} is {}, expected {}",
                        shorten(&got.to_string()),
                        shorten(&want.to_string())
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// JSON equality where numbers compare by value: `1` in the config matches `1.0` in a body.
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// hyper's errors say little on their own; their source chain says what happened.
fn classify_hyper(e: &hyper::Error) -> Failure {
    let reason = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Reason::InvalidResponse
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || is_reset(e) {
        Reason::ConnectionClosed
    } else {
        Reason::InvalidResponse
    };
    Failure::new(reason, error_chain(e))
}

fn is_reset(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

fn expected(expect: &Expect) -> String {
    expect
        .status
        .iter()
        .map(|m| match m {
            crate::config::StatusMatcher::Code(c) => c.to_string(),
            crate::config::StatusMatcher::Class(c) => format!("{c}xx"),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

fn fmt_ms(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect_json(pairs: &[(&str, serde_json::Value)]) -> Expect {
        Expect {
            json: pairs
                .iter()
                .map(|(p, v)| (p.to_string(), v.clone()))
                .collect(),
            ..Expect::default()
        }
    }

    #[test]
    fn json_expectations_all_must_hold() {
        let e = expect_json(&[("/status", json!("ok")), ("/db/up", json!(true))]);
        assert!(check_body(&e, br#"{"status":"ok","db":{"up":true}}"#).is_ok());
        let f = check_body(&e, br#"{"status":"ok","db":{"up":false}}"#).expect_err("mismatch");
        assert_eq!(f.reason, Reason::BodyMismatch);
        assert!(f.message.contains("/db/up"), "{}", f.message);
    }

    #[test]
    fn a_missing_pointer_or_non_json_body_is_a_mismatch() {
        let e = expect_json(&[("/status", json!("ok"))]);
        let f = check_body(&e, br#"{"state":"ok"}"#).expect_err("missing");
        assert!(f.message.contains("nothing at"), "{}", f.message);
        let f = check_body(&e, b"<html>").expect_err("not json");
        assert!(f.message.contains("not JSON"), "{}", f.message);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(&json!(1.0), &json!(1)));
        assert!(json_eq(&json!({"a": [1]}), &json!({"a": [1.0]})));
        assert!(!json_eq(&json!(1), &json!("1")));
    }

    #[test]
    fn body_contains_is_a_substring_search() {
        let e = Expect {
            body_contains: Some("ok".into()),
            ..Expect::default()
        };
        assert!(check_body(&e, b"all ok here").is_ok());
        assert_eq!(
            check_body(&e, b"degraded").expect_err("absent").reason,
            Reason::BodyMismatch
        );
    }
}
