//! A lean HTTP/1.1 client for health checks: one request at a time on a connection, the response
//! head parsed with `httparse` (the parser hyper uses), the body read only as far as a check
//! needs and never past a cap.
//!
//! Why not hyper's client: it keeps a fixed 8 KiB write buffer, an 8 KiB read buffer and a task
//! per connection. A sweep holds thousands of connections open at once (10,000 services answering
//! in 200 ms are all in flight together), and those buffers made a 10,000-service sweep cost
//! 228 MiB; here a connection holds one buffer that starts at [`INITIAL_BUFFER`] bytes and grows
//! only for a response that needs it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};

use super::request::{Hop, USER_AGENT_VALUE};
use crate::config::Service;

/// Read buffer to start with: a typical health response (status line, a few headers, a small
/// JSON body) fits; a larger one grows it by doubling.
const INITIAL_BUFFER: usize = 512;

/// Headers parsed at most in one response head.
const MAX_HEADERS: usize = 100;

/// Interim (1xx) responses skipped at most before the real one. A server that sends `100
/// Continue` forever would otherwise keep a check busy parsing until its timeout.
const MAX_INTERIM_RESPONSES: usize = 16;

/// The byte stream a check talks over: plain TCP or TLS on TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath, for liveness checks on idle connections.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What went wrong talking HTTP/1.1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection before the response was complete.
    #[error("connection closed by the server {0}")]
    Closed(&'static str),
    #[error("invalid HTTP response: {0}")]
    Parse(String),
    #[error("response head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("body is larger than max_body_bytes ({0} bytes)")]
    BodyTooLarge(usize),
}

impl Error {
    /// Whether nothing of a response arrived: on a reused connection that means the server had
    /// closed it while idle, and the request can be retried on a new one.
    pub fn before_response(&self) -> bool {
        match self {
            Error::Closed(when) => *when == BEFORE_RESPONSE,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

const BEFORE_RESPONSE: &str = "before sending a response";

/// How the body of a response is delimited (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response's body.
    pub keep_alive: bool,
    /// `HTTP/1.x`: 0 or 1.
    pub minor_version: u8,
    /// The raw head, kept only when asked for (a check that looks at headers).
    pub raw: Option<Bytes>,
}

impl Head {
    /// The value of header `name` (the first, if repeated), from the raw head.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every value of header `name`, in the order the server sent them, from the raw head.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let Some(raw) = self.raw.as_ref() else {
            return Vec::new();
        };
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut storage);
        if r.parse(raw).is_err() {
            return Vec::new();
        }
        r.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect()
    }
}

/// One HTTP/1.1 connection: the stream and the bytes read from it but not consumed yet.
pub struct Connection {
    stream: Stream,
    buf: BytesMut,
}

