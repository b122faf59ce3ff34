//! Hostile downstream services on loopback: one [`HostileServer`] per misbehaviour, for the
//! robustness tests and the soak.
//!
//! A monitor is needed most when the services it watches misbehave, so each of these does one
//! bad thing for real, at the TCP level (raw sockets, not an HTTP library that would refuse to
//! misbehave). Every connection task ends by itself: when the peer goes away, after
//! [`MAX_HOLD`], or on shutdown. Each server counts the connections it has open, so a test can
//! see from the outside whether the prober closed its sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest a hostile server keeps one connection, whatever the client does: every task ends by
/// itself even if the client never closes.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// Bytes of request head read before acting; a probe's request is a few hundred.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// One misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepts the connection and never sends a byte.
    Silent,
    /// Sends a 200 head promising a body, then nothing.
    StallBody,
    /// Sends a valid response one byte a second.
    Trickle,
    /// A 200 with a chunked body that never ends.
    EndlessBody,
    /// A 200 declaring a 10 GiB `Content-Length`, then streaming it.
    HugeBody,
    /// Binary garbage instead of HTTP, and the connection kept open.
    Garbage,
    /// A 200 head and part of the body, then a TCP reset (RST, not FIN).
    ResetMidResponse,
    /// Closes the connection as soon as it is accepted.
    CloseAtOnce,
    /// A 302 to the very same URL, every time.
    RedirectLoop,
    /// A 200 whose header block is about 1 MiB.
    HugeHeaders,
    /// Accepts TCP for an `https` URL and never answers the TLS ClientHello.
    TlsStall,
    /// Answers a TLS ClientHello with plain HTTP (an http server on an https URL).
    TlsPlaintext,
}

impl Behaviour {
    /// Every behaviour, for tests that exercise them all.
    pub const ALL: [Behaviour; 12] = [
        Behaviour::Silent,
        Behaviour::StallBody,
        Behaviour::Trickle,
        Behaviour::EndlessBody,
        Behaviour::HugeBody,
        Behaviour::Garbage,
        Behaviour::ResetMidResponse,
        Behaviour::CloseAtOnce,
        Behaviour::RedirectLoop,
        Behaviour::HugeHeaders,
        Behaviour::TlsStall,
        Behaviour::TlsPlaintext,
    ];

    /// A short kebab-case name, usable as a service name.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::StallBody => "stall-body",
            Behaviour::Trickle => "trickle",
            Behaviour::EndlessBody => "endless-body",
            Behaviour::HugeBody => "huge-body",
            Behaviour::Garbage => "garbage",
            Behaviour::ResetMidResponse => "reset-mid-response",
            Behaviour::CloseAtOnce => "close-at-once",
            Behaviour::RedirectLoop => "redirect-loop",
            Behaviour::HugeHeaders => "huge-headers",
            Behaviour::TlsStall => "tls-stall",
            Behaviour::TlsPlaintext => "tls-plaintext",
        }
    }

    /// Whether the URL to this server is `https`.
    pub fn is_tls(self) -> bool {
        matches!(self, Behaviour::TlsStall | Behaviour::TlsPlaintext)
    }
}

/// A running hostile server.
#[derive(Debug, Clone)]
pub struct HostileServer {
    pub addr: std::net::SocketAddr,
    pub behaviour: Behaviour,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl HostileServer {
    /// Binds a free port on 127.0.0.1 and misbehaves on it until `shutdown`.
    pub async fn start(
        behaviour: Behaviour,
        shutdown: CancellationToken,
    ) -> std::io::Result<HostileServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let server = HostileServer {
            addr: listener.local_addr()?,
            behaviour,
            open: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(accept_loop(listener, server.clone(), shutdown));
        Ok(server)
    }

    /// The URL a service points at.
    pub fn url(&self) -> String {
        let scheme = if self.behaviour.is_tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/health", self.addr)
    }

    /// Connections open right now. A prober that closes its sockets brings this back to 0.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, server: HostileServer, shutdown: CancellationToken) {
    while let Some(stream) = crate::mock::next_connection(&listener, &shutdown).await {
        server.accepted.fetch_add(1, Ordering::Relaxed);
        server.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(server.open.clone());
        let behaviour = server.behaviour;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(MAX_HOLD) => {}
                _ = misbehave(behaviour, stream) => {}
            }
        });
    }
}

