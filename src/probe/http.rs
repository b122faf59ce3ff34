//! The HTTP(S) probe: resolve, connect, TLS, request, status, body, each step mapped to its own
//! failure [`Reason`].
//!
//! Connections come from the [`Pool`](super::pool::Pool) (reused) or are opened here, and are
//! spoken to with the lean client in [`super::http1`]; a check cancelled at the deadline drops
//! its connection, which closes the socket at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};
use std::time::SystemTime;

use http::Method;
use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http1::{self, Connection, Stream};
use super::pool::{Endpoint, Leased};
use super::{Outcome, Prober, Reason};
use crate::config::{ConnectionPolicy, Expect, Service};

/// Largest response head accepted. Health responses have a few small headers; a server that
/// sends a huge header block fails fast with `invalid_response` instead of costing memory.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most body bytes read and thrown away to keep a connection reusable when the check did not
/// need the body; a longer body is cheaper to drop with its connection.
const MAX_DISCARD_BYTES: usize = 64 * 1024;

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
    /// Waiting for a free connection slot (the open-file budget is in use).
    Slot = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Resolve,
            1 => Phase::Connect,
            2 => Phase::Tls,
            3 => Phase::Request,
            5 => Phase::Slot,
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
            Phase::Slot => "waiting for a free connection slot (open-file limit)",
        }
    }
}

/// What a check has got to so far. Atomics, not cells, because the check's future is `Send`.
#[derive(Default)]
struct Progress {
    phase: AtomicU8,
    status: AtomicU16,
    reused: AtomicBool,
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
    let mut outcome = match result {
        Ok(Ok(())) => Outcome {
            reason: None,
            http_status: None,
            at,
            duration,
            error: None,
            reused_connection: false,
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
    outcome.http_status = progress.status();
    outcome.reused_connection = progress.reused.load(Ordering::Relaxed);
    outcome
}

/// The check proper; `check` bounds it in time.
async fn attempt(prober: &Prober, svc: &Service, progress: &Progress) -> Result<(), Failure> {
    let reuse = svc.connection == ConnectionPolicy::Reuse;
    let endpoint = Endpoint::of(&svc.target);
    let pooled = if reuse {
        prober.pool.take(endpoint)
    } else {
        None
    };
    let (mut leased, reused) = match pooled {
        Some(l) => (l, true),
        // Boxed: connecting is brief, and its state should not stay in every check's future
        // for the long wait for the response (thousands of checks wait at once).
        None => (Box::pin(open(prober, svc, progress)).await?, false),
    };
    progress.reused.store(reused, Ordering::Relaxed);
    progress.enter(Phase::Request);
    let head_request = svc.method == Method::HEAD;
    let head = match exchange(&mut leased.connection, svc, reuse, head_request).await {
        Ok(h) => h,
        Err(e) if reused && e.before_response() => {
            // The server closed the idle connection as we sent on it: once more, on a new one.
            progress.reused.store(false, Ordering::Relaxed);
            drop(leased);
            leased = Box::pin(open(prober, svc, progress)).await?;
            progress.enter(Phase::Request);
            exchange(&mut leased.connection, svc, reuse, head_request)
                .await
                .map_err(classify)?
        }
        Err(e) => return Err(classify(e)),
    };
    progress.status.store(head.status, Ordering::Relaxed);
    let verdict = if !svc.expect.status_ok_code(head.status) {
        Err(Failure::new(
            Reason::HttpStatus,
            format!("status {}, expected {}", head.status, expected(&svc.expect)),
        ))
    } else if svc.expect.needs_body() {
        progress.enter(Phase::Body);
        let body = leased
            .connection
            .read_body(&head, svc.max_body_bytes)
            .await
            .map_err(classify)?;
        return check_body(&svc.expect, &body).inspect(|()| {
            if reuse && head.keep_alive {
                prober.pool.put(endpoint, leased);
            }
        });
    } else {
        Ok(())
    };
    if reuse
        && leased
            .connection
            .discard_body(&head, MAX_DISCARD_BYTES)
            .await
            .unwrap_or(false)
    {
        prober.pool.put(endpoint, leased);
    }
    verdict
}

/// A new connection for `svc`: a descriptor slot, then resolve, connect and (for https) TLS.
async fn open(prober: &Prober, svc: &Service, progress: &Progress) -> Result<Leased, Failure> {
    let target = &svc.target;
    progress.enter(Phase::Slot);
    let slot = prober.pool.slot().await;
    progress.enter(Phase::Resolve);
    let addrs = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => prober
            .resolve(svc.resolver, &target.host, target.port)
            .await
            .map_err(|e| Failure::new(Reason::Dns, format!("resolving {}: {e}", target.host)))?,
    };
    progress.enter(Phase::Connect);
    let tcp = connect_any(&addrs).await?;
    let stream = if target.tls {
        progress.enter(Phase::Tls);
        // Boxed: the handshake state is large, and only https checks should pay for it in
        // their future (thousands of checks are in flight at once).
        Stream::Tls(Box::new(
            Box::pin(tls_handshake(prober, &target.host, tcp)).await?,
        ))
    } else {
        Stream::Plain(tcp)
    };
    Ok(Leased {
        connection: Connection::new(stream),
        opened: Instant::now(),
        _slot: slot,
    })
}

/// Sends the request and reads the response head. The request is rendered here and dropped once
/// sent, so it is not held while waiting.
async fn exchange(
    connection: &mut Connection,
    svc: &Service,
    keep_alive: bool,
    head_request: bool,
) -> Result<http1::Head, http1::Error> {
    connection.send(&render_request(svc, keep_alive)).await?;
    connection
        .read_head(head_request, MAX_RESPONSE_HEAD_BYTES)
        .await
}

fn classify(e: http1::Error) -> Failure {
    use std::io::ErrorKind;
    let reason = match &e {
        http1::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Reason::ConnectionClosed,
            _ => Reason::InvalidResponse,
        },
        http1::Error::Closed(_) => Reason::ConnectionClosed,
        http1::Error::Parse(_) | http1::Error::HeadTooLarge(_) => Reason::InvalidResponse,
        http1::Error::BodyTooLarge(_) => Reason::BodyTooLarge,
    };
    Failure::new(reason, e.to_string())
}

/// The request as bytes on the wire. Configured headers come last and replace the defaults
/// (`Host`, `User-Agent`, `Accept`, `Connection`) they name.
fn render_request(svc: &Service, keep_alive: bool) -> Vec<u8> {
    let mut r = Vec::with_capacity(256);
    r.extend_from_slice(svc.method.as_str().as_bytes());
    r.push(b' ');
    r.extend_from_slice(svc.target.path_and_query.as_str().as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        r.extend_from_slice(name);
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    };
    if !svc.has_header(&HOST) {
        line(b"Host", svc.target.authority.as_bytes());
    }
    if !svc.has_header(&USER_AGENT) {
        line(b"User-Agent", USER_AGENT_VALUE.as_bytes());
    }
    if !svc.has_header(&ACCEPT) {
        line(b"Accept", b"*/*");
    }
    if !svc.has_header(&CONNECTION) {
        line(
            b"Connection",
            if keep_alive { b"keep-alive" } else { b"close" },
        );
    }
    for (name, value) in svc.headers.iter() {
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// Tries each address in turn until one connects; the error names the last one tried.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            // No TCP_NODELAY: a request is one write on a connection with nothing unacknowledged,
            // which Nagle never delays, so the extra syscall per connection would buy nothing.
            Ok(stream) => return Ok(stream),
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