impl Connection {
    pub fn new(stream: Stream) -> Self {
        Connection {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Sends a complete, already serialized request.
    pub async fn send(&mut self, request: &[u8]) -> Result<(), Error> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads the response head (skipping `1xx` interim responses), at most `max_head` bytes;
    /// with `keep_raw`, the head's bytes stay available for [`Head::header`].
    pub async fn read_head(
        &mut self,
        method: &http::Method,
        max_head: usize,
        keep_raw: bool,
    ) -> Result<Head, Error> {
        for _ in 0..=MAX_INTERIM_RESPONSES {
            let parsed = loop {
                if let Some(p) = parse_head(&self.buf, method)? {
                    break p;
                }
                if self.buf.len() >= max_head {
                    return Err(Error::HeadTooLarge(max_head));
                }
                let when = if self.buf.is_empty() {
                    BEFORE_RESPONSE
                } else {
                    "in the middle of the response head"
                };
                if self.fill(max_head).await? == 0 {
                    return Err(Error::Closed(when));
                }
            };
            if (100..200).contains(&parsed.status) && parsed.status != 101 {
                self.buf.advance(parsed.len);
                continue;
            }
            let raw = if keep_raw {
                Some(Bytes::copy_from_slice(&self.buf[..parsed.len]))
            } else {
                None
            };
            self.buf.advance(parsed.len);
            return Ok(Head {
                status: parsed.status,
                framing: parsed.framing,
                keep_alive: parsed.keep_alive,
                minor_version: parsed.minor_version,
                raw,
            });
        }
        Err(Error::Parse(format!(
            "more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"
        )))
    }

    /// Reads the whole body; more than `cap` bytes fails with [`Error::BodyTooLarge`] as soon as
    /// it shows (from `Content-Length`, before reading anything).
    pub async fn read_body(&mut self, head: &Head, cap: usize) -> Result<Bytes, Error> {
        if let Framing::Length(n) = head.framing
            && n > cap as u64
        {
            return Err(Error::BodyTooLarge(cap));
        }
        let mut body = BytesMut::new();
        self.body(head.framing, cap, |chunk| {
            if body.len() + chunk.len() > cap {
                return Err(Error::BodyTooLarge(cap));
            }
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(body.freeze())
    }

    /// Reads and discards the body so the connection can carry another request; gives up (and
    /// answers `false`: do not reuse) past `limit` bytes rather than read a large body for nothing.
    pub async fn discard_body(&mut self, head: &Head, limit: usize) -> Result<bool, Error> {
        match head.framing {
            Framing::UntilClose => return Ok(false),
            Framing::Length(n) if n > limit as u64 => return Ok(false),
            _ => {}
        }
        let mut seen = 0usize;
        let result = self
            .body(head.framing, limit, |chunk| {
                seen += chunk.len();
                if seen > limit {
                    Err(Error::BodyTooLarge(limit))
                } else {
                    Ok(())
                }
            })
            .await;
        match result {
            Ok(()) => Ok(head.keep_alive),
            Err(Error::BodyTooLarge(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lets go of the read buffer while the connection sits idle (a pool may hold thousands).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Whether there is nothing left over from the last response (a reusable connection must be
    /// clean).
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }

    /// Feeds the body's data to `sink`, as framed by `framing`.
    async fn body(
        &mut self,
        framing: Framing,
        read_limit: usize,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.buf.is_empty() && self.fill(read_limit).await? == 0 {
                        return Err(Error::Closed("in the middle of the body"));
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    sink(&self.buf[..take])?;
                    self.buf.advance(take);
                    left -= take as u64;
                }
                Ok(())
            }
            Framing::UntilClose => loop {
                if !self.buf.is_empty() {
                    sink(&self.buf)?;
                    self.buf.clear();
                }
                if self.fill(read_limit).await? == 0 {
                    return Ok(());
                }
            },
            // Boxed: chunked decoding is the rare, larger state machine; keep it out of every
            // check's future.
            Framing::Chunked => Box::pin(self.chunked(read_limit, sink)).await,
        }
    }

    async fn chunked(
        &mut self,
        read_limit: usize,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > 1024 {
                            return Err(Error::Parse("chunk size line too long".into()));
                        }
                        if self.fill(read_limit).await? == 0 {
                            return Err(Error::Closed("in the middle of a chunked body"));
                        }
                    }
                    Err(_) => return Err(Error::Parse("invalid chunk size".into())),
                }
            };
            if size == 0 {
                return self.trailers().await;
            }
            let mut left = size;
            while left > 0 {
                if self.buf.is_empty() && self.fill(read_limit).await? == 0 {
                    return Err(Error::Closed("in the middle of a chunk"));
                }
                let take = (self.buf.len() as u64).min(left) as usize;
                sink(&self.buf[..take])?;
                self.buf.advance(take);
                left -= take as u64;
            }
            self.expect_crlf().await?;
        }
    }

    /// Skips the trailer section after the last chunk, up to the empty line.
    async fn trailers(&mut self) -> Result<(), Error> {
        loop {
            match self.buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(());
                }
                Some(i) => self.buf.advance(i + 2),
                None => {
                    if self.buf.len() > 8 * 1024 {
                        return Err(Error::Parse("trailer section too large".into()));
                    }
                    if self.fill(8 * 1024).await? == 0 {
                        return Err(Error::Closed("in the middle of the trailers"));
                    }
                }
            }
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), Error> {
        while self.buf.len() < 2 {
            if self.fill(2).await? == 0 {
                return Err(Error::Closed("in the middle of a chunked body"));
            }
        }
        if &self.buf[..2] != b"\r\n" {
            return Err(Error::Parse("chunk data not followed by CRLF".into()));
        }
        self.buf.advance(2);
        Ok(())
    }

    /// Reads more bytes into the buffer; the buffer grows (doubling) only while it is full and
    /// below `limit`. Returns 0 at end of stream.
    async fn fill(&mut self, limit: usize) -> Result<usize, Error> {
        if self.buf.capacity() == 0
            && let Stream::Plain(tcp) = &self.stream
        {
            // Most of a check is spent waiting for the response; thousands wait at once. Wait
            // for the socket to become readable before allocating the buffer to read into.
            tcp.readable().await?;
        }
        if self.buf.capacity() == self.buf.len() {
            let want = if self.buf.capacity() == 0 {
                INITIAL_BUFFER
            } else {
                self.buf.capacity()
            };
            let room = limit.saturating_sub(self.buf.len()).max(1);
            self.buf.reserve(want.min(room));
        }
        Ok(tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.buf).await?)
    }
}

