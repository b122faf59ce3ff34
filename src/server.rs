//! The daemon's HTTP server (hyper 1.x): accepts connections on a given listener, serves the
//! [`api`] on each (over TLS when `[daemon.tls]` is set), and drains gracefully on
//! shutdown.
//!
//! It takes its listener and shutdown token as parameters, so tests bind `127.0.0.1:0` and need
//! no signals. Hardening against slow or abusive clients: at most [`MAX_CONNECTIONS`], the
//! longest really idle one (waiting for a request, or stalled on a client that does not read)
//! evicted when a new client needs room, and [`PROBE_CONNECTIONS`] more that answer only
//! `/healthz` and `/readyz` when every one is busy ([`limit`]); a request head (and a TLS handshake) must
//! arrive within [`HEADER_READ_TIMEOUT`], which also closes keep-alive connections idle that
//! long; a response that cannot be written for [`WRITE_TIMEOUT`] closes its connection
//! (`watched`); large responses are streamed, so a client that does not read holds one piece of
//! one (see [`crate::body`]); request heads are capped at [`MAX_REQUEST_HEAD_BYTES`]; the errors
//! hyper answers by itself get a JSON body like ours (`json_errors`).

mod json_errors;
pub mod limit;
pub mod tls;
mod watched;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{self, Api};
use json_errors::JsonErrors;
use limit::{Connections, Slot};
pub use watched::WRITE_TIMEOUT;
use watched::Watched;

/// Connections served at once (see [`crate::limits::SERVER_CONNECTIONS`], which the descriptor
/// budget accounts for).
pub const MAX_CONNECTIONS: usize = crate::limits::SERVER_CONNECTIONS;

/// Connections beyond [`MAX_CONNECTIONS`] that serve one probe each while every regular one is
/// busy (see [`limit`]).
pub const PROBE_CONNECTIONS: usize = crate::limits::SERVER_PROBE_CONNECTIONS;

/// Time a client has to send a request's head (and to finish a TLS handshake), counted from
/// when the server starts waiting for it: after accepting, and after each response on a
/// keep-alive connection. Bounds slowloris clients and idle keep-alive connections alike;
/// a scraper sends its head in microseconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long in-flight requests may finish after shutdown starts, before connections are dropped.
/// Short, so the process exits within 2 s of SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);

/// Largest request head accepted (hyper's minimum buffer is 8 KiB). Our endpoints take no
/// large headers; bigger requests are refused by hyper with 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Serves `api` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish for up to [`SHUTDOWN_GRACE`]. TLS is on if the config at start has `[daemon.tls]`.
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let connections = Connections::new(MAX_CONNECTIONS, PROBE_CONNECTIONS);
    let tls = api
        .snapshots
        .borrow()
        .config
        .daemon
        .tls
        .clone()
        .map(|t| tls::acceptor(&t, api.snapshots.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Admitted once accepted, so the connection just accepted is never the one evicted to
        // make room (see `limit`).
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = connections.admit() => slot,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(
            connection(stream, slot, tls.clone(), api.clone(), graceful.watcher())
                .instrument(info_span!("connection", %peer)),
        );
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => debug!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => info!("shutdown grace period over; dropping open connections"),
    }
}

/// Serves one connection until it ends, is evicted to make room, or outlives the shutdown grace.
async fn connection(
    stream: TcpStream,
    slot: Slot,
    tls: Option<TlsAcceptor>,
    api: Arc<Api>,
    graceful: Watcher,
) {
    let stream = Watched::new(stream, slot.writes());
    let serve = async {
        match tls {
            None => http(TokioIo::new(JsonErrors::new(stream)), &slot, api, graceful).await,
            Some(acceptor) => {
                match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        http(TokioIo::new(JsonErrors::new(tls)), &slot, api, graceful).await
                    }
                    Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                    Err(_) => debug!("TLS handshake timed out"),
                }
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = slot.evicted() => debug!("idle connection closed to make room for a new one"),
    }
}

/// HTTP/1.1 on an established (plain or TLS) stream.
async fn http<I>(io: TokioIo<I>, slot: &Slot, api: Arc<Api>, graceful: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = slot.activity();
    let probe = slot.is_probe();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let api = api.clone();
        let activity = activity.clone();
        let busy = activity.busy();
        async move {
            // Not a probe, on a probe slot: served if a regular slot has come free meanwhile.
            let response = if probe && !api::is_probe(req.uri().path()) && !activity.promote() {
                api::overloaded(MAX_CONNECTIONS)
            } else {
                api::handle(&api, req).await
            };
            // Busy until the response body has been written, not only until it is built.
            Ok::<_, Infallible>(response.map(|body| body.guarded(busy)))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        // A probe slot serves one request, so it is free again as soon as that is answered.
        .keep_alive(!probe);
    let connection = graceful.watch(builder.serve_connection(io, service));
    if let Err(e) = connection.await {
        debug!(error = %e, "connection ended with an error");
    }
}
