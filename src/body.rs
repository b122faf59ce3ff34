//! Response bodies of our HTTP server: a whole body, or one rendered piece by piece as the
//! client reads it.
//!
//! A large document (`/metrics`, `/status` of a big fleet) is never built whole per request:
//! hyper asks for the next piece only once it has written the previous one, so a client that
//! stops reading holds one piece (tens of KiB) and its snapshot, not megabytes of text.
//!
//! Pieces are rendered on a thread of their own at the lowest CPU priority (the
//! `Renderer`), not on the async workers: a sweep has a hard deadline and a scrape does not
//! (Prometheus waits seconds), so on a busy machine the checks come first. Rendering 100,000
//! services costs ~80 ms of CPU; on the workers, scrapes back to back slowed a sweep of them by
//! a third or more, at nice 19 by a few percent, and the scrapes still went on.
//!
//! A streamed body has a deadline ([`RESPONSE_TIMEOUT`]): a client reading a byte every few
//! seconds would otherwise keep its response (and the snapshot it is rendered from) alive for
//! as long as it likes. Past it the body fails, hyper closes the connection, and the client
//! sees an incomplete response, never a complete-looking truncated one.
//!
//! A body can carry a guard ([`Body::guarded`]) that lives until the body is done or dropped:
//! the server's connection table uses one to know a connection is busy until its response has
//! been written, not only until the handler returned.

use std::future::Future;
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

/// Why a streamed body failed: the client sees an incomplete response, never a complete-looking
/// truncated one.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response took longer than {RESPONSE_TIMEOUT:?} to send")]
    TooSlow,
    /// The render thread is gone (only a panic ends it, and a panic ends the process).
    #[error("the render thread is gone")]
    RendererGone,
}

enum Kind {
    /// Taken on the first poll.
    Whole(Option<Bytes>),
    Pieces(Rendering),
}

