//! A connection's socket as the server writes to it: a write that cannot go out for
//! [`WRITE_TIMEOUT`] (the client stopped reading) fails the connection, and every blocked or
//! progressing write is reported to the connection table ([`super::limit::Writes`]), which
//! treats a long-blocked connection as idle.
//!
//! hyper has a timeout for reading a request head but none for writing a response, so without
//! this a client that asks for `/metrics` and never reads would hold its connection, its slot
//! and the snapshot its response is rendered from for as long as it likes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limit::Writes;

/// How long a response may wait for the client to read before the connection is closed.
/// Prometheus reads a scrape at once; ten seconds of a full window is a client that is gone or
/// hostile.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream whose writes time out when they cannot make progress.
pub struct Watched<S> {
    inner: S,
    writes: Writes,
    /// Armed while a write is blocked.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, writes: Writes) -> Self {
        Watched {
            inner,
            writes,
            stall: None,
        }
    }

    /// `result` of a write-side call, with blocking reported and timed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                self.stall = None;
                self.writes.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.writes.blocked();
                let stall = self.stall.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + WRITE_TIMEOUT))
                });
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the response",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

use std::future::Future as _;