/// The request as bytes on the wire. Configured headers come last and replace the defaults
/// (`Host`, `User-Agent`, `Accept`, `Connection`) they name. They are sent only to the service's
/// own origin: any of them may be a secret (from the environment or a file), so a redirect to
/// another origin gets the defaults alone.
pub fn render_request(svc: &Service, hop: Hop<'_>, keep_alive: bool) -> Vec<u8> {
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
        for (name, value) in svc.extra.headers.iter() {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

struct Parsed {
    len: usize,
    status: u16,
    minor_version: u8,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a response head from `buf`; `None` if more bytes are needed. Synchronous so the header
/// array lives on the stack only while parsing, not in every check's future.
fn parse_head(buf: &[u8], method: &http::Method) -> Result<Option<Parsed>, Error> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut storage);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Parse(e.to_string())),
    };
    let status = r.code.unwrap_or(0);
    let http11 = r.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = !http11;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| Error::Parse("invalid Content-Length".into()))?;
            if content_length.is_some_and(|c| c != v) {
                return Err(Error::Parse("conflicting Content-Length headers".into()));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    // A 2xx to CONNECT turns the connection into a tunnel (RFC 9112, 6.3), as 101 Switching
    // Protocols turns it into another protocol: what follows on it is not HTTP/1.1.
    let tunnel =
        status == 101 || (*method == http::Method::CONNECT && (200..300).contains(&status));
    let framing = if *method == http::Method::HEAD
        || tunnel
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else if transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112, 6.3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Parsed {
        len,
        status,
        minor_version: r.version.unwrap_or(1),
        keep_alive: !close && !tunnel && framing != Framing::UntilClose,
        framing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Parsed {
        parse_head(raw.as_bytes(), &http::Method::GET)
            .expect("valid")
            .expect("complete")
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
            )
            .framing,
            Framing::Chunked
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").framing,
            Framing::UntilClose
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").framing, Framing::UntilClose);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &http::Method::HEAD,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn a_connection_that_switched_protocols_or_tunnels_is_never_kept() {
        let switched = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        assert!(!switched.keep_alive);
        assert_eq!(switched.framing, Framing::Empty);
        let tunnel = parse_head(
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            &http::Method::CONNECT,
        )
        .expect("valid")
        .expect("complete");
        assert!(!tunnel.keep_alive);
        let refused = parse_head(
            b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n",
            &http::Method::CONNECT,
        )
        .expect("valid")
        .expect("complete");
        assert!(refused.keep_alive, "only a 2xx to CONNECT makes a tunnel");
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(
            !head("HTTP/1.1 200 OK\r\n\r\n").keep_alive,
            "a body until close ends the connection"
        );
    }

    #[test]
    fn bad_heads_are_errors_and_partial_heads_ask_for_more() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", &http::Method::GET)
                .expect("ok")
                .is_none()
        );
        assert!(parse_head(b"garbage\r\n\r\n", &http::Method::GET).is_err());
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                &http::Method::GET
            )
            .is_err()
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &http::Method::GET
            )
            .is_err()
        );
    }

    /// Runs `f` against a connection whose peer writes `response` (in pieces of `step` bytes, to
    /// exercise every partial-read path) and then closes.
    async fn against(response: &'static [u8], step: usize) -> Connection {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            for piece in response.chunks(step) {
                s.write_all(piece).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        Connection::new(Stream::Plain(
            TcpStream::connect(addr).await.expect("connect"),
        ))
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_across_partial_reads() {
        const R: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 3, 7, R.len()] {
            let mut c = against(R, step).await;
            let h = c
                .read_head(&http::Method::GET, 8192, false)
                .await
                .expect("head");
            assert_eq!(h.status, 200);
            let body = c.read_body(&h, 1024).await.expect("body");
            assert_eq!(&body[..], b"hello world", "step {step}");
            assert!(c.is_clean());
        }
    }

    #[tokio::test]
    async fn endless_interim_responses_are_an_invalid_response_not_a_busy_loop() {
        static ENDLESS: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| b"HTTP/1.1 100 Continue\r\n\r\n".repeat(100));
        let mut c = against(&ENDLESS, 4096).await;
        let e = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("interim"), "{e}");
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let mut c = against(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            5,
        )
        .await;
        let h = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect("head");
        assert_eq!(h.status, 200);
        assert_eq!(&c.read_body(&h, 10).await.expect("body")[..], b"ok");
    }

    #[tokio::test]
    async fn bodies_past_the_cap_fail_early_and_are_not_drained() {
        let mut c = against(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 64).await;
        let h = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect("head");
        assert!(matches!(
            c.read_body(&h, 10).await,
            Err(Error::BodyTooLarge(10))
        ));
        let mut c = against(b"HTTP/1.1 200 OK\r\n\r\n0123456789abcdef", 4).await;
        let h = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect("head");
        assert!(matches!(
            c.read_body(&h, 10).await,
            Err(Error::BodyTooLarge(10))
        ));
        let mut c = against(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 64).await;
        let h = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect("head");
        assert!(
            !c.discard_body(&h, 10).await.expect("decided"),
            "too large to drain for reuse"
        );
    }

    #[tokio::test]
    async fn a_close_before_any_byte_is_retryable_and_a_short_body_is_not() {
        let mut c = against(b"", 1).await;
        let e = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect_err("closed");
        assert!(e.before_response(), "{e}");
        let mut c = against(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 64).await;
        let h = c
            .read_head(&http::Method::GET, 8192, false)
            .await
            .expect("head");
        let e = c.read_body(&h, 100).await.expect_err("short");
        assert!(matches!(e, Error::Closed(_)) && !e.before_response(), "{e}");
    }

    #[tokio::test]
    async fn an_oversized_head_fails_at_the_limit() {
        const BIG: &[u8] = b"HTTP/1.1 200 OK\r\nX-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut c = against(BIG, 16).await;
        assert!(matches!(
            c.read_head(&http::Method::GET, 64, false).await,
            Err(Error::HeadTooLarge(64))
        ));
    }

    /// Property tests: whatever a server sends, parsing and decoding end in a head, a body or
    /// an error (which the probe maps to a reason of the closed set), never a panic or a hang.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn method(i: u8) -> http::Method {
            match i % 4 {
                0 => http::Method::GET,
                1 => http::Method::HEAD,
                2 => http::Method::CONNECT,
                _ => http::Method::POST,
            }
        }

        /// Heads that get past the parser's first checks: a status line and headers whose
        /// names and values are drawn from the ones that steer framing.
        fn plausible_head() -> impl Strategy<Value = Vec<u8>> {
            let name = prop_oneof![
                Just("Content-Length".to_string()),
                Just("Transfer-Encoding".to_string()),
                Just("Connection".to_string()),
                "[A-Za-z-]{1,12}",
            ];
            let value = prop_oneof![
                Just("chunked".to_string()),
                Just("gzip, chunked".to_string()),
                Just("close".to_string()),
                Just("keep-alive".to_string()),
                "[0-9]{0,25}",
                "-?[0-9a-f]{1,8}",
                "[ -~]{0,20}",
            ];
            (
                prop_oneof![Just("1.1"), Just("1.0"), Just("2"), Just("1.x")],
                0u16..1000,
                proptest::collection::vec((name, value), 0..6),
            )
                .prop_map(|(version, status, headers)| {
                    let mut h = format!("HTTP/{version} {status} X\r\n");
                    for (n, v) in headers {
                        h.push_str(&format!("{n}: {v}\r\n"));
                    }
                    h.push_str("\r\n");
                    h.into_bytes()
                })
        }

        /// A chunked body, valid or mutated at a few places.
        fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                any::<bool>(),
            )
                .prop_map(|(chunks, mutations, trailer)| {
                    let mut b = Vec::new();
                    for c in chunks {
                        b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        b.extend_from_slice(&c);
                        b.extend_from_slice(b"\r\n");
                    }
                    b.extend_from_slice(b"0\r\n");
                    if trailer {
                        b.extend_from_slice(b"X-T: 1\r\n");
                    }
                    b.extend_from_slice(b"\r\n");
                    for (at, byte) in mutations {
                        let len = b.len();
                        b[at % len] = byte;
                    }
                    b
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn any_bytes_are_a_head_a_request_for_more_or_an_error(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
                m in any::<u8>(),
            ) {
                let _ = parse_head(&bytes, &method(m));
            }

            #[test]
            fn plausible_heads_are_parsed_or_refused_and_framing_is_consistent(
                head in plausible_head(),
                m in any::<u8>(),
            ) {
                if let Ok(Some(p)) = parse_head(&head, &method(m)) {
                    prop_assert_eq!(p.len, head.len());
                    if p.framing == Framing::UntilClose {
                        prop_assert!(!p.keep_alive);
                    }
                    if p.status == 101 {
                        prop_assert!(!p.keep_alive);
                    }
                }
            }
        }

        #[test]
        fn any_body_after_any_head_ends_in_a_body_or_an_error() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let strategy = (
                prop_oneof![
                    Just(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
                    Just(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n".to_vec()),
                    Just(b"HTTP/1.0 200 OK\r\n\r\n".to_vec()),
                    plausible_head(),
                ],
                prop_oneof![
                    chunked_body(),
                    proptest::collection::vec(any::<u8>(), 0..200)
                ],
                1usize..64,
                any::<bool>(),
            );
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
            runner
                .run(&strategy, |(head, body, step, read)| {
                    let mut response = head;
                    response.extend_from_slice(&body);
                    rt.block_on(async {
                        let mut c = against_owned(response, step).await;
                        let done = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                            let Ok(h) = c.read_head(&http::Method::GET, 8192, true).await else {
                                return;
                            };
                            let _ = h.headers("content-length");
                            if read {
                                let _ = c.read_body(&h, 1024).await;
                            } else {
                                let _ = c.discard_body(&h, 1024).await;
                            }
                        })
                        .await;
                        assert!(done.is_ok(), "decoding ends when the peer has closed");
                    });
                    Ok(())
                })
                .expect("no panic, no hang");
        }

        /// Like `against`, for a response made at run time.
        async fn against_owned(response: Vec<u8>, step: usize) -> Connection {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                for piece in response.chunks(step) {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                }
            });
            Connection::new(Stream::Plain(
                TcpStream::connect(addr).await.expect("connect"),
            ))
        }
    }
}