/// Decrements the open-connection count when the connection task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Does the behaviour on one connection. Returns when the peer has gone (or on a write error);
/// the caller bounds it in time.
async fn misbehave(behaviour: Behaviour, mut s: TcpStream) -> std::io::Result<()> {
    match behaviour {
        Behaviour::CloseAtOnce => return Ok(()),
        Behaviour::Silent | Behaviour::TlsStall => return drain_until_closed(&mut s).await,
        _ => {}
    }
    let head = read_request_head(&mut s).await?;
    match behaviour {
        Behaviour::StallBody => {
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\nok",
            )
            .await?;
            drain_until_closed(&mut s).await
        }
        Behaviour::Trickle => {
            let response = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
            for byte in response {
                s.write_all(&[*byte]).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        }
        Behaviour::EndlessBody => {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let chunk = chunk_of(16 * 1024);
            loop {
                s.write_all(&chunk).await?;
            }
        }
        Behaviour::HugeBody => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\n")
                .await?;
            let block = vec![b'x'; 16 * 1024];
            loop {
                s.write_all(&block).await?;
            }
        }
        Behaviour::Garbage => {
            s.write_all(b"\x00\xff\x13\x37 this is not HTTP \xde\xad\xbe\xef\r\n\r\n")
                .await?;
            drain_until_closed(&mut s).await
        }
        Behaviour::ResetMidResponse => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"status\":")
                .await?;
            s.flush().await?;
            // Let the head and the first bytes arrive before the reset, so the client is
            // mid-body when it comes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SO_LINGER 0: close() sends RST instead of FIN.
            s.set_zero_linger()?;
            drop(s);
            Ok(())
        }
        Behaviour::RedirectLoop => {
            let path = request_path(&head).unwrap_or("/");
            let response = format!(
                "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(response.as_bytes()).await?;
            drain_until_closed(&mut s).await
        }
        Behaviour::HugeHeaders => {
            s.write_all(b"HTTP/1.1 200 OK\r\n").await?;
            let line = format!("X-Padding: {}\r\n", "a".repeat(1000));
            for _ in 0..1000 {
                s.write_all(line.as_bytes()).await?;
            }
            s.write_all(b"Content-Length: 2\r\n\r\nok").await?;
            drain_until_closed(&mut s).await
        }
        Behaviour::TlsPlaintext => {
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            Ok(())
        }
        Behaviour::Silent | Behaviour::TlsStall | Behaviour::CloseAtOnce => Ok(()),
    }
}

/// One chunk of a chunked body: `size CRLF data CRLF`.
fn chunk_of(len: usize) -> Vec<u8> {
    let mut chunk = format!("{len:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', len));
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// Reads until the end of the request head (or whatever a TLS client sends first).
async fn read_request_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        // A TLS ClientHello has no CRLFCRLF; its first record is enough to act on.
        if head.windows(4).any(|w| w == b"\r\n\r\n")
            || head.first() == Some(&0x16)
            || head.len() >= MAX_REQUEST_HEAD
        {
            return Ok(head);
        }
    }
}

/// The path of `GET /path HTTP/1.1`.
fn request_path(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split(' ').nth(1)
}

/// Reads and discards until the peer closes (or resets) the connection.
async fn drain_until_closed(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_usable_as_service_names() {
        let mut seen = std::collections::HashSet::new();
        for b in Behaviour::ALL {
            assert!(seen.insert(b.name()), "duplicate {}", b.name());
            assert!(b.name().chars().all(|c| c.is_ascii_lowercase() || c == '-'));
        }
    }

    #[test]
    fn the_request_path_is_the_second_word_of_the_request_line() {
        assert_eq!(
            request_path(b"GET /a/health HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/a/health")
        );
        assert_eq!(request_path(b"\x16\x03\x01"), None);
    }

    #[test]
    fn a_chunk_is_framed_with_its_hex_size() {
        let c = chunk_of(16);
        assert!(c.starts_with(b"10\r\n"));
        assert!(c.ends_with(b"\r\n"));
        assert_eq!(c.len(), 4 + 16 + 2);
    }
}
