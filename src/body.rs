//! Response bodies of our HTTP server: a whole body, or one rendered piece by piece as the
//! client reads it.
//!
//! A large document (`/metrics`, `/status` of a big fleet) is never built whole per request:
//! hyper asks for the next piece only once it has written the previous one, so a client that
//! stops reading holds one piece (tens of KiB) and its snapshot, not megabytes of text. Pieces
//! are rendered on the async worker that polls the body, in slices small enough (well under a
//! millisecond) not to delay the checks running beside them.
//!
//! A streamed body has a deadline ([`RESPONSE_TIMEOUT`]): a client reading a byte every few
//! seconds would otherwise keep its response (and the snapshot it is rendered from) alive for
//! as long as it likes. Past it the body fails, hyper closes the connection, and the client
//! sees an incomplete response, never a complete-looking truncated one.
//!
//! A body can carry a guard ([`Body::guarded`]) that lives until the body is done or dropped:
//! the server's connection table uses one to know a connection is busy until its response has
//! been written, not only until the handler returned.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// The pieces of a streamed body, each rendered when asked for.
pub type Pieces = Box<dyn Iterator<Item = Bytes> + Send>;

/// How long a streamed response may take in all. A scrape of 100,000 services is read in well
/// under a second on any network a monitoring daemon runs on; a minute is a client that is
/// hostile or gone. It bounds how many snapshots slow clients can pin at once to about
/// `RESPONSE_TIMEOUT / interval + 1`.
pub const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A response body.
pub struct Body {
    kind: Kind,
    guard: Option<Box<dyn Send>>,
    /// When a streamed body gives up.
    deadline: Option<tokio::time::Instant>,
}

/// A streamed response took longer than [`RESPONSE_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("the response took longer than {RESPONSE_TIMEOUT:?} to send")]
pub struct TooSlow;

enum Kind {
    /// Taken on the first poll.
    Whole(Option<Bytes>),
    Pieces(Pieces),
}

impl Body {
    /// A body sent as it is.
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        Body {
            kind: Kind::Whole(Some(bytes.into())),
            guard: None,
            deadline: None,
        }
    }

    /// A body of `pieces`, each rendered when the client has taken the previous one, all of
    /// them within [`RESPONSE_TIMEOUT`]. Empty pieces are skipped.
    pub fn pieces(pieces: Pieces) -> Body {
        Body {
            kind: Kind::Pieces(pieces),
            guard: None,
            deadline: Some(tokio::time::Instant::now() + RESPONSE_TIMEOUT),
        }
    }

    /// This body, holding `guard` until the body has been sent whole or dropped.
    pub fn guarded(mut self, guard: impl Send + 'static) -> Body {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The whole body as bytes: for tests, and for callers that need it in memory anyway.
    pub fn into_bytes(self) -> Vec<u8> {
        match self.kind {
            Kind::Whole(b) => b.map(|b| b.to_vec()).unwrap_or_default(),
            Kind::Pieces(p) => p.flat_map(|b| b.to_vec()).collect(),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            Kind::Whole(_) => "Body::whole",
            Kind::Pieces(_) => "Body::pieces",
        })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = TooSlow;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TooSlow>>> {
        let this = self.get_mut();
        if this
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            this.guard = None;
            return Poll::Ready(Some(Err(TooSlow)));
        }
        let next = match &mut this.kind {
            Kind::Whole(b) => b.take(),
            Kind::Pieces(p) => p.find(|b| !b.is_empty()),
        };
        if next.is_none() {
            // Done: let the guard go now rather than when hyper drops the body.
            this.guard = None;
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Whole(None) => SizeHint::with_exact(0),
            Kind::Pieces(_) => SizeHint::default(),
        }
    }
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not with `q=0`). Prometheus always
/// asks.
pub fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

/// `pieces`, gzip-compressed as they are rendered: still one piece at a time, never the whole
/// body. The fastest level: the text of a large fleet is long and repetitive, and the CPU of a
/// scrape matters more than its last bytes.
pub fn gzip(pieces: Pieces) -> Pieces {
    Box::new(Gzip {
        inner: pieces,
        encoder: Some(flate2::write::GzEncoder::new(
            Vec::with_capacity(16 * 1024),
            flate2::Compression::fast(),
        )),
    })
}

struct Gzip {
    inner: Pieces,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Iterator for Gzip {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        use std::io::Write as _;
        loop {
            let encoder = self.encoder.as_mut()?;
            match self.inner.next() {
                Some(piece) => {
                    // Writing into a Vec cannot fail.
                    let _ = encoder.write_all(&piece);
                    let out = std::mem::take(encoder.get_mut());
                    if !out.is_empty() {
                        return Some(Bytes::from(out));
                    }
                }
                None => {
                    let encoder = self.encoder.take()?;
                    return encoder.finish().ok().map(Bytes::from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzipped_pieces_decode_to_the_same_text_and_stay_pieces() {
        use std::io::Read as _;
        let text: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("probe_success{{target=\"s{i}\"}} 1\n").repeat(50)))
            .collect();
        let whole: Vec<u8> = text.iter().flat_map(|b| b.to_vec()).collect();
        let out: Vec<Bytes> = gzip(Box::new(text.into_iter())).collect();
        assert!(out.len() > 1, "streamed, not one buffer");
        assert!(out.iter().all(|b| !b.is_empty()));
        let zipped: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert!(
            zipped.len() * 10 < whole.len(),
            "compressed: {} of {}",
            zipped.len(),
            whole.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, whole);
        let empty: Vec<Bytes> = gzip(Box::new(std::iter::empty())).collect();
        assert_eq!(empty.len(), 1, "a valid empty gzip stream");
    }

    #[test]
    fn gzip_only_when_asked_and_not_refused() {
        let ask = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_str(v).expect("valid"),
            );
            accepts_gzip(&h)
        };
        assert!(ask("gzip"));
        assert!(ask("deflate, GZIP;q=0.5"));
        assert!(ask("*"));
        assert!(!ask("gzip;q=0"));
        assert!(!ask("identity"));
        assert!(!ask("br, zstd"));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn pieces_are_rendered_one_at_a_time_and_empty_ones_skipped() {
        let rendered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = rendered.clone();
        let pieces = (0..3).map(move |i| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if i == 1 {
                Bytes::new()
            } else {
                Bytes::from(format!("piece{i};"))
            }
        });
        let mut body = Body::pieces(Box::new(pieces));
        assert_eq!(rendered.load(std::sync::atomic::Ordering::SeqCst), 0);
        let first = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "piece0;");
        assert_eq!(
            rendered.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "nothing rendered ahead of the reader"
        );
        let rest = body.collect().await.expect("ok").to_bytes();
        assert_eq!(rest, "piece2;");
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_fails_past_its_deadline_instead_of_ending_early() {
        let mut body = Body::pieces(Box::new(std::iter::repeat_with(|| Bytes::from("x"))));
        assert!(body.frame().await.expect("a frame").is_ok());
        tokio::time::advance(RESPONSE_TIMEOUT).await;
        assert!(
            body.frame().await.expect("an error, not the end").is_err(),
            "a reader that slow gets an incomplete response"
        );
    }

    #[tokio::test]
    async fn the_guard_lives_until_the_body_is_done() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut body = Body::whole("abc").guarded(Flag(dropped.clone()));
        let frame = body.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "abc");
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(body.frame().await.is_none());
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
