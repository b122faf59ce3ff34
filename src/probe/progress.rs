//! What every probe shares: the step a check is in ([`Progress`]), a failed step
//! ([`Failure`]), and the [`Clock`] that bounds a check in time and turns its result into an
//! [`Outcome`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::time::{Instant, Sleep};

use super::{HttpVersion, Outcome, Reason, TlsFacts};
use crate::config::Service;

/// The step a check is in, kept so a timeout can say what it interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Resolve = 0,
    Connect = 1,
    Tls = 2,
    Request = 3,
    Body = 4,
    /// Waiting for a free connection slot (the open-file budget is in use).
    Slot = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Resolve,
            1 => Phase::Connect,
            2 => Phase::Tls,
            3 => Phase::Request,
            5 => Phase::Slot,
            _ => Phase::Body,
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the host name",
            Phase::Connect => "connecting",
            Phase::Tls => "in the TLS handshake",
            Phase::Request => "waiting for the response",
            Phase::Body => "reading the body",
            Phase::Slot => "waiting for a free connection slot (open-file limit)",
        }
    }
}

/// What a check has got to so far. Shared by reference with the check's future, so it survives
/// the future being cut off at the deadline; atomics because that future is `Send`.
#[derive(Default)]
pub struct Progress {
    phase: AtomicU8,
    status: AtomicU16,
    version: AtomicU8,
    redirects: AtomicU8,
    reused: AtomicBool,
    tls: Mutex<Option<Arc<TlsFacts>>>,
}

impl Progress {
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16, version: HttpVersion) {
        self.status.store(status, Ordering::Relaxed);
        self.version.store(version as u8 + 1, Ordering::Relaxed);
    }

    pub fn reused(&self, reused: bool) {
        self.reused.store(reused, Ordering::Relaxed);
    }

    pub fn redirected(&self) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls(&self, facts: Option<Arc<TlsFacts>>) {
        if let Some(f) = facts {
            *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// What the check was doing, for a timeout's message.
    pub fn doing(&self) -> &'static str {
        self.phase().doing()
    }

    fn version(&self) -> Option<HttpVersion> {
        match self.version.load(Ordering::Relaxed) {
            1 => Some(HttpVersion::Http10),
            2 => Some(HttpVersion::Http11),
            3 => Some(HttpVersion::Http2),
            _ => None,
        }
    }
}

/// A failed step: the reason and a message for people.
#[derive(Debug)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// A check's clock: when it started and when it must be over (its own timeout, or the sweep's
/// deadline if that comes first). Callers await `clock.bound(attempt)` themselves and pass the
/// result to [`Clock::outcome`]: handing the attempt's future to a helper instead would make
/// every check's future hold it twice (an async fn keeps its arguments apart from what it
/// awaits), and thousands of checks are in flight at once.
pub struct Clock {
    at: SystemTime,
    start: Instant,
    cutoff: Instant,
    sweep_deadline: Instant,
    cut_by_sweep: bool,
}

impl Clock {
    /// Starts the clock of a check of `svc`, now.
    pub fn start(svc: &Service, sweep_deadline: Instant) -> Clock {
        let start = Instant::now();
        let own_deadline = start + svc.timeout;
        Clock {
            at: SystemTime::now(),
            start,
            cutoff: own_deadline.min(sweep_deadline),
            sweep_deadline,
            // At a tie the sweep ends it: the sweep is over then, whatever the check does.
            cut_by_sweep: sweep_deadline <= own_deadline,
        }
    }

    /// When the check must be over.
    pub fn cutoff(&self) -> Instant {
        self.cutoff
    }

    /// `attempt`, over by the cutoff (see [`Bounded`]).
    pub fn bound<F: Future>(&self, attempt: F) -> Bounded<F> {
        let own = (!self.cut_by_sweep).then_some(self.cutoff);
        Bounded::new(attempt, own, self.sweep_deadline)
    }

