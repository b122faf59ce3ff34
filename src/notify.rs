//! systemd's notify protocol (`Type=notify`): tells the service manager when the daemon is
//! ready, reloading or stopping, what it is doing (`STATUS=`), and that the sweeper is alive
//! (`WATCHDOG=1`).
//!
//! | message | when |
//! |---|---|
//! | `READY=1` + `STATUS=` | the first sweep has finished (what `/readyz` reports) |
//! | `STATUS=97/100 up, last sweep 0.21 s` | after every sweep and reload |
//! | `RELOADING=1` + `MONOTONIC_USEC=` | a reload starts (SIGHUP or `POST /-/reload`) |
//! | `READY=1` | the reload is over, accepted or rejected |
//! | `STOPPING=1` | shutdown begins |
//! | `WATCHDOG=1` | every `WATCHDOG_USEC / 2`, from the sweeper's own loop |
//!
//! The watchdog is pinged by the sweeper task itself ([`Watchdog`] is polled in its `select!`
//! loop), never by a task of its own: a wedged sweeper then stops pinging and systemd restarts
//! the daemon, which a separate timer task would hide.
//!
//! Everything here is a no-op without `NOTIFY_SOCKET` (not started by systemd), so `run`,
//! `demo` and the tests use the same code. Sending is one datagram on a unix socket; a failure
//! is logged and otherwise ignored, since the daemon's job does not depend on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::snapshot::{Snapshot, State};

/// How long past its deadline a sweep may still be running before the sweeper counts as
/// wedged and stops pinging the watchdog. A sweep is over by its deadline by construction; this
/// covers publishing the results of a large fleet on a busy host.
pub const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

/// Sends the lifecycle messages. Cheap to clone; clones share whether `READY=1` was sent.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Whether `NOTIFY_SOCKET` is set, so work for nobody (status lines) can be skipped.
    enabled: bool,
    /// Set once the first sweep's `READY=1` is out: a reload that ends before then must not
    /// announce readiness early.
    ready: Arc<AtomicBool>,
}

impl Notifier {
    /// Talks to the service manager named by `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier {
            enabled: false,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `RELOADING=1` with the time the reload started, as `Type=notify-reload` expects.
    pub fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(e) => warn!(error = %e, "cannot read the monotonic clock for MONOTONIC_USEC"),
        }
    }

    /// `READY=1` after a reload, whatever its outcome: the daemon runs on either way. Not sent
    /// before the first sweep's own `READY=1`.
    pub fn reloaded(&self) {
        if self.enabled && self.ready.load(Ordering::Acquire) {
            send(&[NotifyState::Ready]);
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        if self.enabled {
            send(&[NotifyState::Stopping]);
        }
    }

    /// Sends `STATUS=` for every new snapshot, with `READY=1` for the first that has a sweep,
    /// until `shutdown`.
    pub async fn run(
        self,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        if !self.enabled {
            return shutdown.cancelled().await;
        }
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            self.publish(&snapshot);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() {
                    // The sweeper is gone; the daemon is shutting down.
                    return shutdown.cancelled().await;
                },
            }
        }
    }

    fn publish(&self, snapshot: &Snapshot) {
        let line = status_line(snapshot);
        let status = NotifyState::Status(&line);
        if snapshot.ready() && !self.ready.swap(true, Ordering::AcqRel) {
            send(&[NotifyState::Ready, status]);
        } else {
            send(&[status]);
        }
    }
}

/// The one-line summary shown by `systemctl status`: `97/100 up, last sweep 0.21 s`, then what
/// needs attention (checks cut off by the deadline) and the shard, when there is one.
pub fn status_line(snapshot: &Snapshot) -> String {
    let total = snapshot.services.len();
    let mut line = match &snapshot.last_sweep {
        None => format!("first sweep of {total} services running"),
        Some(sweep) => format!(
            "{}/{total} up, last sweep {:.2} s",
            snapshot.count(State::Up),
            sweep.duration.as_secs_f64()
        ),
    };
    if let Some(sweep) = snapshot
        .last_sweep
        .as_ref()
        .filter(|s| s.deadline_exceeded > 0)
    {
        line.push_str(&format!(
            ", {} cut off by the deadline",
            sweep.deadline_exceeded
        ));
    }
    let shard = snapshot.config.daemon.shard;
    if shard.count() > 1 {
        line.push_str(&format!(
            ", shard {shard} of {} services",
            snapshot.config.fleet_size
        ));
    }
    line
}

/// The watchdog, as seen from the loop that must prove it is alive: [`Watchdog::tick`] is
/// ready every `WATCHDOG_USEC / 2` (systemd's advice), then [`Watchdog::ping`] sends
/// `WATCHDOG=1`. Disabled, `tick` never completes.
#[derive(Debug)]
pub struct Watchdog {
    ticker: Option<tokio::time::Interval>,
}

impl Watchdog {
    /// Enabled when systemd set `WATCHDOG_USEC` (and `WATCHDOG_PID` is unset or this process).
    pub fn from_env() -> Self {
        match sd_notify::watchdog_enabled() {
            Some(timeout) if std::env::var_os("NOTIFY_SOCKET").is_some() => {
                Watchdog::every(timeout / 2)
            }
            _ => Watchdog::disabled(),
        }
    }

    /// A watchdog that never ticks.
    pub fn disabled() -> Self {
        Watchdog { ticker: None }
    }

