//! The sweep: every service checked concurrently, at most `max_in_flight` at once, all of it over
//! by a hard deadline; and the [`Sweeper`] that runs one on a fixed schedule and publishes each
//! result as a new [`Snapshot`].
//!
//! [`run_sweep`] is separate from the loop so that `healthsweep check`, the benchmark and tests
//! run exactly the code the daemon runs.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, Loaded, Service};
use crate::notify::{WATCHDOG_GRACE, Watchdog};
use crate::probe::{Outcome, Prober, Reason};
use crate::snapshot::{RESTORE_FOR, Restore, Snapshot, State, SweepReport, Transition};

/// A check cut off by the sweep deadline is a verdict on its service when it had at least this
/// share of the time any check of it gets (`min(timeout, deadline)`); with less, it started too
/// late to say anything.
pub const JUDGED_SHARE: f64 = 0.9;

/// What one sweep will do: which services, how many at once, in which order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: Arc<Config>,
    /// Checks in flight at most.
    pub max_in_flight: usize,
    /// Service indices in the order to start them; `None` is config order. Only due services
    /// are in it.
    pub order: Option<Arc<[u32]>>,
    /// Which services this sweep checks (by index); `None`: all of them.
    pub due: Option<Arc<[bool]>>,
    /// This sweep's place in the schedule of services with an `interval` of their own (see
    /// [`Slot`]).
    pub slot: u64,
}

impl Plan {
    /// Every service of `config` in config order, `max_in_flight` at a time.
    pub fn new(config: Arc<Config>, max_in_flight: usize) -> Plan {
        Plan {
            config,
            max_in_flight: max_in_flight.max(1),
            order: None,
            due: None,
            slot: 0,
        }
    }

    /// Only the services due in sweep `slot`: those checked every sweep, those whose turn it
    /// is ([`Service::due_in`]), and those without a verdict of this process yet or since
    /// their latest try (new, changed by a reload, restored from the state store, or left
    /// without a verdict by an overloaded sweep): they go at once rather than wait for a turn
    /// that may be an hour away.
    pub fn due_in(mut self, slot: u64, snapshot: &Snapshot) -> Plan {
        self.slot = slot;
        if self.config.services.iter().all(|s| s.every <= 1) {
            return self;
        }
        let same = Arc::ptr_eq(&snapshot.config, &self.config);
        let due = self
            .config
            .services
            .iter()
            .enumerate()
            .map(|(i, svc)| svc.due_in(slot) || !same || snapshot.services[i].awaits_verdict())
            .collect();
        self.due = Some(due);
        self
    }

    /// Whether service `i` is checked in this sweep.
    fn is_due(&self, i: usize) -> bool {
        self.due.as_ref().is_none_or(|d| d[i])
    }

    /// The start order, from `snapshot` (of the same config): only the due services, and
    /// when they do not fit in flight at once, the services whose latest verdict is oldest
    /// first (never judged: first of all), then among equals the slowest last time first
    /// (longest-job-first, so slow checks overlap the fast ones instead of trailing behind
    /// them at the end of the sweep).
    ///
    /// No service starves: each sweep's first `max_in_flight` checks start at once and have
    /// their full time, so each gives a verdict (a check cut short by the deadline is none, see
    /// [`run_sweep`]), and they are those judged longest ago. So every service gets a verdict
    /// at least once every ⌈services / max_in_flight⌉ sweeps.
    pub fn fair_order(mut self, snapshot: &Snapshot) -> Plan {
        let n = self.config.services.len();
        if n > u32::MAX as usize {
            return self;
        }
        let mut order: Vec<u32> = (0..n as u32).filter(|&i| self.is_due(i as usize)).collect();
        let crowded = order.len() > self.max_in_flight;
        if crowded && Arc::ptr_eq(&snapshot.config, &self.config) {
            let key = |i: &u32| {
                let s = &snapshot.services[*i as usize];
                let cost = s.last.as_ref().map_or(Duration::MAX, |o| o.duration);
                (s.last_judged, std::cmp::Reverse(cost))
            };
            order.sort_by_cached_key(key);
        } else if self.due.is_none() {
            // Config order, every service: no list needed.
            return self;
        }
        self.order = Some(order.into());
        self
    }
}

