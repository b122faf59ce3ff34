//! The HTTP(S) probe: connection, request, redirects, and the response checked against the
//! service's expectations, each failure mapped to its own [`Reason`].
//!
//! HTTP/1.1 goes through the lean client in [`super::http1`] on connections from the
//! [`Pool`](super::pool::Pool) (reused) or opened here; a server that picks `h2` by ALPN gets
//! [`super::http2`]. A check cancelled at the deadline drops its connection, which closes the
//! socket at once.

use bytes::Bytes;
use http::Method;
use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use tokio::time::Instant;
use url::Url;

use super::http1::{self, Connection, Head, Stream};
use super::http2::{self, H2Request, H2Response};
use super::pool::{Endpoint, Leased, Shape};
use super::progress::{Clock, Failure, Phase, Progress};
use super::{HttpVersion, Outcome, Prober, Reason, net, tls};
use crate::config::{ConnectionPolicy, Expect, ProbeKind, Service, Target, TlsClient};

/// Largest response head accepted. Health responses have a few small headers; a server that
/// sends a huge header block fails fast with `invalid_response` instead of costing memory.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most body bytes read and thrown away to keep a connection reusable when the check did not
/// need the body; a longer body is cheaper to drop with its connection.
const MAX_DISCARD_BYTES: usize = 64 * 1024;

pub(super) const USER_AGENT_VALUE: &str = concat!("healthsweep/", env!("CARGO_PKG_VERSION"));

/// Longest a check's connection is kept busy after its verdict, reading what is left of a body
/// so the connection can be reused. The verdict and the duration are taken before: a slow rest
/// of a body never turns a pass into a timeout, it only costs the connection.
const DRAIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let progress = Progress::default();
    let clock = Clock::start(svc, sweep_deadline);
    let mut rest = None;
    let result =
        tokio::time::timeout_at(clock.cutoff(), attempt(prober, svc, &progress, &mut rest)).await;
    let outcome = clock.outcome(svc, &progress, result);
    if let Some(Rest {
        response,
        body_read,
    }) = rest
    {
        let until = (Instant::now() + DRAIN_BUDGET).min(sweep_deadline);
        let _ = tokio::time::timeout_at(until, response.finish(prober, body_read)).await;
    }
    outcome
}

/// The final response of a check once its verdict is in, to be kept for reuse or closed.
struct Rest {
    response: Response,
    /// Its body has been read whole already.
    body_read: bool,
}

/// The check proper: the request, any redirects, the final response's expectations. The final
/// response goes to `rest`, for [`check`] to finish after the verdict.
async fn attempt(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
    rest: &mut Option<Rest>,
) -> Result<(), Failure> {
    let first = Hop {
        target: &svc.target,
        method: &svc.method,
        body: svc.body.as_ref(),
        same_origin: true,
    };
    let response = send(prober, svc, first, progress).await?;
    // Both boxed: a task's future is as large as its largest state for its whole life, and
    // these states come after the response has arrived, while the wait for it is where
    // thousands of checks spend their time.
    if svc.follow_redirects > 0 && is_redirect(response.status()) {
        return Box::pin(follow(prober, svc, response, progress, rest)).await;
    }
    Box::pin(evaluate(svc, response, progress, rest)).await
}