    /// How the check went, from its result (`Err(Cut)`: cut off) and what it reported.
    pub fn outcome(
        &self,
        svc: &Service,
        progress: &Progress,
        result: Result<Result<(), Failure>, Cut>,
    ) -> Outcome {
        let (at, duration) = (self.at, self.start.elapsed());
        let mut outcome = match result {
            Ok(Ok(())) => Outcome {
                degraded: svc.extra.max_latency.is_some_and(|max| duration > max),
                ..Outcome::passed(at, duration)
            },
            Ok(Err(f)) => Outcome::failed(f.reason, at, duration, f.message),
            Err(_) if self.cut_by_sweep => Outcome::failed(
                Reason::DeadlineExceeded,
                at,
                duration,
                format!(
                    "sweep deadline reached after {}ms while {}",
                    duration.as_millis(),
                    progress.phase().doing()
                ),
            ),
            Err(_) => Outcome::failed(
                Reason::Timeout,
                at,
                duration,
                format!(
                    "timed out after {} while {}",
                    humantime::format_duration(svc.timeout),
                    progress.phase().doing()
                ),
            ),
        };
        outcome.http_status = Some(progress.status.load(Ordering::Relaxed)).filter(|&s| s != 0);
        outcome.reused_connection = progress.reused.load(Ordering::Relaxed);
        outcome.http_version = progress.version();
        outcome.redirects = progress.redirects.load(Ordering::Relaxed);
        outcome.tls = progress
            .tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        outcome
    }
}

/// A [`Bounded`] future that was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut;

pin_project_lite::pin_project! {
    /// A future over by a cutoff: by its own (a timer, armed only if the future has to wait at
    /// all), or by the sweep deadline, which costs no timer: the sweep's lanes poll every check
    /// still running once more when its deadline passes (see `sweep::run_lane`), and a bounded
    /// future polled at or after the sweep deadline ends there. Ten thousand checks in flight
    /// cost ten thousand timers in the wheel otherwise, each armed and cleared under the
    /// driver's lock. So it must be polled then: a caller outside a sweep bounds it with a
    /// timer of its own. One first polled at or after the sweep deadline ends without polling
    /// `inner` at all (no request sent only to be dropped).
    pub struct Bounded<F> {
        #[pin]
        inner: F,
        // Boxed: a check whose own `timeout` is not before the sweep deadline (the default)
        // never arms one, and thousands of futures in flight would each carry a timer entry's
        // bytes inline. One with a shorter `timeout` pays an allocation when it has to wait.
        timer: Option<Pin<Box<Sleep>>>,
        own: Option<Instant>,
        sweep_deadline: Instant,
        polled: bool,
    }
}