/// Where a streamed body's pieces are: here between pieces, with the [`Renderer`] while one is
/// rendered.
enum Rendering {
    Idle(Pieces),
    Asked(tokio::sync::oneshot::Receiver<Rendered>),
    /// The renderer is gone (it only ends with a panic, which ends the process).
    Gone,
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
            kind: Kind::Pieces(Rendering::Idle(pieces)),
            guard: None,
            deadline: Some(tokio::time::Instant::now() + RESPONSE_TIMEOUT),
        }
    }

    /// This body, holding `guard` until the body has been sent whole or dropped.
    pub fn guarded(mut self, guard: impl Send + 'static) -> Body {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The whole body as bytes: for tests, and for callers that need it in memory anyway. Of a
    /// body not yet polled (a streamed one being polled hands its pieces to the renderer).
    pub fn into_bytes(self) -> Vec<u8> {
        match self.kind {
            Kind::Whole(b) => b.map(|b| b.to_vec()).unwrap_or_default(),
            Kind::Pieces(Rendering::Idle(p)) => p.flat_map(|b| b.to_vec()).collect(),
            Kind::Pieces(_) => Vec::new(),
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            this.guard = None;
            return Poll::Ready(Some(Err(BodyError::TooSlow)));
        }
        let next = match &mut this.kind {
            Kind::Whole(b) => b.take(),
            Kind::Pieces(rendering) => match std::task::ready!(rendering.poll_next(cx)) {
                Ok(next) => next,
                Err(e) => {
                    this.guard = None;
                    return Poll::Ready(Some(Err(e)));
                }
            },
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

impl Rendering {
    /// The next non-empty piece, or `None` at the end: asked of the renderer, awaited here.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        loop {
            match std::mem::replace(self, Rendering::Gone) {
                Rendering::Idle(pieces) => *self = Renderer::ask(pieces),
                Rendering::Asked(mut answer) => match Pin::new(&mut answer).poll(cx) {
                    Poll::Pending => {
                        *self = Rendering::Asked(answer);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok((pieces, piece))) => {
                        *self = Rendering::Idle(pieces);
                        return Poll::Ready(Ok(piece));
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(BodyError::RendererGone)),
                },
                Rendering::Gone => return Poll::Ready(Err(BodyError::RendererGone)),
            }
        }
    }
}

/// A body's pieces handed back with the piece rendered (`None`: there are no more).
type Rendered = (Pieces, Option<Bytes>);

/// The thread that renders every streamed body's pieces, one piece per request, at nice
/// [`Renderer::NICE`]. One piece at a time, not a whole body: a client that stops reading
/// stops asking, and holds up no one else's response.
struct Renderer {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// A body's pieces, and where to send them back with their next piece.
type Job = (Pieces, tokio::sync::oneshot::Sender<Rendered>);

impl Renderer {
    /// The lowest priority there is: the thread gets the CPU that nothing else wants, and
    /// still a share (about 1.5 % of a core against one busy thread) when everything does.
    const NICE: i32 = 19;

    /// Sends `pieces` to the renderer for their next piece. Without a renderer (the thread
    /// could not be started) the piece is rendered here, as it was before there was one.
    fn ask(pieces: Pieces) -> Rendering {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = match Renderer::get() {
            Some(renderer) => renderer.jobs.send((pieces, tx)).err().map(|e| e.0),
            None => Some((pieces, tx)),
        };
        if let Some((pieces, tx)) = job {
            let _ = tx.send(next_piece(pieces));
        }
        Rendering::Asked(rx)
    }

    fn get() -> Option<&'static Renderer> {
        static RENDERER: std::sync::OnceLock<Option<Renderer>> = std::sync::OnceLock::new();
        RENDERER.get_or_init(Renderer::start).as_ref()
    }

    fn start() -> Option<Renderer> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("healthsweep-render".into())
            .spawn(move || {
                // On Linux the nice value is the calling thread's own.
                if let Err(e) = rustix::process::setpriority_process(None, Renderer::NICE) {
                    tracing::warn!(error = %e, "could not lower the render thread's priority");
                }
                for (pieces, answer) in queue {
                    // A body dropped while it waited (a client gone): nothing to render, its
                    // pieces and their snapshot are let go at once.
                    if answer.is_closed() {
                        continue;
                    }
                    let _ = answer.send(next_piece(pieces));
                }
            });
        match thread {
            Ok(_) => Some(Renderer { jobs }),
            Err(e) => {
                tracing::warn!(error = %e, "no render thread; rendering on the async workers");
                None
            }
        }
    }
}

fn next_piece(mut pieces: Pieces) -> Rendered {
    let piece = pieces.find(|b| !b.is_empty());
    (pieces, piece)
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

    #[tokio::test]
    async fn pieces_are_rendered_on_the_render_thread_at_the_lowest_priority() {
        let pieces = std::iter::once(()).map(|()| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let nice = rustix::process::getpriority_process(None).expect("own priority");
            Bytes::from(format!("{thread} {nice}"))
        });
        let text = Body::pieces(Box::new(pieces))
            .collect()
            .await
            .expect("ok")
            .to_bytes();
        assert_eq!(text, format!("healthsweep-render {}", Renderer::NICE));
    }

    #[tokio::test]
    async fn a_body_whose_renderer_is_gone_fails_rather_than_ends() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Rendered>();
        drop(tx);
        let mut body = Body::pieces(Box::new(std::iter::empty()));
        body.kind = Kind::Pieces(Rendering::Asked(rx));
        let frame = body.frame().await.expect("an error, not the end");
        assert!(matches!(frame, Err(BodyError::RendererGone)), "{frame:?}");
    }

    #[tokio::test]
    async fn a_body_left_unread_holds_up_no_other() {
        let endless = || Box::new(std::iter::repeat_with(|| Bytes::from("x"))) as Pieces;
        let mut stalled = Body::pieces(endless());
        assert!(stalled.frame().await.expect("a frame").is_ok());
        let mut other = Body::pieces(endless());
        for _ in 0..100 {
            assert!(other.frame().await.expect("a frame").is_ok());
        }
        let short = Body::pieces(Box::new((0..3).map(|i| Bytes::from(i.to_string()))));
        assert_eq!(short.collect().await.expect("ok").to_bytes(), "012");
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
