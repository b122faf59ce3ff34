//! Shared HTTP/2 connections, for gRPC: one connection per connection shape (the pool rule of
//! [`super::pool`]: endpoint, address family, resolver, TLS name and client fingerprint), used
//! by every check of that shape at once, each on a stream of its own. hyper's client queues a
//! request until the server's `SETTINGS_MAX_CONCURRENT_STREAMS` leave room for it, so a
//! thousand checks on one endpoint need one connection, not a thousand.
//!
//! A connection that has closed (GOAWAY, a reset, the server gone) is noticed before it is
//! handed out and replaced; a request the server refused before processing it (a GOAWAY that
//! came meanwhile) is sent once more on a new connection, so checks that had not started on a
//! dying connection do not fail for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use super::http1::Stream;
use super::pool::{Endpoint, Shape, ShapeKey, Slot};
use super::progress::{Failure, Phase, Progress};
use super::{Prober, Reason, TlsFacts, net};
use crate::config::{Service, TlsClient};

/// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A live HTTP/2 connection, shared.
#[derive(Clone)]
pub struct Shared {
    pub sender: SendRequest<Full<Bytes>>,
    /// What the TLS handshake showed, reported by every check on the connection.
    pub tls: Option<Arc<TlsFacts>>,
    /// Set when a request on it went unanswered (its check ran out of time) and nothing has
    /// ever been answered on it: the server may never speak on this connection, so the next
    /// check opens a new one. A slow answer on a connection that works does not count.
    suspect: Arc<std::sync::atomic::AtomicBool>,
    /// Whether any response has come on it.
    answered: Arc<std::sync::atomic::AtomicBool>,
    _task: Arc<Task>,
}

impl Shared {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && !self.suspect.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A guard for one request: unless [`Pending::answered`] is called, dropping it (the check
    /// timed out or was cancelled) marks the connection suspect.
    pub fn pending(&self) -> Pending {
        Pending(Some((self.suspect.clone(), self.answered.clone())))
    }

    /// Whether `other` is this very connection.
    pub fn same(&self, other: &Shared) -> bool {
        Arc::ptr_eq(&self._task, &other._task)
    }
}

/// See [`Shared::pending`].
pub struct Pending(
    Option<(
        Arc<std::sync::atomic::AtomicBool>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
);

impl Pending {
    pub fn answered(mut self) {
        if let Some((_, answered)) = self.0.take() {
            answered.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some((suspect, answered)) = self.0.take()
            && !answered.load(std::sync::atomic::Ordering::Relaxed)
        {
            suspect.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The connection's task, and the descriptor slot it holds: both go with the last handle.
struct Task {
    handle: JoinHandle<()>,
    _slot: Slot,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One connection per shape, each opened by one check while the others of its shape wait.
#[derive(Default)]
pub struct Connections {
    by_shape: Mutex<HashMap<ShapeKey, (Endpoint, Cell)>>,
}

/// Where a shape's connection is kept; a check opening it holds the lock meanwhile.
type Cell = Arc<tokio::sync::Mutex<Option<Shared>>>;

impl Connections {
    /// A connection for `svc`'s own origin: the live one of its shape, or a new one.
    /// `failed` is one a request just failed on: it is replaced, unless another check has
    /// replaced it meanwhile (that one is used then).
    pub async fn get(
        &self,
        prober: &Prober,
        svc: &Service,
        client: Option<&TlsClient>,
        progress: &Progress,
        failed: Option<&Shared>,
    ) -> Result<(Shared, bool), Failure> {
        let shape = Shape::of(svc, &svc.target, true, client);
        let cell = {
            let mut map = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(shape.key())
                .or_insert_with(|| (Endpoint::of(&shape), Cell::default()))
                .1
                .clone()
        };
        let mut slot = cell.lock().await;
        let is_failed = |c: &Shared| failed.is_some_and(|f| f.same(c));
        if let Some(live) = slot.as_ref().filter(|c| !is_failed(c) && c.usable()) {
            return Ok((live.clone(), true));
        }
        *slot = None;
        let opened = open(prober, svc, &shape, client, progress).await?;
        *slot = Some(opened.clone());
        Ok((opened, false))
    }

    /// The live connection of `shape`, if there is one and nobody is opening it right now
    /// (for HTTPS checks, which only learn that a server speaks HTTP/2 from their handshake).
    pub fn live(&self, shape: &Shape<'_>) -> Option<Shared> {
        let map = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
        let (_, cell) = map.get(&shape.key())?;
        let slot = cell.try_lock().ok()?;
        slot.as_ref().filter(|c| c.usable()).cloned()
    }

    /// Keeps `shared` as `shape`'s connection, unless a live one is there already.
    pub fn keep(&self, shape: &Shape<'_>, shared: &Shared) {
        let cell = {
            let mut map = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(shape.key())
                .or_insert_with(|| (Endpoint::of(shape), Cell::default()))
                .1
                .clone()
        };
        if let Ok(mut slot) = cell.try_lock()
            && !slot.as_ref().is_some_and(Shared::usable)
        {
            *slot = Some(shared.clone());
        }
    }

    /// Open connections (one being opened right now is not counted yet).
    pub fn open_count(&self) -> usize {
        let map = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|(_, c)| {
                c.try_lock()
                    .map(|s| s.as_ref().is_some_and(Shared::usable))
                    .unwrap_or(false)
            })
            .count()
    }

    /// Closes the connections of endpoints `keep` says no to (no service uses them now), and
    /// lets go of dead ones (closed, or suspect), so their descriptor slots go back to the
    /// budget now rather than when their shape is next checked.
    pub fn retain(&self, mut keep: impl FnMut(Endpoint) -> bool) {
        let mut map = self.by_shape.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (e, cell)| {
            if !keep(*e) {
                return false;
            }
            // A cell in use (a check opening its connection) stays.
            match cell.try_lock() {
                Ok(mut slot) => {
                    if !slot.as_ref().is_some_and(Shared::usable) {
                        *slot = None;
                    }
                    true
                }
                Err(_) => true,
            }
        });
    }
}

async fn open(
    prober: &Prober,
    svc: &Service,
    shape: &Shape<'_>,
    client: Option<&TlsClient>,
    progress: &Progress,
) -> Result<Shared, Failure> {
    let (stream, slot, facts) =
        Box::pin(net::open_stream(prober, svc, shape, client, progress)).await?;
    if shape.target.tls && !net::is_h2(&stream) {
        return Err(Failure::new(
            Reason::TlsHandshake,
            "the server did not choose HTTP/2 (h2) by ALPN, which gRPC needs",
        ));
    }
    progress.enter(Phase::Request);
    handshake(stream, slot, facts).await
}

/// An HTTP/2 connection on `stream` (TLS with `h2` chosen, or h2c), holding `slot`.
pub async fn handshake(
    stream: Stream,
    slot: Slot,
    facts: Option<Arc<TlsFacts>>,
) -> Result<Shared, Failure> {
    // Pings while idle: a connection dropped on the way (a NAT or load balancer forgetting it)
    // is noticed and replaced before the next sweep sends into it.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::new(Reason::ConnectionClosed, format!("HTTP/2 handshake: {e}")))?;
    let handle = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Shared {
        sender,
        tls: facts,
        suspect: Arc::default(),
        answered: Arc::default(),
        _task: Arc::new(Task {
            handle,
            _slot: slot,
        }),
    })
}

/// Whether `e` is the server refusing the stream before processing it (safe to send again).
pub fn refused(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away();
        }
        source = s.source();
    }
    e.is_canceled()
}