impl<F: Future> Bounded<F> {
    /// `inner`, over by `own` (if any) or by `sweep_deadline`, whichever is first.
    pub fn new(inner: F, own: Option<Instant>, sweep_deadline: Instant) -> Self {
        Bounded {
            inner,
            timer: None,
            own: own.filter(|&o| o < sweep_deadline),
            sweep_deadline,
            polled: false,
        }
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Result<F::Output, Cut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.polled {
            *this.polled = true;
            if Instant::now() >= *this.sweep_deadline {
                return Poll::Ready(Err(Cut));
            }
        }
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if let Some(own) = *this.own {
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(own)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Cut));
            }
        }
        // Also with a timer of its own: the sweep's last poll may come before the driver has
        // fired a timer due just before the deadline, and the check must end there too.
        if Instant::now() >= *this.sweep_deadline {
            return Poll::Ready(Err(Cut));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    //! The deadline clock, in paused time: which limit cuts a check, and what its outcome says.
    use super::*;
    use std::time::Duration;

    fn service(extra: &str) -> Service {
        let src = format!("[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n{extra}\n");
        let c = crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid");
        (*c.services[0]).clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_cutoff_is_the_earlier_of_the_own_timeout_and_the_sweep_deadline() {
        let svc = service("timeout = \"2s\"");
        let now = Instant::now();
        let clock = Clock::start(&svc, now + Duration::from_secs(5));
        assert_eq!(clock.cutoff(), now + Duration::from_secs(2));
        let clock = Clock::start(&svc, now + Duration::from_secs(1));
        assert_eq!(clock.cutoff(), now + Duration::from_secs(1));
    }

    async fn cut_off(svc: &Service, sweep_in: Duration) -> Outcome {
        let clock = Clock::start(svc, Instant::now() + sweep_in);
        let progress = Progress::default();
        progress.enter(Phase::Request);
        // As the sweep drives it: the sweep deadline is its own timer here.
        let bounded = clock.bound(std::future::pending());
        let result = match tokio::time::timeout_at(clock.cutoff(), bounded).await {
            Ok(r) => r,
            Err(_) => Err(Cut),
        };
        clock.outcome(svc, &progress, result)
    }

    #[tokio::test(start_paused = true)]
    async fn cut_off_by_its_own_timeout_is_timeout_and_by_the_sweep_deadline_exceeded() {
        let svc = service("timeout = \"2s\"");
        let own = cut_off(&svc, Duration::from_secs(5)).await;
        assert_eq!(own.reason, Some(Reason::Timeout));
        assert_eq!(own.duration, Duration::from_secs(2));
        assert!(
            own.error
                .as_deref()
                .is_some_and(|e| e.contains("waiting for the response"))
        );
        let sweep = cut_off(&svc, Duration::from_millis(700)).await;
        assert_eq!(sweep.reason, Some(Reason::DeadlineExceeded));
        assert_eq!(sweep.duration, Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_slower_than_max_latency_is_degraded_and_what_it_reported_is_kept() {
        let svc = service("max_latency = \"100ms\"");
        let clock = Clock::start(&svc, Instant::now() + Duration::from_secs(5));
        let progress = Progress::default();
        progress.response(204, HttpVersion::Http11);
        progress.reused(true);
        progress.redirected();
        tokio::time::advance(Duration::from_millis(150)).await;
        let o = clock.outcome(&svc, &progress, Ok(Ok(())));
        assert!(o.ok() && o.degraded);
        assert_eq!(o.http_status, Some(204));
        assert_eq!(o.http_version, Some(HttpVersion::Http11));
        assert!(o.reused_connection);
        assert_eq!(o.redirects, 1);
    }

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_by_the_sweep_deadline_ends_when_polled_after_it_and_holds_no_timer() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut b = Box::pin(Bounded::new(std::future::pending::<()>(), None, deadline));
        assert!(poll_once(&mut b).is_pending());
        assert!(b.timer.is_none(), "the sweep deadline is no timer");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(poll_once(&mut b).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(poll_once(&mut b), Poll::Ready(Err(Cut)));
        // An own cutoff at or after the sweep deadline is the sweep's: still no timer.
        let deadline = Instant::now() + Duration::from_secs(1);
        let own = Some(deadline + Duration::from_secs(1));
        let mut b = Box::pin(Bounded::new(std::future::pending::<()>(), own, deadline));
        assert!(poll_once(&mut b).is_pending() && b.timer.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn first_polled_after_the_sweep_deadline_it_ends_without_starting() {
        let deadline = Instant::now();
        let started = std::sync::atomic::AtomicBool::new(false);
        let inner = async {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let mut b = Box::pin(Bounded::new(inner, None, deadline));
        assert_eq!(poll_once(&mut b), Poll::Ready(Err(Cut)));
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_own_cutoff_is_a_timer_armed_only_when_the_future_has_to_wait() {
        let now = Instant::now();
        let sweep = now + Duration::from_secs(5);
        let own = Some(now + Duration::from_millis(200));
        let mut ready = Box::pin(Bounded::new(std::future::ready(7), own, sweep));
        assert_eq!(poll_once(&mut ready), Poll::Ready(Ok(7)));
        assert!(ready.timer.is_none());
        let r = Bounded::new(std::future::pending::<()>(), own, sweep).await;
        assert_eq!(r, Err(Cut));
        assert_eq!(
            now.elapsed(),
            Duration::from_millis(200),
            "woken by its own timer"
        );
    }
}
