//! The HTTP(S) probe: connection, request, redirects, and the response checked against the
//! service's expectations, each failure mapped to its own [`Reason`].
//!
//! HTTP/1.1 goes through the lean client in [`super::http1`] on connections from the
//! [`Pool`](super::pool::Pool) (reused) or opened here; a server that picks `h2` by ALPN gets
//! [`super::http2`]. A check cancelled at the deadline drops its connection, which closes the
//! socket at once.

use bytes::Bytes;
use futures_util::future::Either;
use tokio::time::Instant;

use super::expect::{check_body, expected, header_failure};
use super::h2conn;
use super::http1::{self, Connection, Head, Stream, render_request};
use super::http2::{self, H2Response};
use super::pool::{Endpoint, Leased, Shape};
use super::progress::{Bounded, Clock, Failure, Phase, Progress};
use super::redirect::{Redirect, is_redirect};
use super::request::Hop;
use super::{HttpVersion, Outcome, Prober, Reason, net, tls};
use crate::config::{ConnectionPolicy, Service, TlsClient};

/// Largest response head accepted. Health responses have a few small headers; a server that
/// sends a huge header block fails fast with `invalid_response` instead of costing memory.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most body bytes read and thrown away to keep a connection reusable when the check did not
/// need the body; a longer body is cheaper to drop with its connection.
const MAX_DISCARD_BYTES: usize = 64 * 1024;

/// Longest a check's connection is kept busy after its verdict, reading what is left of a body
/// so the connection can be reused. The verdict and the duration are taken before: a slow rest
/// of a body never turns a pass into a timeout, it only costs the connection.
const DRAIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let progress = Progress::default();
    let clock = Clock::start(svc, sweep_deadline);
    let (result, rest) = match clock.bound(attempt(prober, svc, &progress)).await {
        Ok(Ok(Evaluated { verdict, rest })) => (Ok(verdict), Some(rest)),
        Ok(Err(failure)) => (Ok(Err(failure)), None),
        Err(cut) => (Err(cut), None),
    };
    let outcome = clock.outcome(svc, &progress, result);
    if let Some(Rest {
        response,
        body_read,
    }) = rest
    {
        let until = Instant::now() + DRAIN_BUDGET;
        // Boxed: reading the rest of a body and pooling the connection is over in one poll
        // mostly, and its state should not make every check's future larger for the wait
        // for the response.
        let _ = Bounded::new(
            Box::pin(response.finish(prober, body_read)),
            Some(until),
            sweep_deadline,
        )
        .await;
    }
    outcome
}

/// What a plain GET of `svc` answered (for an http_sd endpoint): status, content type, body.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// GETs `svc` once, within its own timeout, and reads the whole body (at most
/// `max_body_bytes`): not a check, so no expectations, only what came back.
pub(super) async fn fetch(prober: &Prober, svc: &Service) -> Result<Fetched, Failure> {
    let progress = Progress::default();
    let hop = Hop {
        target: &svc.target,
        method: &svc.method,
        body: None,
        same_origin: true,
    };
    let attempt = async {
        let mut response = send(prober, svc, hop, &progress, true).await?;
        progress.enter(Phase::Body);
        let body = response.read_body(svc.max_body_bytes).await?;
        Ok(Fetched {
            status: response.status(),
            content_type: response.header("content-type"),
            body,
        })
    };
    match tokio::time::timeout(svc.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            Reason::Timeout,
            format!(
                "timed out after {} while {}",
                humantime::format_duration(svc.timeout),
                progress.doing()
            ),
        )),
    }
}

/// A check's verdict on its final response, and the response (to be finished after the
/// verdict). An `Err` instead means there was no response to finish.
struct Evaluated {
    verdict: Result<(), Failure>,
    rest: Rest,
}

/// The final response of a check once its verdict is in, to be kept for reuse or closed.
struct Rest {
    response: Response,
    /// Its body has been read whole already.
    body_read: bool,
}

/// The check proper: the request, any redirects, the final response's expectations. The final
/// response comes back with the verdict, for [`check`] to finish after it.
async fn attempt(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
) -> Result<Evaluated, Failure> {
    let first = Hop {
        target: &svc.target,
        method: &svc.method,
        body: svc.extra.body.as_ref(),
        same_origin: true,
    };
    // Both boxed: a task's future is as large as its largest state for its whole life, and
    // these states come after the response has arrived, while the wait for it is where
    // thousands of checks spend their time. The response is a local of the block only: a
    // borrowed local keeps its place in the future to its scope's end, and here that place
    // would sit beside the wait for the response.
    let then = {
        let response = send(prober, svc, first, progress, false).await?;
        if svc.follow_redirects > 0 && is_redirect(response.status()) {
            Either::Left(Box::pin(follow(prober, svc, response, progress)))
        } else {
            Either::Right(Box::pin(evaluate(svc, response, progress)))
        }
    };
    then.await
}