/// Follows redirects from `response`, up to the service's `follow_redirects`.
async fn follow(
    prober: &Prober,
    svc: &Service,
    mut response: Response,
    progress: &Progress,
    rest: &mut Option<Rest>,
) -> Result<(), Failure> {
    let mut current: Option<Redirect> = None;
    let mut followed = 0;
    loop {
        let location = match response.header("location") {
            Some(l) if is_redirect(response.status()) => l,
            _ => return evaluate(svc, response, progress, rest).await,
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
        response = send(prober, svc, next.hop(), progress).await?;
        current = Some(next);
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Checks the final response against the expectations, then hands it to `rest` (to be kept
/// or closed after the verdict).
async fn evaluate(
    svc: &Service,
    mut response: Response,
    progress: &Progress,
    rest: &mut Option<Rest>,
) -> Result<(), Failure> {
    let expect = &svc.expect;
    let status = response.status();
    let verdict = if !expect.status_ok_code(status) {
        Err(Failure::new(
            Reason::HttpStatus,
            format!("status {status}, expected {}", expected(expect)),
        ))
    } else if let Some(failure) = header_failure(&response, expect) {
        Err(failure)
    } else if expect.needs_body() {
        progress.enter(Phase::Body);
        // A body that cannot be read whole leaves the connection unusable: it is dropped.
        let body = response.read_body(svc.max_body_bytes).await?;
        *rest = Some(Rest {
            response,
            body_read: true,
        });
        return check_body(expect, &body);
    } else {
        Ok(())
    };
    *rest = Some(Rest {
        response,
        body_read: false,
    });
    verdict
}

/// The first `expect_header` entry the response does not satisfy, as a failure.
fn header_failure(response: &Response, expect: &Expect) -> Option<Failure> {
    for (name, want) in &expect.headers {
        let values = response.headers(name.as_str());
        if want.holds(&values) {
            continue;
        }
        let message = match values.as_slice() {
            [] => format!("response has no {name} header, expected {want}"),
            [one] => format!("header {name} is {}, expected {want}", shown(name, one)),
            [first, ..] => format!(
                "header {name} has {} values (first {}), expected {want}{}",
                values.len(),
                shown(name, first),
                if want.all { "" } else { " in one of them" }
            ),
        };
        return Some(Failure::new(Reason::HeaderMismatch, message));
    }
    None
}

/// A response header's value as a failure message may show it: headers that carry
/// credentials or sessions (`Set-Cookie`, `WWW-Authenticate`, anything named like a token or
/// key) are shown by length only, since `/status` and the logs may be read by more people than
/// the service's own clients.
fn shown(name: &http::HeaderName, value: &str) -> String {
    const SECRET_HEADERS: [&str; 6] = [
        "set-cookie",
        "cookie",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
    ];
    let n = name.as_str();
    let secret = SECRET_HEADERS.contains(&n)
        || ["token", "secret", "key", "session", "auth", "password"]
            .iter()
            .any(|w| n.contains(w));
    if secret {
        format!("({} bytes, not shown)", value.len())
    } else {
        format!("{:?}", shorten(value))
    }
}

/// One request of a check: where it goes and what it sends. Borrowed (from the service, or a
/// [`Redirect`]): cheap to hold in every check's future.
#[derive(Clone, Copy)]
struct Hop<'a> {
    target: &'a Target,
    method: &'a Method,
    body: Option<&'a Bytes>,
    /// Still the service's own origin: only then are its configured headers (any may be a
    /// secret) and its `server_name` used.
    same_origin: bool,
}

/// Where a redirect leads, owning what its [`Hop`] borrows.
struct Redirect {
    target: Target,
    method: Method,
    body: Option<Bytes>,
    url: Url,
    same_origin: bool,
}

impl Redirect {
    /// The request a `status` redirect to `location` asks for, after `previous` (`None`: the
    /// service's own request).
    fn to(
        svc: &Service,
        previous: Option<&Redirect>,
        location: &str,
        status: u16,
    ) -> Result<Redirect, Failure> {
        let bad = |why: &str| {
            Failure::new(
                Reason::InvalidResponse,
                format!("redirect with an unusable Location: {why}"),
            )
        };
        let base = match previous {
            Some(p) => p.url.clone(),
            None => Url::parse(&svc.url).map_err(|_| bad("the service URL"))?,
        };
        let mut url = base.join(location).map_err(|_| bad("not a URL"))?;
        let (target, kind) = crate::config::target_of(&url).map_err(|e| bad(&e))?;
        if kind != ProbeKind::Http {
            return Err(bad("not http or https"));
        }
        // Credentials never travel in a followed URL.
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let (method, body, was_same_origin) = match previous {
            Some(p) => (&p.method, p.body.as_ref(), p.same_origin),
            None => (&svc.method, svc.body.as_ref(), true),
        };
        let same_origin = was_same_origin
            && target.tls == svc.target.tls
            && target.host == svc.target.host
            && target.port == svc.target.port;
        // Like browsers and curl: 303 always, and 301/302 after a POST, continue with GET.
        let to_get = status == 303 || (matches!(status, 301 | 302) && *method == Method::POST);
        Ok(Redirect {
            target,
            method: if to_get { Method::GET } else { method.clone() },
            body: if to_get { None } else { body.cloned() },
            url,
            same_origin,
        })
    }

    fn hop(&self) -> Hop<'_> {
        Hop {
            target: &self.target,
            method: &self.method,
            body: self.body.as_ref(),
            same_origin: self.same_origin,
        }
    }
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
async fn send(
    prober: &Prober,
    svc: &Service,
    hop: Hop<'_>,
    progress: &Progress,
) -> Result<Response, Failure> {
    let reuse = svc.connection == ConnectionPolicy::Reuse;
    let client = if hop.target.tls {
        Some(prober.tls(svc).await?)
    } else {
        None
    };
    let shape = Shape::of(svc, hop.target, hop.same_origin, client.as_deref());
    let endpoint = Endpoint::of(&shape);
    let keep_raw = svc.follow_redirects > 0 || !svc.expect.headers.is_empty();
    let mut kept = if reuse {
        prober.pool.take(endpoint, &shape)
    } else {
        None
    };
    loop {
        let (mut leased, reused) = match kept.take() {
            Some(leased) => (leased, true),
            // Boxed: connecting is brief, and its state should not stay in every check's
            // future for the long wait for the response.
            None => match Box::pin(open(prober, svc, &shape, client.as_deref(), progress)).await? {
                Opened::H1(leased) => (leased, false),
                Opened::H2(stream, slot) => {
                    return Box::pin(send_h2(svc, hop, stream, slot, progress)).await;
                }
            },
        };
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
            // The server closed the kept connection as we sent on it: on to a new one.
            Err(e) if reused && e.before_response() => continue,
            Err(e) => return Err(classify(e)),
        }
    }
}

/// The request over HTTP/2, which the server chose by ALPN.
async fn send_h2(
    svc: &Service,
    hop: Hop<'_>,
    stream: Stream,
    slot: super::pool::Slot,
    progress: &Progress,
) -> Result<Response, Failure> {
    progress.reused(false);
    progress.enter(Phase::Request);
    let request = H2Request {
        authority: &hop.target.authority,
        path_and_query: hop.target.path_and_query.as_str(),
        method: hop.method,
        body: hop.body.cloned(),
        with_credentials: hop.same_origin,
    };
    let response = http2::send(stream, slot, svc, request).await?;
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
    H2(Stream, super::pool::Slot),
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
    let (tcp, slot) = net::connect(prober, svc, shape.target, progress).await?;
    let (stream, facts) = match (shape.target.tls, client) {
        (true, Some(client)) => {
            progress.enter(Phase::Tls);
            let (config, _) = client.for_origin(shape.same_origin);
            // Boxed like the caller: the handshake's state is large and brief.
            let (tls_stream, facts) =
                Box::pin(tls::handshake(config, shape.server_name(), tcp)).await?;
            progress.tls(facts.clone());
            if tls::negotiated_h2(&tls_stream) {
                return Ok(Opened::H2(Stream::Tls(Box::new(tls_stream)), slot));
            }
            (Stream::Tls(Box::new(tls_stream)), facts)
        }
        _ => (Stream::Plain(tcp), None),
    };
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

/// The request as bytes on the wire. Configured headers come last and replace the defaults
/// (`Host`, `User-Agent`, `Accept`, `Connection`) they name. They are sent only to the service's
/// own origin: any of them may be a secret (from the environment or a file), so a redirect to
/// another origin gets the defaults alone.
fn render_request(svc: &Service, hop: Hop<'_>, keep_alive: bool) -> Vec<u8> {
    let body: &[u8] = hop.body.map_or(&[], |b| b);
    let mut r = Vec::with_capacity(256 + body.len());
    r.extend_from_slice(hop.method.as_str().as_bytes());
    r.push(b' ');
    r.extend_from_slice(hop.target.path_and_query.as_str().as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        r.extend_from_slice(name);
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    };
    let own = |name: &http::HeaderName| hop.same_origin && svc.has_header(name);
    if !own(&HOST) {
        line(b"Host", hop.target.authority.as_bytes());
    }
    if !own(&USER_AGENT) {
        line(b"User-Agent", USER_AGENT_VALUE.as_bytes());
    }
    if !own(&ACCEPT) {
        line(b"Accept", b"*/*");
    }
    if !own(&CONNECTION) {
        line(
            b"Connection",
            if keep_alive { b"keep-alive" } else { b"close" },
        );
    }
    if hop.body.is_some() && !own(&CONTENT_LENGTH) {
        line(b"Content-Length", body.len().to_string().as_bytes());
    }
    if hop.same_origin {
        for (name, value) in svc.headers.iter() {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn check_body(expect: &Expect, body: &[u8]) -> Result<(), Failure> {
    if let Some(needle) = &expect.body_contains {
        // Two-way/SIMD search, linear in the body: a `windows()` scan is quadratic in the worst
        // case, and a hostile body of max_body_bytes would burn an async worker.
        if memchr::memmem::find(body, needle.as_bytes()).is_none() {
            return Err(Failure::new(
                Reason::BodyMismatch,
                format!("body does not contain {:?}", shorten(needle)),
            ));
        }
    }
    if let Some(re) = &expect.body_regex
        && !re.is_match(body)
    {
        return Err(Failure::new(
            Reason::BodyMismatch,
            format!("body does not match /{}/", shorten(re.as_str())),
        ));
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

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_text() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                Just("true".to_string()),
                "-?[0-9]{1,20}(\\.[0-9]{1,5})?(e[+-]?[0-9]{1,4})?",
                "\"[ -~]{0,10}\"",
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    proptest::collection::vec(("[a-z~/0-9]{0,4}", inner), 0..4).prop_map(|v| {
                        let fields: Vec<String> =
                            v.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                        format!("{{{}}}", fields.join(","))
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// JSON pointers of any shape (`~0`, `~1`, indices, empty segments) against bodies
            /// of any shape, valid JSON or not: a verdict, and every failure a body mismatch.
            #[test]
            fn json_expectations_give_a_verdict_for_any_body_and_pointer(
                body in prop_oneof![json_text(), "[ -~]{0,40}"],
                pointer in "(/[a-z~01/0-9]{0,4}){0,4}",
                want in json_text(),
            ) {
                let Ok(want) = serde_json::from_str::<serde_json::Value>(&want) else {
                    return Ok(());
                };
                let e = Expect {
                    json: vec![(pointer, want)],
                    body_contains: Some("a".into()),
                    ..Expect::default()
                };
                if let Err(f) = check_body(&e, body.as_bytes()) {
                    prop_assert_eq!(f.reason, Reason::BodyMismatch);
                }
            }
        }
    }
}