/// Where the daemon is in the schedule of services with their own `interval`: sweep numbers
/// counted from the Unix epoch in `[daemon] interval`s, so a restart (or a reload changing
/// the interval) lands each service near the same place in its cycle. Counted on from the
/// first sweep rather than read from the clock each time, so a late tick never skips a
/// slot or takes one twice.
#[derive(Debug, Clone, Copy)]
pub struct Slot(u64);

impl Slot {
    /// The slot of a sweep starting at `now` with sweeps every `interval`.
    pub fn at(now: SystemTime, interval: Duration) -> Slot {
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Slot((since.as_nanos() / interval.as_nanos().max(1)) as u64)
    }

    /// This slot, and moves on to the next one.
    fn take(&mut self) -> u64 {
        let slot = self.0;
        self.0 = self.0.wrapping_add(1);
        slot
    }
}

/// Runs one sweep as `plan` says.
///
/// Over by start + the deadline whatever the services do: checks still running then are polled
/// once more and end with what they were doing (a lane that does not end by itself is stopped
/// `LANE_GRACE` later), and every service without a result (cut off, or never started because
/// all slots were busy) has a `deadline_exceeded` outcome. Each outcome says whether it is a
/// verdict on the service ([`SweepReport::judged`]): a check that never started, or was cut off
/// before it had its full time, is not.
pub async fn run_sweep(prober: Arc<Prober>, plan: Plan) -> SweepReport {
    let due = plan.due.clone();
    let is_due = |i: usize| due.as_ref().is_none_or(|d| d[i]);
    let Plan {
        config,
        max_in_flight,
        order,
        slot,
        ..
    } = plan;
    let started = Instant::now();
    let started_at = SystemTime::now();
    let deadline = started + config.daemon.deadline;
    let n = config.services.len();
    let queue = Arc::new(Queue {
        next: AtomicUsize::new(0),
        order,
        began: (0..n).map(|_| AtomicU64::new(0)).collect(),
        started,
        deadline,
    });

    let checks = due.as_ref().map_or(n, |d| d.iter().filter(|d| **d).count());
    let lanes = lanes(max_in_flight, checks);
    let mut running = JoinSet::new();
    let done = Arc::new(Done::new(n));
    for lane in 0..lanes {
        // The in-flight bound shared out: the first `max_in_flight % lanes` take one more.
        let share = max_in_flight / lanes + usize::from(lane < max_in_flight % lanes);
        let lane = run_lane(
            prober.clone(),
            config.clone(),
            queue.clone(),
            share,
            done.clone(),
        );
        running.spawn(tokio::task::coop::unconstrained(lane));
    }
    // Every lane ends at the deadline by itself; this is the hard stop for one that does not (a
    // thread blocked in a call that should not block, a bug). What it finished before is kept;
    // what it was still running shows as cut off.
    let _ = tokio::time::timeout_at(deadline + LANE_GRACE, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    let duration = started.elapsed();

    let outcomes = done.take();

    let judged: Vec<bool> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| is_due(i) && queue.judged(i, o.as_ref(), &config.services[i]))
        .collect();
    let not_started = (0..n)
        .filter(|&i| is_due(i) && queue.began[i].load(Ordering::Relaxed) == 0)
        .count();
    let cut_short = (0..n).filter(|&i| is_due(i) && !judged[i]).count() - not_started;
    let outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.or_else(|| is_due(i).then(|| queue.unfinished(i, started_at, max_in_flight)))
        })
        .collect();
    SweepReport {
        config,
        slot,
        started_at,
        duration,
        outcomes,
        max_in_flight,
        not_started,
        cut_short,
        judged,
        idle_connections: prober.idle_connections(),
    }
}

/// The work list shared by a sweep's lanes.
struct Queue {
    /// Position in `order` of the next service to check.
    next: AtomicUsize,
    /// Service indices in start order; `None` is config order.
    order: Option<Arc<[u32]>>,
    /// When each check began, as nanoseconds after `started` plus one; zero means not begun.
    began: Box<[AtomicU64]>,
    started: Instant,
    deadline: Instant,
}

