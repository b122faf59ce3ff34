//! The daemon's HTTP server (hyper 1.x): accepts connections on a given listener, serves the
//! [`api`](crate::api) on each, and drains gracefully on shutdown.
//!
//! It takes its listener and shutdown token as parameters, so tests bind `127.0.0.1:0` and need
//! no signals.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::{self, Api};

/// Connections served at once. Scrapers and on-call engineers need a handful; the bound keeps a
/// flood of idle connections from taking the descriptors the checks need.
pub const MAX_CONNECTIONS: usize = 256;

/// Time a client has to send a request's headers. Bounds slow (slowloris) clients.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests may finish after shutdown starts, before connections are dropped.
/// Short, so the process exits within 2 s of SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);

/// Largest request head accepted (hyper's minimum buffer is 8 KiB). Our endpoints take no
/// large headers; bigger requests are refused by hyper with 431.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Serves `api` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let api = api.clone();
        let service = service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api::handle(&api, req).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD_BYTES);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => debug!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => info!("shutdown grace period over; dropping open connections"),
    }
}
