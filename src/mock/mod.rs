//! Mock downstream services on loopback, for the demo, the benchmark and tests.
//!
//! One [`MockServer`] answers on one port; paths choose the behaviour:
//!
//! | path | answer |
//! |---|---|
//! | `/health` (or any path ending in `/health`) | 200 `{"status":"ok"}` after the latency |
//! | `/fail/500` | 500 `{"status":"error"}` after the latency |
//! | `/fail/body` | 200 `{"status":"degraded"}` after the latency |
//! | `/hang` | never answers |
//!
//! `?delay=MS` on any path overrides the latency for that request.
//!
//! A [`MockServer::start_grpc`] server speaks gRPC over HTTP/2 without TLS instead: the
//! standard health check answers `SERVING` after the latency, on as many streams at once as
//! its clients open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod fleet;

/// A running mock server.
#[derive(Debug, Clone, Copy)]
pub struct MockServer {
    pub addr: SocketAddr,
}

impl MockServer {
    /// Binds `addr` (port 0 for any) and serves until `shutdown`.
    pub async fn start(
        addr: SocketAddr,
        latency: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<MockServer> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, latency, shutdown));
        Ok(MockServer { addr })
    }

    /// Like [`MockServer::start`], but a gRPC health server (h2c).
    pub async fn start_grpc(
        addr: SocketAddr,
        latency: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<MockServer> {
        MockServer::start_grpc_closing(addr, latency, None, shutdown).await
    }

    /// A gRPC health server that sends GOAWAY on each connection once `after` requests have
    /// come on it (the connection then closes when its streams are done), as a server being
    /// restarted or draining does.
    pub async fn start_grpc_closing(
        addr: SocketAddr,
        latency: Duration,
        after: Option<usize>,
        shutdown: CancellationToken,
    ) -> std::io::Result<MockServer> {
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve_grpc(listener, latency, after, shutdown));
        Ok(MockServer { addr })
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Accept-queue length asked for. Thousands of checks connect at the same instant; tokio's
/// default (1024) would overflow and drop SYNs, which costs the client a 1 s retransmit. The
/// kernel caps it at `net.core.somaxconn` (4096 by default).
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// `healthsweep mock-fleet`: `ports` mock servers on `ip` (the lean ones of [`fleet`], or
/// gRPC ones), their addresses printed as one JSON
/// line (`{"endpoints": ["127.0.0.1:40001", ...]}`), served until stdin closes, so the fleet
/// dies with the process that started it. With `dns`, also a [`run_dns`] server there, which
/// answers every name with `ip`.
pub async fn run_fleet(
    ip: std::net::IpAddr,
    ports: usize,
    latency: Duration,
    dns: Option<SocketAddr>,
    grpc: bool,
) -> std::io::Result<()> {
    let shutdown = CancellationToken::new();
    let mut endpoints = Vec::with_capacity(ports);
    for _ in 0..ports {
        let at = SocketAddr::new(ip, 0);
        let addr = if grpc {
            MockServer::start_grpc(at, latency, shutdown.clone())
                .await?
                .addr
        } else {
            let listener = listen(at)?;
            let addr = listener.local_addr()?;
            tokio::spawn(fleet::serve(listener, latency, shutdown.clone()));
            addr
        };
        endpoints.push(addr.to_string());
    }
    if let (Some(dns), std::net::IpAddr::V4(v4)) = (dns, ip) {
        let socket = tokio::net::UdpSocket::bind(dns).await?;
        // A real DNS server absorbs bursts; the default 200 KiB buffer of one mock socket would
        // drop most of a burst and measure the mock instead of the resolvers.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
        tokio::spawn(run_dns(socket, v4, DNS_TTL, shutdown.clone()));
    }
    println!("{}", serde_json::json!({ "endpoints": endpoints }));
    // Parent gone (stdin closed) or said anything: stop.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await;
    shutdown.cancel();
    Ok(())
}

/// TTL of the mock DNS answers: long enough that a caching resolver keeps them across sweeps.
const DNS_TTL: u32 = 300;

/// A DNS server for the benchmark: every `A` query is answered with `ip` (TTL `ttl`); other
/// types get no answer and an SOA saying so for `ttl`; names starting with `hang-` get no answer at all, as from a DNS
/// server that has gone away.
pub async fn run_dns(
    socket: tokio::net::UdpSocket,
    ip: std::net::Ipv4Addr,
    ttl: u32,
    shutdown: CancellationToken,
) {
    let mut buf = [0u8; 512];
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        if let Some(answer) = dns_answer(&buf[..len], ip, ttl) {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

/// The response to one DNS query, or `None` for a malformed query or a `hang-` name.
fn dns_answer(query: &[u8], ip: std::net::Ipv4Addr, ttl: u32) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut first_label = true;
    loop {
        let n = *query.get(i)? as usize;
        if n == 0 {
            break;
        }
        if first_label && query.get(i + 1..i + 1 + n)?.starts_with(b"hang-") {
            return None;
        }
        first_label = false;
        i += 1 + n;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let question = query.get(12..question_end)?;
    let is_a = qtype == 1;
    let mut r = Vec::with_capacity(question_end + 40);
    r.extend_from_slice(&query[0..2]);
    // QR, AA, RD copied from the query, RA; no error.
    r.extend_from_slice(&[0x84 | (query[2] & 0x01), 0x80]);
    // One question; one answer for A, else no answer and one authority record.
    r.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, u8::from(!is_a), 0, 0]);
    r.extend_from_slice(question);
    if is_a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip.octets());
    } else {
        // "No such record" (e.g. AAAA) with an SOA, as real servers answer (RFC 2308): its
        // minimum is how long a resolver caches the absence. Without it nothing is cached and
        // every lookup of both families goes back to the server.
        r.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 22, 0, 0]); // RDLENGTH; MNAME and RNAME are the root
        for field in [1, ttl, ttl, ttl, ttl] {
            // serial, refresh, retry, expire, minimum
            r.extend_from_slice(&field.to_be_bytes());
        }
    }
    Some(r)
}