impl Queue {
    /// The next service to check, its start noted; `None` once all have been taken or the
    /// deadline has passed.
    fn pop(&self, config: &Config) -> Option<usize> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let i = match &self.order {
            Some(order) => *order.get(k)? as usize,
            None => k,
        };
        config.services.get(i)?;
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let offset = (now - self.started).as_nanos() as u64;
        self.began[i].store(offset + 1, Ordering::Relaxed);
        Some(i)
    }

    /// Whether service `i`'s check (with `outcome`, if it finished) is a verdict on the service.
    /// It is not when the check never started, or started so late that the deadline cut it off
    /// before it had [`JUDGED_SHARE`] of the time any check of it gets, `min(timeout,
    /// deadline)`: a healthy service cannot answer in the last 100 ms of a sweep, and saying it
    /// is down would be the daemon's overload speaking. A check cut off after (nearly) its full
    /// time is a verdict: it did not answer.
    fn judged(&self, i: usize, outcome: Option<&Outcome>, svc: &Service) -> bool {
        let began = self.began[i].load(Ordering::Relaxed);
        if began == 0 {
            return false;
        }
        let cut = outcome.is_none_or(|o| o.reason == Some(Reason::DeadlineExceeded));
        if !cut {
            return true;
        }
        let offset = Duration::from_nanos(began - 1);
        let had = (self.deadline - self.started).saturating_sub(offset);
        let full = svc.timeout.min(self.deadline - self.started);
        // Nine tenths: the first checks of a sweep start a few milliseconds in (lanes start
        // them one by one), and a service that hangs through almost all of its time has
        // had its say; one that got a small part of it has not.
        had >= full.mul_f64(JUDGED_SHARE)
    }

    /// The outcome for a service that has no result at the deadline.
    fn unfinished(&self, i: usize, started_at: SystemTime, max_in_flight: usize) -> Outcome {
        let sweep_len = self.deadline - self.started;
        match self.began[i].load(Ordering::Relaxed) {
            0 => Outcome::failed(
                Reason::DeadlineExceeded,
                crate::timestamp::saturating_add(started_at, sweep_len),
                Duration::ZERO,
                format!(
                    "not started before the sweep deadline: all {max_in_flight} check slots were busy"
                ),
            ),
            began => {
                let offset = Duration::from_nanos(began - 1);
                Outcome::failed(
                    Reason::DeadlineExceeded,
                    crate::timestamp::saturating_add(started_at, offset),
                    sweep_len.saturating_sub(offset),
                    "still running at the sweep deadline",
                )
            }
        }
    }
}

/// How long after the deadline a sweep waits for its lanes to hand in their results before it
/// gives up on them.
const LANE_GRACE: Duration = Duration::from_millis(500);

/// How many lanes carry a sweep's checks: one per runtime worker thread, so each core polls its
/// share of the checks in one task, and none when there is nothing to check.
fn lanes(max_in_flight: usize, checks: usize) -> usize {
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    threads.clamp(1, max_in_flight.max(1)).min(checks.max(1))
}

