//! The benchmark's mock services: HTTP/1.1 answered with as little work as a server can do, so
//! that sweeping them measures the daemon, not its peer.
//!
//! The issue's reference figures were taken against nginx. The hyper server of
//! [`super::MockServer`] spends about 3× the daemon's CPU per request (1.5 `writev` per
//! response, hyper's machinery around each), and on 2 cores a peer's CPU is the daemon's wall
//! time: a sweep's requests reach their servers only as fast as both sides together get
//! through them. This one reads a request, waits, and answers with one `write` of a response
//! written once; it knows the same paths as [`super::MockServer`].
//!
//! It reads HTTP/1.x heads of at most [`HEAD_MAX`] bytes, with a `content-length` body
//! (skipped) or none. Anything else is answered 400 and the connection closed: a benchmark
//! peer need not be lenient, only never wrong about what it answers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The longest request head read; the daemon's are a few hundred bytes.
pub const HEAD_MAX: usize = 8 * 1024;

/// The answers, whole.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
const ERROR: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 18\r\n\r\n{\"status\":\"error\"}";
const DEGRADED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{\"status\":\"degraded\"}";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 29\r\n\r\n{\"error\":\"no such mock path\"}";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Serves `listener` until `shutdown`; each connection until it closes or `shutdown`.
pub async fn serve(listener: TcpListener, latency: Duration, shutdown: CancellationToken) {
    while let Some(stream) = super::next_connection(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection(stream, latency) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// What a request asks for, as far as the answer goes.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    answer: &'static [u8],
    /// `None`: never answered (`/hang`).
    delay: Option<Duration>,
    /// Bytes of the head, and of the body after it.
    head: usize,
    body: usize,
    /// The client asked to close (`connection: close`, or HTTP/1.0 without keep-alive).
    close: bool,
    /// `HEAD`: the answer's head alone.
    head_only: bool,
}

/// A connection's bytes read and not yet taken.
struct Input {
    stream: TcpStream,
    buf: Box<[u8]>,
    filled: usize,
}

impl Input {
    /// Reads more; `false` once the client has closed, or the head fills the buffer.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.filled == self.buf.len() {
            return Ok(false);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        self.filled += n;
        Ok(n > 0)
    }

    /// Drops `n` bytes from the front, reading them first if they have not come yet.
    async fn take(&mut self, mut n: usize) -> std::io::Result<bool> {
        loop {
            let here = n.min(self.filled);
            self.buf.copy_within(here..self.filled, 0);
            self.filled -= here;
            n -= here;
            if n == 0 {
                return Ok(true);
            }
            if !self.fill().await? {
                return Ok(false);
            }
        }
    }
}

/// Answers the requests of one connection in turn (pipelined ones too) until it closes.
async fn connection(stream: TcpStream, latency: Duration) -> std::io::Result<()> {
    let mut input = Input {
        stream,
        buf: vec![0u8; HEAD_MAX].into_boxed_slice(),
        filled: 0,
    };
    loop {
        let request = match parse(&input.buf[..input.filled], latency) {
            Parsed::Request(r) => r,
            Parsed::Partial => {
                if input.fill().await? {
                    continue;
                }
                if input.filled == 0 {
                    return Ok(());
                }
                // Closed in the middle of a head, or a head longer than HEAD_MAX.
                return input.stream.write_all(BAD).await;
            }
            Parsed::Bad => return input.stream.write_all(BAD).await,
        };
        if !input
            .take(request.head.saturating_add(request.body))
            .await?
        {
            return Ok(());
        }
        let Some(delay) = request.delay else {
            // Never answered; the connection goes when the client gives up on it.
            loop {
                input.filled = 0;
                if !input.fill().await? {
                    return Ok(());
                }
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let answer = if request.head_only {
            let end = find(request.answer, b"\r\n\r\n").map_or(request.answer.len(), |e| e + 4);
            &request.answer[..end]
        } else {
            request.answer
        };
        input.stream.write_all(answer).await?;
        if request.close {
            return Ok(());
        }
    }
}

enum Parsed {
    Request(Request),
    /// The head is not all here yet.
    Partial,
    Bad,
}

/// The request at the start of `buf`, if its head has come whole.
fn parse(buf: &[u8], latency: Duration) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad;
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (first.next(), first.next(), first.next(), first.next())
    else {
        return Parsed::Bad;
    };
    let mut close = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Parsed::Bad,
    };
    let mut body = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => body = n,
                Err(_) => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    close = false;
                }
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let delay = query
        .strip_prefix("delay=")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(latency, Duration::from_millis);
    let (answer, delay) = match path {
        "/hang" => (OK, None),
        "/fail/500" => (ERROR, Some(delay)),
        "/fail/body" => (DEGRADED, Some(delay)),
        p if p.ends_with("/health") => (OK, Some(delay)),
        _ => (NOT_FOUND, Some(delay)),
    };
    Parsed::Request(Request {
        answer,
        delay,
        head: end + 4,
        body,
        close,
        head_only: method == "HEAD",
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Duration = Duration::from_millis(200);

    fn request(text: &str) -> Request {
        match parse(text.as_bytes(), LATENCY) {
            Parsed::Request(r) => r,
            Parsed::Partial => panic!("partial: {text:?}"),
            Parsed::Bad => panic!("bad: {text:?}"),
        }
    }

    #[test]
    fn requests_are_told_apart_by_path_delay_body_and_close() {
        let r = request("GET /health HTTP/1.1\r\nhost: h\r\n\r\nGET /next");
        assert_eq!(
            r,
            Request {
                answer: OK,
                delay: Some(LATENCY),
                head: 33,
                body: 0,
                close: false,
                head_only: false,
            }
        );
        let r = request(
            "POST /x/health?delay=5 HTTP/1.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (r.answer, r.delay, r.body, r.close),
            (OK, Some(Duration::from_millis(5)), 7, true)
        );
        assert_eq!(request("GET /fail/500 HTTP/1.1\r\n\r\n").answer, ERROR);
        assert_eq!(request("GET /fail/body HTTP/1.1\r\n\r\n").answer, DEGRADED);
        assert_eq!(request("GET /other HTTP/1.1\r\n\r\n").answer, NOT_FOUND);
        assert_eq!(request("GET /hang HTTP/1.1\r\n\r\n").delay, None);
        assert!(request("GET /health HTTP/1.0\r\n\r\n").close);
        assert!(!request("GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").close);
        assert!(request("GET /health HTTP/1.1\r\nconnection: keep-alive, close\r\n\r\n").close);
        assert!(request("HEAD /health HTTP/1.1\r\n\r\n").head_only);
        let huge = request("POST /health HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n");
        assert_eq!(
            huge.head.saturating_add(huge.body),
            usize::MAX,
            "no overflow"
        );
        assert!(matches!(
            parse(b"GET /health HTTP/1.1\r\nhost: h\r\n", LATENCY),
            Parsed::Partial
        ));
        for bad in [
            "GET /health\r\n\r\n",
            "GET /health HTTP/2\r\n\r\n",
            "GET /health HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /health HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            "GET /health HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes(), LATENCY), Parsed::Bad),
                "{bad:?}"
            );
        }
    }

    /// The answers are what they say: each a whole HTTP response whose length is its body's.
    #[test]
    fn every_answer_is_one_whole_response() {
        for answer in [OK, ERROR, DEGRADED, NOT_FOUND, BAD] {
            let text = std::str::from_utf8(answer).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("content-length");
            assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "{text}");
        }
    }

    /// All the server sends until it closes the connection (in 5 s at most).
    async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .expect("closed by the server")
            .expect("read");
        got
    }

    /// Over a socket: pipelined requests, a body split across reads, and a close asked for.
    #[tokio::test]
    async fn a_connection_answers_in_turn_and_closes_when_asked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, Duration::ZERO, shutdown.clone()));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /health HTTP/1.1\r\ncontent-length: 4\r\n\r\nab")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(
            b"cdGET /fail/500 HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let got = read_until_closed(&mut s).await;
        assert_eq!(got, [OK, ERROR, OK].concat());

        // HEAD: the head alone, and the connection goes on.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"HEAD /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let got = read_until_closed(&mut s).await;
        let head = &OK[..OK.len() - br#"{"status":"ok"}"#.len()];
        assert_eq!(got, [head, OK].concat());

        // /hang: no answer, and the server lets go when the client does.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /hang HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut byte = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(100), s.read(&mut byte)).await;
        assert!(waited.is_err(), "no answer: {waited:?}");
        s.shutdown().await.expect("shutdown");
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0))), "closed in turn: {closed:?}");
        shutdown.cancel();
    }
}