/// Follows redirects from `response`, up to the service's `follow_redirects`.
async fn follow(
    prober: &Prober,
    svc: &Service,
    mut response: Response,
    progress: &Progress,
) -> Result<Evaluated, Failure> {
    let mut current: Option<Redirect> = None;
    let mut followed = 0;
    loop {
        let location = match response.header("location") {
            Some(l) if is_redirect(response.status()) => l,
            _ => return evaluate(svc, response, progress).await,
        };
        if followed == svc.follow_redirects {
            return Err(Failure::new(
                Reason::TooManyRedirects,
                format!(
                    "still redirected after {followed} redirect(s) (follow_redirects = {})",
                    svc.follow_redirects
                ),
            ));
        }
        let next = Redirect::to(svc, current.as_ref(), &location, response.status())?;
        response.finish(prober, false).await;
        followed += 1;
        progress.redirected();
        response = send(prober, svc, next.hop(), progress, false).await?;
        current = Some(next);
    }
}

/// Checks the final response against the expectations, and hands the response on with the
/// verdict (to be kept or closed after it).
async fn evaluate(
    svc: &Service,
    mut response: Response,
    progress: &Progress,
) -> Result<Evaluated, Failure> {
    let expect = &svc.expect;
    let status = response.status();
    let verdict = if !expect.status_ok_code(status) {
        Err(Failure::new(
            Reason::HttpStatus,
            format!("status {status}, expected {}", expected(expect)),
        ))
    } else if let Some(failure) = header_failure(expect, |name| response.headers(name)) {
        Err(failure)
    } else if expect.needs_body() {
        progress.enter(Phase::Body);
        // A body that cannot be read whole leaves the connection unusable: it is dropped.
        let body = response.read_body(svc.max_body_bytes).await?;
        return Ok(Evaluated {
            verdict: check_body(expect, &body),
            rest: Rest {
                response,
                body_read: true,
            },
        });
    } else {
        Ok(())
    };
    Ok(Evaluated {
        verdict,
        rest: Rest {
            response,
            body_read: false,
        },
    })
}

/// A response whose head has arrived.
enum Response {
    H1 {
        leased: Leased,
        head: Head,
        endpoint: Endpoint,
        reuse: bool,
    },
    H2(Box<H2Response>),
}