/// One lane: up to `share` checks in flight at once in one task, each followed by the next
/// service from the queue, until the queue is empty or the deadline has passed. Each finished
/// check's outcome goes into `done` in its service's place as it ends.
///
/// One task polling many checks instead of a task per check: a task costs an allocation, a
/// place in the runtime's task list and a wake-up through the scheduler, and a channel send
/// for its result, per check; here a check is a future in a `FuturesUnordered`, and its result
/// goes into its service's slot of the sweep's table. No timer for the sweep deadline per
/// check either (see [`crate::probe::Bounded`]; a check's own shorter `timeout` still arms
/// one): at the deadline the lane polls every check still running once more, and each ends
/// there with what it was doing.
async fn run_lane(
    prober: Arc<Prober>,
    config: Arc<Config>,
    queue: Arc<Queue>,
    share: usize,
    done: Arc<Done>,
) {
    let (prober, config, deadline) = (&*prober, &*config, queue.deadline);
    let check = move |i: usize| {
        let service = &config.services[i];
        async move { (i as u32, prober.check(service, deadline).await) }
    };
    let mut running = FuturesUnordered::new();
    while running.len() < share
        && let Some(i) = queue.pop(config)
    {
        running.push(check(i));
        if running.len() % YIELD_EVERY == 0 {
            // Started a batch at a time, each given its first poll (connection, request)
            // before the next: starting thousands in one poll of this task held its thread
            // for tens of milliseconds (the server's tasks, timers and the I/O driver waited).
            let ended = poll_ready(&mut running).await;
            done.extend(ended);
            tokio::task::yield_now().await;
        }
    }
    let cutoff = tokio::time::sleep_until(deadline);
    tokio::pin!(cutoff);
    let mut since_yield = 0;
    while !running.is_empty() {
        tokio::select! {
            biased;
            Some(result) = running.next() => {
                done.extend([result]);
                if let Some(i) = queue.pop(config) {
                    running.push(check(i));
                }
                // Outside the coop budget, checks that end at once (an unreachable address
                // fails on the first poll) would run the whole queue in one poll of this task,
                // and the server's tasks and the I/O driver on this thread would wait for it.
                since_yield += 1;
                if since_yield == YIELD_EVERY {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            () = &mut cutoff => {
                let ended = ended_by_deadline(&mut running);
                done.extend(ended);
                break;
            }
        }
    }
}

/// Checks a lane starts, or completes, between two yields to the scheduler.
const YIELD_EVERY: usize = 256;

/// Polls the checks that are ready to be polled (new ones, woken ones) once, with the lane's
/// own waker, and returns those that ended.
async fn poll_ready<F: Future>(running: &mut FuturesUnordered<F>) -> Vec<F::Output> {
    std::future::poll_fn(|cx| {
        let mut ended = Vec::new();
        while let Poll::Ready(Some(result)) = running.poll_next_unpin(cx) {
            ended.push(result);
        }
        Poll::Ready(ended)
    })
    .await
}

/// The sweep's finished checks, by service index: the lanes put each outcome in its place as
/// the check ends, so a lane stopped by the hard stop has handed over what it finished, and
/// the table becomes the report's outcomes as it is. One table of `Option<Outcome>` for the
/// whole fleet rather than a list per lane merged at the end: at 100,000 services the lists
/// (grown by doubling) and the merged table were 20 MiB at the end of every sweep, this is 9.
/// The lanes take the lock once per ended check (or per batch) for a few stores: with one
/// lane per runtime worker (two here) and a check's ~12 µs between, it is rarely contended;
/// on hosts with many workers, batching per lane would keep the lock's cache line still.
struct Done(std::sync::Mutex<Vec<Option<Outcome>>>);

impl Done {
    fn new(services: usize) -> Done {
        Done(std::sync::Mutex::new(vec![None; services]))
    }

    /// The table, taken for the report; a lane the hard stop left running writes into the
    /// empty table after, and its writes are dropped.
    fn take(&self) -> Vec<Option<Outcome>> {
        std::mem::take(&mut *lock(&self.0))
    }

    fn extend(&self, ended: impl IntoIterator<Item = (u32, Outcome)>) {
        let mut table = lock(&self.0);
        for (i, outcome) in ended {
            if let Some(place) = table.get_mut(i as usize) {
                *place = Some(outcome);
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A store into a slot leaves the table whole; a panic cannot tear it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcomes of the checks still running at the deadline: each polled once more ends there
/// with what it was doing. The waker is of no use, as the lane is done with them.
fn ended_by_deadline<F: Future>(running: &mut FuturesUnordered<F>) -> Vec<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(running)
        .iter_pin_mut()
        .filter_map(|check| match check.poll(&mut cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        })
        .collect()
}

/// Runs sweeps on a fixed schedule and publishes a [`Snapshot`] after each one, and right away
/// when the config changes (so removed services vanish and new ones show as `unknown`).
pub struct Sweeper {
    prober: Arc<Prober>,
    configs: watch::Receiver<Loaded>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// The in-flight bound used when the config does not set one.
    connection_budget: usize,
    /// Whether the latest sweep left checks unstarted (logged on change only).
    starved: bool,
    /// Pinged from this loop itself, so a wedged sweeper stops pinging (see [`crate::notify`]).
    watchdog: Watchdog,
    /// The next sweep's slot.
    slot: Slot,
    /// What the last run stored of services not in the config at the start, for when a
    /// discovery source finds them; dropped after [`RESTORE_FOR`].
    restore: Restore,
    restore_until: Instant,
}

impl Sweeper {
    pub fn new(
        prober: Arc<Prober>,
        configs: watch::Receiver<Loaded>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        connection_budget: usize,
    ) -> Self {
        Sweeper {
            prober,
            configs,
            snapshots,
            connection_budget,
            starved: false,
            watchdog: Watchdog::disabled(),
            slot: Slot(0),
            restore: Restore::default(),
            restore_until: Instant::now(),
        }
    }

    /// Resumes the services of `restore` (stored by the last run, not in the config at the
    /// start) when they appear within [`RESTORE_FOR`].
    pub fn with_restore(mut self, restore: Restore) -> Self {
        self.restore = restore;
        self.restore_until = Instant::now() + RESTORE_FOR;
        self
    }

    /// Pings `watchdog` while sweeps run on time.
    pub fn with_watchdog(mut self, watchdog: Watchdog) -> Self {
        self.watchdog = watchdog;
        self
    }

    /// Sweeps until `shutdown` is cancelled; a sweep in flight then is dropped (its checks
    /// cancelled, their sockets closed).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut loaded = self.configs.borrow_and_update().clone();
        // The snapshot was made from the config as it stood when the daemon was wired; the
        // fleet may have composed another since (a discovery source answering before this
        // task first ran). Results land only on services the snapshot lists, so it must list
        // these, or discovered services would stay missing until the next change.
        if !Arc::ptr_eq(&self.snapshots.borrow().config, &loaded.config) {
            self.publish_reconfigured(&loaded, None);
        }
        self.prober.use_config(&loaded.config);
        let mut ticker = schedule(loaded.config.daemon.interval, Instant::now());
        self.slot = Slot::at(SystemTime::now(), loaded.config.daemon.interval);
        let mut number: u64 = 0;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.watchdog.tick() => self.watchdog.ping(),
                Ok(()) = self.configs.changed() => self.reconfigure(&mut loaded, &mut ticker),
                _ = ticker.tick() => {
                    number += 1;
                    if self.sweep(number, &mut loaded, &mut ticker, &shutdown).await.is_break() {
                        return;
                    }
                }
            }
        }
    }

    async fn sweep(
        &mut self,
        number: u64,
        loaded: &mut Loaded,
        ticker: &mut tokio::time::Interval,
        shutdown: &CancellationToken,
    ) -> ControlFlow<()> {
        let current = self.snapshots.borrow().clone();
        let plan = Plan::new(loaded.config.clone(), self.max_in_flight(&loaded.config))
            .due_in(self.slot.take(), &current)
            .fair_order(&current);
        let span = info_span!("sweep", number, services = loaded.config.services.len());
        let sweep = run_sweep(self.prober.clone(), plan).instrument(span.clone());
        tokio::pin!(sweep);
        let overdue = Instant::now() + loaded.config.daemon.deadline + WATCHDOG_GRACE;
        let report = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return ControlFlow::Break(()),
                report = &mut sweep => break report,
                () = self.watchdog.tick_until(overdue) => self.watchdog.ping(),
                Ok(()) = self.configs.changed() => self.reconfigure(loaded, ticker),
            }
        };
        let _entered = span.enter();
        let summary = report.summary();
        let current = self.snapshots.borrow().clone();
        let (next, transitions) = current.swept(report);
        log_transitions(&transitions);
        self.log_starvation(&summary);
        debug!(
            duration_ms = summary.duration.as_millis() as u64,
            checks = summary.checks,
            failed = summary.failed,
            deadline_exceeded = summary.deadline_exceeded,
            "sweep finished"
        );
        self.snapshots.send_replace(Arc::new(next));
        self.prober.tidy();
        if crate::fault::injected(crate::fault::Fault::SweepPanic) {
            panic!("injected fault: sweep-panic");
        }
        ControlFlow::Continue(())
    }

    /// Publishes the current results under the new config at once; probing carries on.
    fn reconfigure(&mut self, loaded: &mut Loaded, ticker: &mut tokio::time::Interval) {
        let next = self.configs.borrow_and_update().clone();
        let interval = next.config.daemon.interval;
        let rescheduled = (interval != loaded.config.daemon.interval).then(|| {
            *ticker = schedule(interval, Instant::now() + interval);
            let at = SystemTime::now() + interval;
            self.slot = Slot::at(at, interval);
            (self.slot.0, at)
        });
        self.publish_reconfigured(&next, rescheduled);
        self.prober.use_config(&next.config);
        *loaded = next;
    }

    /// Publishes the current results under `next`, new services resuming what the last run
    /// stored of them; `rescheduled` is the next sweep's slot and start when the interval
    /// changed.
    fn publish_reconfigured(&mut self, next: &Loaded, rescheduled: Option<(u64, SystemTime)>) {
        if !self.restore.is_empty() && Instant::now() > self.restore_until {
            self.restore = Restore::default();
        }
        let current = self.snapshots.borrow().clone();
        let mut snapshot =
            current.reconfigured_restoring(next, SystemTime::now(), &mut self.restore);
        if rescheduled.is_some() {
            snapshot.rescheduled = rescheduled;
        }
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    /// Checks that never got a slot before the deadline mean the fleet does not fit: said once
    /// when it starts and once when it ends, not every sweep.
    fn log_starvation(&mut self, summary: &crate::snapshot::SweepSummary) {
        let starved = summary.not_started + summary.cut_short > 0;
        if starved && !self.starved {
            warn!(
                not_started = summary.not_started,
                cut_short = summary.cut_short,
                max_in_flight = summary.max_in_flight,
                "checks did not start before the sweep deadline; raise the open-file limit (LimitNOFILE) or max_in_flight, or lengthen the deadline"
            );
        } else if !starved && self.starved {
            info!("every check starts before the sweep deadline again");
        }
        self.starved = starved;
    }

    fn max_in_flight(&self, config: &Config) -> usize {
        crate::limits::max_in_flight(config, self.connection_budget)
    }
}

/// A fixed-rate schedule: ticks at `first`, `first + interval`, ... regardless of how long each
/// sweep takes (it never takes much longer than the deadline, which is at most the interval:
/// [`LANE_GRACE`] at worst). A tick missed because the process was stopped is skipped rather
/// than bunched up.
fn schedule(interval: Duration, first: Instant) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(first, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// State changes are logged once each; a steady state is never logged again. The first result
/// of a healthy service is not news, so it is logged at debug.
fn log_transitions(transitions: &[Transition]) {
    for t in transitions {
        let reason = t.reason.map(Reason::as_str);
        let error = t.error.as_deref();
        match (t.from, t.to) {
            (State::Unknown, State::Up) => {
                debug!(target_service = %t.service, "service is up")
            }
            (_, State::Down) => {
                warn!(target_service = %t.service, from = t.from.as_str(), reason, error, "service is down")
            }
            (State::Degraded, State::Up) => {
                info!(target_service = %t.service, "service is no longer degraded")
            }
            (_, State::Up) => {
                info!(target_service = %t.service, from = t.from.as_str(), "service is up again")
            }
            (_, State::Degraded) => {
                warn!(target_service = %t.service, from = t.from.as_str(), "service is degraded: slower than max_latency")
            }
            (_, State::Unknown) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! One sweep against servers in this process, in paused time: the servers' delays and the
    //! deadline are virtual, so the figures below are exact, not "about".
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request after `delay` (or never, with `None`).
    async fn server(delay: Option<Duration>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let Some(delay) = delay else {
                            std::future::pending::<()>().await;
                            return;
                        };
                        tokio::time::sleep(delay).await;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn config(deadline: &str, services: &[(&str, std::net::SocketAddr)]) -> Arc<Config> {
        let mut src = format!("[daemon]\ninterval = \"{deadline}\"\ndeadline = \"{deadline}\"\n");
        for (name, addr) in services {
            src.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nurl = \"http://{addr}/health\"\n"
            ));
        }
        Arc::new(crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid"))
    }

    fn outcome<'a>(report: &'a SweepReport, name: &str) -> (&'a Outcome, bool) {
        let i = report
            .config
            .services
            .iter()
            .position(|s| s.name == name)
            .expect("service");
        (
            report.outcomes[i].as_ref().expect("checked"),
            report.judged[i],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_service_is_cut_at_the_deadline_and_the_others_take_their_own_time() {
        let fast = server(Some(Duration::from_millis(200))).await;
        let hang = server(None).await;
        let c = config("1s", &[("fast", fast), ("hang", hang)]);
        let report = run_sweep(Arc::new(Prober::new(64)), Plan::new(c, 10)).await;
        assert_eq!(
            report.duration,
            Duration::from_secs(1),
            "over at the deadline exactly"
        );
        let (o, judged) = outcome(&report, "fast");
        assert!(o.ok() && judged, "{o:?}");
        assert!(
            o.duration >= Duration::from_millis(200) && o.duration < Duration::from_millis(210),
            "{:?}",
            o.duration
        );
        let (o, judged) = outcome(&report, "hang");
        assert_eq!(o.reason, Some(Reason::DeadlineExceeded));
        assert!(judged, "it had the whole sweep: a verdict");
        // Ended by the lane's last poll at the deadline, not dropped: it says what it was
        // doing, as a check cut by a timer of its own does.
        assert_eq!(o.duration, Duration::from_secs(1), "{o:?}");
        assert!(
            o.error
                .as_deref()
                .is_some_and(|e| e.contains("sweep deadline reached")
                    && e.contains("waiting for the response")),
            "{o:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn more_services_than_slots_run_in_waves_and_the_rest_are_no_verdict() {
        let addr = server(Some(Duration::from_millis(300))).await;
        let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
        let services: Vec<(&str, std::net::SocketAddr)> =
            names.iter().map(|n| (n.as_str(), addr)).collect();
        let c = config("1s", &services);
        // Two slots, 300 ms each, 1 s: three waves finish (6 checks), the seventh starts at
        // 0.9 s and is cut short.
        let report = run_sweep(Arc::new(Prober::new(64)), Plan::new(c.clone(), 2)).await;
        let done = report.checked().filter(|o| o.ok()).count();
        assert_eq!(done, 6, "{:?}", report.outcomes);
        assert_eq!(report.cut_short + report.not_started, 1);
        assert_eq!(report.judged.iter().filter(|j| !**j).count(), 1);
        // The next sweep starts with the one that got no verdict.
        let loaded = Loaded {
            generation: 1,
            config: c.clone(),
        };
        let (snapshot, _) = Snapshot::new(&loaded, SystemTime::UNIX_EPOCH).swept(report);
        let missed = snapshot
            .services
            .iter()
            .position(|s| s.missed == 1)
            .expect("one missed");
        let plan = Plan::new(c, 2).fair_order(&snapshot);
        assert_eq!(
            plan.order.as_deref().and_then(|o| o.first()),
            Some(&(missed as u32))
        );
    }

    /// Real time and two worker threads: two lanes share the in-flight bound between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_lanes_together_keep_to_the_in_flight_bound() {
        use std::sync::atomic::AtomicUsize;
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (n, p) = (now.clone(), peak.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (now, peak) = (n.clone(), p.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(read) = s.read(&mut buf).await {
                        if read == 0 {
                            return;
                        }
                        let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(at_once, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let names: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        let services: Vec<(&str, std::net::SocketAddr)> =
            names.iter().map(|n| (n.as_str(), addr)).collect();
        let c = config("5s", &services);
        assert_eq!(lanes(3, 12), 2, "one lane per worker thread");
        let report = run_sweep(Arc::new(Prober::new(64)), Plan::new(c, 3)).await;
        assert_eq!(report.checked().filter(|o| o.ok()).count(), 12);
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=3).contains(&peak), "at most 3 at once, saw {peak}");
        assert!(report.duration < Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_never_started_is_no_verdict_and_says_why() {
        let hang = server(None).await;
        let c = config("500ms", &[("a", hang), ("b", hang), ("c", hang)]);
        let report = run_sweep(Arc::new(Prober::new(64)), Plan::new(c, 1)).await;
        assert_eq!(report.not_started, 2);
        let (o, judged) = outcome(&report, "c");
        assert!(!judged);
        assert!(
            o.error
                .as_deref()
                .is_some_and(|e| e.contains("not started")),
            "{o:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_with_its_own_interval_is_checked_first_at_once_then_on_its_turn() {
        let addr = server(Some(Duration::from_millis(10))).await;
        let src = format!(
            "[daemon]\ninterval = \"1s\"\ndeadline = \"1s\"\n\
             [[service]]\nname = \"often\"\nurl = \"http://{addr}/\"\n\
             [[service]]\nname = \"rare\"\nurl = \"http://{addr}/\"\ninterval = \"4s\"\n"
        );
        let config =
            Arc::new(crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid"));
        let loaded = Loaded {
            generation: 1,
            config: config.clone(),
        };
        let phase = u64::from(config.services[1].phase);
        let prober = Arc::new(Prober::new(64));
        let mut snapshot = Snapshot::new(&loaded, SystemTime::UNIX_EPOCH);
        let mut rare_checked = Vec::new();
        for slot in 100..112 {
            let plan = Plan::new(config.clone(), 10)
                .due_in(slot, &snapshot)
                .fair_order(&snapshot);
            let report = run_sweep(prober.clone(), plan).await;
            assert!(report.outcomes[0].as_ref().is_some_and(|o| o.ok()));
            assert_eq!((report.not_started, report.cut_short), (0, 0));
            if report.outcomes[1].is_some() {
                rare_checked.push(slot);
            }
            snapshot = snapshot.swept(report).0;
        }
        // The first sweep (never judged), then every fourth.
        let turns: Vec<u64> = (101..112).filter(|k| k % 4 == phase).collect();
        let mut expected = vec![100];
        expected.extend(turns.iter().filter(|&&k| k != 100));
        assert_eq!(rare_checked, expected);
        assert_eq!(snapshot.services[1].counts.ok as usize, expected.len());
        assert_eq!(snapshot.services[0].counts.ok, 12);
    }

    /// The fleet may compose another config (a discovery source answered) between the wiring,
    /// which made the first snapshot, and the sweeper's first step: its services are swept
    /// and shown all the same.
    #[tokio::test(start_paused = true)]
    async fn a_config_composed_before_the_first_sweep_is_the_one_shown() {
        let addr = server(Some(Duration::from_millis(10))).await;
        let wired = Loaded {
            generation: 1,
            config: config("1s", &[("static", addr)]),
        };
        let (configs_tx, configs) = watch::channel(wired.clone());
        let (snapshots_tx, mut snapshots) =
            watch::channel(Arc::new(Snapshot::new(&wired, SystemTime::UNIX_EPOCH)));
        let sweeper = Sweeper::new(Arc::new(Prober::new(64)), configs, snapshots_tx, 64);
        configs_tx.send_replace(Loaded {
            generation: 1,
            config: config("1s", &[("static", addr), ("found", addr)]),
        });
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(sweeper.run(shutdown.clone()));
        let checked = |s: &Snapshot| {
            s.services
                .iter()
                .filter(|st| st.last.as_ref().is_some_and(|o| o.ok()))
                .map(|st| st.service.name.clone())
                .collect::<Vec<_>>()
        };
        let swept = tokio::time::timeout(
            Duration::from_secs(5),
            snapshots.wait_for(|s| s.sweeps_total >= 2),
        )
        .await
        .expect("two sweeps in 5 s")
        .expect("sweeper alive")
        .clone();
        assert_eq!(checked(&swept), ["static", "found"]);
        shutdown.cancel();
        run.await.expect("sweeper ends");
    }

    #[test]
    fn the_schedule_skips_ticks_missed_while_stopped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let start = Instant::now();
            let mut t = schedule(Duration::from_secs(1), start);
            t.tick().await;
            tokio::time::advance(Duration::from_millis(3500)).await;
            t.tick().await;
            let next = t.tick().await;
            assert_eq!(
                next - start,
                Duration::from_secs(4),
                "no burst of missed ticks"
            );
        });
    }
}
