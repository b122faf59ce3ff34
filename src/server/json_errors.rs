//! JSON bodies for the error responses hyper writes by itself.
//!
//! When a request cannot be parsed (garbage, a head over the size limit, too many headers, a
//! URI too long), hyper answers 400, 431 or 414 before any handler runs, with an empty body.
//! Every other error of ours is JSON (`{"error": ...}`), and clients and tests should not need
//! a special case, so this wrapper around the connection's stream recognises those automatic
//! responses as they are written and gives them the same JSON body.
//!
//! Recognising them is safe: they are the only responses with a 4xx status and
//! `content-length: 0` (every handler error has a JSON body), and hyper writes a head in one
//! piece when the stream does not claim vectored writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::MAX_REQUEST_HEAD_BYTES;

/// A stream whose hyper-generated 4xx responses get a JSON body.
#[derive(Debug)]
pub struct JsonErrors<S> {
    inner: S,
    /// A rewritten response being written: its bytes, how many are out, and the length of the
    /// original to report to hyper once all are.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonErrors {
            inner,
            pending: None,
        }
    }
}

/// The JSON body for a status hyper answers by itself, if `head` is one of those responses.
fn automatic_error(head: &[u8]) -> Option<&'static str> {
    let message = match head.get(..13)? {
        b"HTTP/1.1 400 " => "the request is not valid HTTP/1.1",
        b"HTTP/1.1 414 " => "the request URI is too long",
        b"HTTP/1.1 431 " => {
            const _: () = assert!(MAX_REQUEST_HEAD_BYTES == 16 * 1024, "update the message");
            "the request head is too large (over 16384 bytes, or over 100 header fields)"
        }
        _ => return None,
    };
    let is_head_only = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w == b"\r\ncontent-length: 0\r\n");
    is_head_only.then_some(message)
}

/// `head` with a JSON body and the headers that describe it.
fn with_json_body(head: &[u8], message: &str) -> Vec<u8> {
    let body = format!("{}\n", serde_json::json!({ "error": message }));
    let text = String::from_utf8_lossy(head).replacen(
        "\r\ncontent-length: 0\r\n",
        &format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ),
        1,
    );
    let mut out = text.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none()
            && let Some(message) = automatic_error(buf)
        {
            this.pending = Some((with_json_body(buf, message), 0, buf.len()));
        }
        let Some((bytes, written, report)) = &mut this.pending else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        // hyper retries with the same buffer while this returns Pending, so the rewrite is
        // written out in full before hyper is told its original bytes are gone.
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let report = *report;
        this.pending = None;
        Poll::Ready(Ok(report))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Not vectored, so hyper flattens each response head into one write we can recognise.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 24 Nov 2026 17:22:22 GMT\r\n\r\n";

    #[test]
    fn hyper_automatic_errors_are_recognised_and_given_a_json_body() {
        let message = automatic_error(HYPER_431).expect("recognised");
        let out = String::from_utf8(with_json_body(HYPER_431, message)).expect("utf-8");
        let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let doc: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert!(
            doc["error"]
                .as_str()
                .is_some_and(|e| e.contains("too large"))
        );
    }

    #[test]
    fn responses_with_a_body_or_other_statuses_are_left_alone() {
        assert!(
            automatic_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 30\r\n\r\n").is_none()
        );
        assert!(automatic_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error(b"{\"partial\": \"body\"}").is_none());
    }

    #[tokio::test]
    async fn a_rewritten_response_is_written_whole_and_reported_as_the_original_length() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(16);
        let mut server = JsonErrors::new(server);
        let writer = tokio::spawn(async move {
            let n = server.write(HYPER_431).await.expect("write");
            server.shutdown().await.expect("shutdown");
            n
        });
        let mut received = Vec::new();
        let mut client = client;
        client.read_to_end(&mut received).await.expect("read");
        assert_eq!(writer.await.expect("task"), HYPER_431.len());
        assert!(
            received.ends_with(b"}\n"),
            "{:?}",
            String::from_utf8_lossy(&received)
        );
    }
}