impl Response {
    fn status(&self) -> u16 {
        match self {
            Response::H1 { head, .. } => head.status,
            Response::H2(r) => r.status(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        match self {
            Response::H1 { head, .. } => head.header(name),
            Response::H2(r) => r.header(name),
        }
    }

    fn headers(&self, name: &str) -> Vec<String> {
        match self {
            Response::H1 { head, .. } => head.headers(name),
            Response::H2(r) => r.headers(name),
        }
    }

    async fn read_body(&mut self, cap: usize) -> Result<Bytes, Failure> {
        match self {
            Response::H1 { leased, head, .. } => leased
                .connection
                .read_body(head, cap)
                .await
                .map_err(classify),
            Response::H2(r) => r.read_body(cap).await,
        }
    }

    /// Keeps the connection for the next check when the policy and the response allow it
    /// (`body_read`: the body has been read already), else closes it.
    async fn finish(self, prober: &Prober, body_read: bool) {
        let Response::H1 {
            mut leased,
            head,
            endpoint,
            reuse,
        } = self
        else {
            return;
        };
        if !reuse || !head.keep_alive {
            return;
        }
        let clean = body_read
            || leased
                .connection
                .discard_body(&head, MAX_DISCARD_BYTES)
                .await
                .unwrap_or(false);
        if clean && leased.connection.is_clean() {
            prober.pool.put(endpoint, leased);
        }
    }
}

/// Sends `hop`'s request on a kept connection if there is one (once more on a new one if the
/// server had closed it), else on a new connection, and reads the response head. One `exchange`
/// for all three ways, so the future that waits for the response is held once, not three times.
/// The response's headers are kept when `headers` asks, or the service's checks need them.
async fn send(
    prober: &Prober,
    svc: &Service,
    hop: Hop<'_>,
    progress: &Progress,
    headers: bool,
) -> Result<Response, Failure> {
    let reuse = svc.connection == ConnectionPolicy::Reuse;
    let client = if hop.target.tls {
        Some(prober.tls(svc).await?)
    } else {
        None
    };
    let shape = Shape::of(svc, hop.target, hop.same_origin, client.as_deref());
    let endpoint = Endpoint::of(&shape);
    let keep_raw = headers || svc.follow_redirects > 0 || !svc.expect.headers.is_empty();
    // A server that chose HTTP/2 before: its shared connection, when there is a live one.
    if reuse
        && hop.target.tls
        && let Some(shared) = prober.h2.live(&shape)
    {
        progress.reused(true);
        progress.tls(shared.tls.clone());
        match Box::pin(send_h2(svc, hop, shared, progress)).await {
            Ok(r) => return Ok(r),
            Err(e) if e.retry => {}
            Err(e) => return Err(e.failure),
        }
    }
    // The borrows are passed in rather than captured: captured, they are places of their own
    // in every check's future (32 bytes more, measured with -Zprint-type-sizes).
    let new = |prober, svc, shape, client| {
        Box::pin(connect(prober, svc, hop, shape, client, progress, reuse))
    };
    // In a block of its own, so that the kept connection's place ends with it rather than
    // stay in the future beside `leased` (a future keeps a local's place to its scope's end).
    let (mut leased, mut reused) = {
        let kept = if reuse {
            prober.pool.take(endpoint, &shape)
        } else {
            None
        };
        match kept {
            Some(leased) => (leased, true),
            None => match new(prober, svc, &shape, client.as_deref()).await? {
                Connected::H1(leased) => (leased, false),
                Connected::H2(response) => return Ok(response),
            },
        }
    };
    // Nothing but the connection and what the request needs is held across the wait for the
    // response below: this state is in every check's future while thousands wait at once.
    loop {
        progress.reused(reused);
        progress.tls(leased.tls.clone());
        progress.enter(Phase::Request);
        match exchange(&mut leased.connection, svc, hop, reuse, keep_raw).await {
            Ok(head) => {
                progress.response(head.status, h1_version(&head));
                return Ok(Response::H1 {
                    leased,
                    head,
                    endpoint,
                    reuse,
                });
            }
            // The server closed the kept connection as we sent on it: on to a new one (the
            // old one let go first, so its slot is free for the new).
            Err(e) if reused && e.before_response() => {
                drop(leased);
                leased = match new(prober, svc, &shape, client.as_deref()).await? {
                    Connected::H1(leased) => leased,
                    Connected::H2(response) => return Ok(response),
                };
                reused = false;
            }
            Err(e) => return Err(classify(e)),
        }
    }
}

/// A new connection, or, when the server chose HTTP/2 on it, already the response.
enum Connected {
    H1(Leased),
    H2(Response),
}

/// Opens a new connection for `hop`; when the server chooses HTTP/2, shares the connection
/// (with `reuse`) and sends the request on it. Boxed by its caller: connecting is brief, and
/// its state should not stay in every check's future for the long wait for the response.
async fn connect(
    prober: &Prober,
    svc: &Service,
    hop: Hop<'_>,
    shape: &Shape<'_>,
    client: Option<&TlsClient>,
    progress: &Progress,
    reuse: bool,
) -> Result<Connected, Failure> {
    match open(prober, svc, shape, client, progress).await? {
        Opened::H1(leased) => Ok(Connected::H1(leased)),
        Opened::H2(stream, slot, facts) => {
            let shared = Box::pin(h2conn::handshake(stream, slot, facts)).await?;
            if reuse {
                prober.h2.keep(shape, &shared);
            }
            progress.reused(false);
            let response = Box::pin(send_h2(svc, hop, shared, progress)).await;
            response.map(Connected::H2).map_err(|e| e.failure)
        }
    }
}

/// The request over HTTP/2 (which the server chose by ALPN) on `connection`.
async fn send_h2(
    svc: &Service,
    hop: Hop<'_>,
    connection: h2conn::Shared,
    progress: &Progress,
) -> Result<Response, http2::SendError> {
    progress.enter(Phase::Request);
    let response = http2::send(connection, svc, hop).await?;
    progress.response(response.status(), HttpVersion::Http2);
    Ok(Response::H2(Box::new(response)))
}

fn h1_version(head: &Head) -> HttpVersion {
    if head.minor_version == 0 {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    }
}

/// A new connection, ready for a request.
enum Opened {
    H1(Leased),
    /// The server chose HTTP/2.
    H2(
        Stream,
        super::pool::Slot,
        Option<std::sync::Arc<super::TlsFacts>>,
    ),
}

/// A new connection of `shape`: TCP, then (for https, with `client`) TLS, which may choose
/// HTTP/2. The client's identity is presented to the service's own origin only.
async fn open(
    prober: &Prober,
    svc: &Service,
    shape: &Shape<'_>,
    client: Option<&TlsClient>,
    progress: &Progress,
) -> Result<Opened, Failure> {
    let (stream, slot, facts) =
        Box::pin(net::open_stream(prober, svc, shape, client, progress)).await?;
    if net::is_h2(&stream) {
        return Ok(Opened::H2(stream, slot, facts));
    }
    Ok(Opened::H1(Leased {
        connection: Connection::new(stream),
        opened: Instant::now(),
        _slot: slot,
        tls: facts,
        shape: Box::new(shape.key()),
    }))
}

/// Sends the request and reads the response head. The request is rendered here and dropped once
/// sent, so it is not held while waiting.
async fn exchange(
    connection: &mut Connection,
    svc: &Service,
    hop: Hop<'_>,
    keep_alive: bool,
    keep_raw: bool,
) -> Result<Head, http1::Error> {
    connection
        .send(&render_request(svc, hop, keep_alive))
        .await?;
    connection
        .read_head(hop.method, MAX_RESPONSE_HEAD_BYTES, keep_raw)
        .await
}

fn classify(e: http1::Error) -> Failure {
    use std::io::ErrorKind;
    if let http1::Error::Io(io) = &e
        && let Some(f) = tls::after_handshake(io)
    {
        return f;
    }
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
