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
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, latency, shutdown));
        Ok(MockServer { addr })
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve(listener: TcpListener, latency: Duration, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
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