/// The next connection `listener` accepts, or `None` once `shutdown` is cancelled. A failed
/// accept (e.g. out of file descriptors) is retried after a short pause rather than ending the
/// server or spinning.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((s, _)) => return Some(s),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn serve(listener: TcpListener, latency: Duration, shutdown: CancellationToken) {
    while let Some(stream) = next_connection(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, latency));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn answer<B>(
    req: Request<B>,
    latency: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("delay="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(latency, Duration::from_millis);
    let path = req.uri().path();
    let (status, body) = match path {
        "/hang" => std::future::pending().await,
        "/fail/500" => (StatusCode::INTERNAL_SERVER_ERROR, r#"{"status":"error"}"#),
        "/fail/body" => (StatusCode::OK, r#"{"status":"degraded"}"#),
        p if p.ends_with("/health") => (StatusCode::OK, r#"{"status":"ok"}"#),
        _ => (StatusCode::NOT_FOUND, r#"{"error":"no such mock path"}"#),
    };
    tokio::time::sleep(delay).await;
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

async fn serve_grpc(
    listener: TcpListener,
    latency: Duration,
    goaway_after: Option<usize>,
    shutdown: CancellationToken,
) {
    while let Some(stream) = next_connection(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let enough = std::sync::Arc::new(tokio::sync::Notify::new());
            let (seen, full) = (requests.clone(), enough.clone());
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if goaway_after.is_some_and(|after| n >= after) {
                    full.notify_one();
                }
                async move {
                    tokio::time::sleep(latency).await;
                    let serving = req.uri().path() == "/grpc.health.v1.Health/Check";
                    let mut r = Response::new(GrpcAnswer::new(serving));
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                    Ok::<_, Infallible>(r)
                }
            });
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(10_000)
                    .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = shutdown.cancelled() => return,
                () = enough.notified(), if goaway_after.is_some() => {}
            }
            // GOAWAY: streams already taken finish; new ones go elsewhere.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// A gRPC answer: `HealthCheckResponse { status: SERVING }` and `grpc-status: 0`, or for any
/// other method `grpc-status: 12` (UNIMPLEMENTED) alone.
struct GrpcAnswer {
    message: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl GrpcAnswer {
    fn new(serving: bool) -> Self {
        let mut trailers = http::HeaderMap::new();
        let status = if serving { "0" } else { "12" };
        trailers.insert("grpc-status", HeaderValue::from_static(status));
        GrpcAnswer {
            message: serving.then(|| Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1])),
            trailers: Some(trailers),
        }
    }
}

impl hyper::body::Body for GrpcAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = match self.message.take() {
            Some(m) => Some(hyper::body::Frame::data(m)),
            None => self.trailers.take().map(hyper::body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`, type `qtype`, as a stub resolver sends it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn the_mock_dns_answers_a_queries_and_ignores_hang_names() {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, 1);
        let q = query("svc-1.bench.test", 1);
        let r = dns_answer(&q, ip, 300).expect("answered");
        assert_eq!(&r[0..2], &[0x12, 0x34], "same id");
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
        let aaaa = dns_answer(&query("svc-1.bench.test", 28), ip, 300).expect("answered");
        assert_eq!(&aaaa[6..8], &[0, 0], "no AAAA answer");

        // A real DNS library reads both, and the "no AAAA" carries an SOA to cache it by.
        use hickory_resolver::proto::op::Message;
        use hickory_resolver::proto::rr::RData;
        let a = Message::from_vec(&r).expect("the A answer parses");
        assert_eq!(a.answers().len(), 1);
        assert_eq!(a.answers()[0].ttl(), 300);
        let none = Message::from_vec(&aaaa).expect("the AAAA answer parses");
        assert!(none.answers().is_empty());
        match none.name_servers().first().map(|r| r.data()) {
            Some(RData::SOA(soa)) => assert_eq!(soa.minimum(), 300),
            other => panic!("expected an SOA in the authority section, got {other:?}"),
        }
        assert!(dns_answer(&query("hang-svc-1.bench.test", 1), ip, 300).is_none());
        assert!(dns_answer(&q[..10], ip, 300).is_none());
    }
}