    /// Ticks every `period` (at least 1 ms), the first time at once.
    fn every(period: Duration) -> Self {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
        // After a stall, one ping is enough; a burst would prove nothing more.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Watchdog {
            ticker: Some(ticker),
        }
    }

    /// Completes when the next ping is due; never, when disabled.
    pub async fn tick(&mut self) {
        match &mut self.ticker {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Like [`Watchdog::tick`], but never completes after `until`: a sweep still running past
    /// its deadline (plus [`WATCHDOG_GRACE`]) is wedged, and the pings stop.
    pub async fn tick_until(&mut self, until: Instant) {
        if Instant::now() >= until {
            return std::future::pending().await;
        }
        tokio::select! {
            // Past `until`, no ping even if one was due at the same moment.
            biased;
            () = tokio::time::sleep_until(until) => std::future::pending().await,
            () = self.tick() => {}
        }
    }

    /// Sends `WATCHDOG=1`.
    pub fn ping(&self) {
        if self.ticker.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // Not fatal: systemd may be restarting, or the socket is not meant for us.
        debug!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loaded, parse};
    use crate::probe::{Outcome, Reason};
    use crate::snapshot::SweepReport;
    use std::path::Path;
    use std::time::SystemTime;

    fn snapshot(src: &str, oks: &[Option<bool>]) -> Snapshot {
        let loaded = Loaded {
            generation: 1,
            config: Arc::new(parse(Path::new("t.toml"), src).expect("valid")),
        };
        let s = Snapshot::new(&loaded, SystemTime::UNIX_EPOCH);
        if oks.is_empty() {
            return s;
        }
        let outcomes: Vec<_> = oks
            .iter()
            .map(|ok| match ok {
                Some(true) => Outcome {
                    http_status: Some(200),
                    ..Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(5))
                },
                Some(false) => Outcome::failed(
                    Reason::HttpStatus,
                    SystemTime::UNIX_EPOCH,
                    Duration::from_millis(5),
                    "500",
                ),
                None => Outcome::failed(
                    Reason::DeadlineExceeded,
                    SystemTime::UNIX_EPOCH,
                    Duration::from_secs(1),
                    "cut off",
                ),
            })
            .collect();
        let report = SweepReport {
            slot: 0,
            config: loaded.config.clone(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(214),
            outcomes: outcomes.into_iter().map(Some).collect(),
            max_in_flight: 100,
            not_started: 0,
            cut_short: 0,
            judged: Vec::new(),
            idle_connections: 0,
        };
        s.swept(report).0
    }

    fn services(n: usize) -> String {
        (0..n)
            .map(|i| format!("[[service]]\nname = \"s{i}\"\nurl = \"http://127.0.0.1/\"\n"))
            .collect()
    }

    /// Paused time, no I/O (nothing is pinged): only the schedule is under test.
    #[tokio::test(start_paused = true)]
    async fn the_watchdog_ticks_every_period_and_stops_for_good_once_a_sweep_is_overdue() {
        let mut watchdog = Watchdog::every(Duration::from_millis(100));
        let start = Instant::now();
        let overdue = start + Duration::from_millis(250);
        let mut ticks = Vec::new();
        while tokio::time::timeout(Duration::from_secs(60), watchdog.tick_until(overdue))
            .await
            .is_ok()
        {
            ticks.push(Instant::now() - start);
            assert!(
                ticks.len() < 10,
                "still ticking past the overdue point: {ticks:?}"
            );
        }
        assert_eq!(
            ticks,
            [0, 100, 200].map(Duration::from_millis),
            "ticks up to the overdue point, then none for a minute"
        );
        // Past the overdue point it stays silent whenever it is polled again.
        let later = tokio::time::timeout(Duration::from_secs(60), watchdog.tick_until(overdue));
        assert!(later.await.is_err());
        // The outer loop's plain tick goes on.
        assert!(
            tokio::time::timeout(Duration::from_millis(150), watchdog.tick())
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_watchdog_never_ticks() {
        let mut watchdog = Watchdog::disabled();
        let tick = tokio::time::timeout(Duration::from_secs(3600), watchdog.tick());
        assert!(tick.await.is_err());
    }

    #[test]
    fn the_status_line_counts_up_services_and_the_sweep_time() {
        let s = snapshot(&services(3), &[Some(true), Some(true), Some(false)]);
        assert_eq!(status_line(&s), "2/3 up, last sweep 0.21 s");
    }

    #[test]
    fn the_status_line_says_the_first_sweep_is_running_before_it_ends() {
        let s = snapshot(&services(4), &[]);
        assert_eq!(status_line(&s), "first sweep of 4 services running");
    }

    #[test]
    fn the_status_line_names_cut_off_checks_and_the_shard() {
        let src = format!("[daemon]\nshard = \"0/1\"\n{}", services(2));
        let s = snapshot(&src, &[Some(true), None]);
        assert_eq!(
            status_line(&s),
            "1/2 up, last sweep 0.21 s, 1 cut off by the deadline"
        );
        // A shard of several: find one that owns at least one of 40 services.
        let src = format!("[daemon]\nshard = \"1/2\"\n{}", services(40));
        let s = snapshot(&src, &[]);
        let owned = s.services.len();
        assert_eq!(
            status_line(&s),
            format!("first sweep of {owned} services running, shard 1/2 of 40 services")
        );
    }
}
