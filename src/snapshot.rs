//! The daemon's view of the fleet after a sweep: an immutable [`Snapshot`], plain data, no I/O.
//!
//! The sweeper is the only writer. It builds each new snapshot from the previous one with the
//! pure functions here ([`Snapshot::reconfigured`], [`Snapshot::swept`]), then publishes it
//! whole, so `/metrics` and `/status` always read one complete sweep, never a mix.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, Loaded, Service};
use crate::probe::{Outcome, Reason};

/// A service's health as the daemon believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not checked yet (new, or changed by a reload).
    Unknown,
    Up,
    /// Up, but the latest check was slower than `max_latency`.
    Degraded,
    Down,
}

impl State {
    pub const ALL: [State; 4] = [State::Up, State::Degraded, State::Down, State::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    /// Up or degraded: serving.
    pub fn is_up(self) -> bool {
        matches!(self, State::Up | State::Degraded)
    }
}

/// How many checks of a service ended which way, since it was added: counters for `rate()`.
/// `u32`: a check a second would take 136 years to wrap, and a snapshot holds one per service.
/// The failures by reason live behind one shared allocation made at a service's first
/// failure: most services never fail, and a counter per reason inline (88 bytes) was 38 % of
/// each of the two snapshots alive at the end of a sweep (8 MiB each at 100,000 services).
/// A service failing in every sweep copies its 88 bytes once per sweep (the older snapshot
/// still holds them), as it made a new status before.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub ok: u32,
    /// Failures, indexed like [`Reason::ALL`]; `None` until the first.
    failed: Option<Arc<[u32; Reason::ALL.len()]>>,
}

/// Equal when every counter is: counters not made yet are zeros (a count of 0 read back from
/// the state store makes them).
impl PartialEq for Counts {
    fn eq(&self, other: &Counts) -> bool {
        self.ok == other.ok
            && Reason::ALL
                .iter()
                .all(|&r| self.failed(r) == other.failed(r))
    }
}

impl Eq for Counts {}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome.reason {
            None => self.ok = self.ok.wrapping_add(1),
            Some(r) => {
                let n = self.failed(r).wrapping_add(1);
                self.set_failed(r, n);
            }
        }
    }

    /// Failures with `reason` so far.
    pub fn failed(&self, reason: Reason) -> u32 {
        self.failed.as_ref().map_or(0, |f| f[reason.index()])
    }

    /// Sets the failures with `reason` (a count read back from the state store). Copies the
    /// counters when an older snapshot still shares them.
    pub fn set_failed(&mut self, reason: Reason, n: u32) {
        let failed = self
            .failed
            .get_or_insert_with(|| Arc::new([0; Reason::ALL.len()]));
        Arc::make_mut(failed)[reason.index()] = n;
    }

    /// Failures by reason, those that happened at least once.
    pub fn failures(&self) -> impl Iterator<Item = (Reason, u32)> + '_ {
        let failed = self.failed.as_deref();
        Reason::ALL
            .iter()
            .zip(failed.into_iter().flatten())
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
    }
}

/// What of a service's state outlives the process (see `store`).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The URL it was checked at, credentials left out (they are secrets, and the store is a
    /// file): at another URL it starts over.
    pub url: String,
    pub state: State,
    pub since: SystemTime,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub counts: Counts,
}

/// What the last run stored of services the config did not have when the daemon started,
/// by name: a discovery source's, until it finds them.
pub type Restore = foldhash::HashMap<String, Kept>;

/// How long stored state waits for its service to be found again after a start (and the
/// history waits before it calls such a service removed). A source that finds it later has
/// it start over: state that old says little of now, and a source down that long at start is
/// news of its own.
pub const RESTORE_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// One service's state, carried from sweep to sweep.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub service: Arc<Service>,
    pub state: State,
    /// When `state` last changed (or the service was added).
    pub since: SystemTime,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Checks by result since the service was added (kept across reloads).
    pub counts: Counts,
    /// The latest check, once there is one.
    pub last: Option<Outcome>,
    /// The number of the sweep that last gave a verdict on the service (0: none yet). When the
    /// fleet does not fit in a sweep, the services judged longest ago go first.
    pub last_judged: u64,
    /// Sweeps in a row whose check of the service gave no verdict (it never got a slot, or
    /// started too late to have its full time): state and last result are those of the latest
    /// verdict meanwhile.
    pub missed: u32,
}

impl ServiceStatus {
    /// Continues from what the last run stored, if it was checked at the same URL (at another
    /// it is another service to know about, and starts over).
    fn resume(&mut self, k: &Kept) {
        if k.url != self.service.redacted_url() {
            return;
        }
        self.state = k.state;
        self.since = k.since;
        self.consecutive_failures = k.consecutive_failures;
        self.consecutive_successes = k.consecutive_successes;
        self.counts = k.counts.clone();
    }

    /// Whether it has no verdict of this process yet, or none since its latest try: checked
    /// in the next sweep whatever its `interval` says (see `sweep::Plan::due_in`).
    pub fn awaits_verdict(&self) -> bool {
        self.last_judged == 0 || self.missed > 0
    }

    fn new(service: Arc<Service>, now: SystemTime) -> Self {
        ServiceStatus {
            service,
            state: State::Unknown,
            since: now,
            consecutive_failures: 0,
            consecutive_successes: 0,
            counts: Counts::default(),
            last: None,
            last_judged: 0,
            missed: 0,
        }
    }

    /// This status after `outcome`. The state moves from up to down only after
    /// `failure_threshold` failures in a row, and back after `success_threshold` passes in a row,
    /// so a flapping service does not flap its state; the first result of a service sets it
    /// directly. Up and degraded follow the latest passing check.
    fn after(&self, outcome: Outcome, sweep: u64) -> ServiceStatus {
        let ok = outcome.ok();
        let consecutive_failures = if ok {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };
        let consecutive_successes = if ok {
            self.consecutive_successes.saturating_add(1)
        } else {
            0
        };
        let result = match (ok, outcome.degraded) {
            (false, _) => State::Down,
            (true, true) => State::Degraded,
            (true, false) => State::Up,
        };
        let svc = &self.service;
        let state = match self.state {
            State::Unknown => result,
            State::Up | State::Degraded if !ok => {
                if consecutive_failures >= svc.failure_threshold {
                    State::Down
                } else {
                    self.state
                }
            }
            State::Down if ok => {
                if consecutive_successes >= svc.success_threshold {
                    result
                } else {
                    State::Down
                }
            }
            _ => result,
        };
        let mut counts = self.counts.clone();
        counts.add(&outcome);
        ServiceStatus {
            service: self.service.clone(),
            state,
            since: if state == self.state {
                self.since
            } else {
                crate::timestamp::saturating_add(outcome.at, outcome.duration)
            },
            consecutive_failures,
            consecutive_successes,
            counts,
            last: Some(outcome),
            last_judged: sweep,
            missed: 0,
        }
    }
}

/// What one sweep did, in summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSummary {
    /// The sweep's slot (`sweep::Slot`): when each service with an `interval` is next due.
    pub slot: u64,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub deadline: Duration,
    pub checks: usize,
    pub failed: usize,
    pub deadline_exceeded: usize,
    /// Of those, checks that never started (every slot was busy until the deadline).
    pub not_started: usize,
    /// Of those, checks cut off before they had their full time (started late).
    pub cut_short: usize,
    /// Checks that ran on a connection kept from an earlier sweep.
    pub reused_connections: usize,
    /// The in-flight bound the sweep ran with.
    pub max_in_flight: usize,
    /// Connections kept open for reuse when the sweep ended.
    pub idle_connections: usize,
}

/// The outcomes of one sweep, in the order of `config.services`.
#[derive(Debug)]
pub struct SweepReport {
    /// The config the sweep ran with; it may have been replaced by a reload meanwhile.
    pub config: Arc<Config>,
    /// The sweep's slot in the schedule of services with their own `interval`
    /// (`sweep::Slot`).
    pub slot: u64,
    pub started_at: SystemTime,
    pub duration: Duration,
    /// `None` for a service not due in this sweep (it has an `interval` of its own).
    pub outcomes: Vec<Option<Outcome>>,
    /// The in-flight bound the sweep ran with.
    pub max_in_flight: usize,
    /// Services whose check never started.
    pub not_started: usize,
    /// Services whose check started too late to have its full time and was cut off.
    pub cut_short: usize,
    /// Whether each outcome is a verdict on its service (in `outcomes` order); empty means all
    /// are. One that is not (never started, cut short) leaves the service's state as it was.
    pub judged: Vec<bool>,
    /// Connections kept open for reuse when the sweep ended.
    pub idle_connections: usize,
}

impl SweepReport {
    /// The outcomes of the services this sweep checked.
    pub fn checked(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().flatten()
    }

    pub fn summary(&self) -> SweepSummary {
        let failed = self.checked().filter(|o| !o.ok()).count();
        let deadline_exceeded = self
            .checked()
            .filter(|o| o.reason == Some(Reason::DeadlineExceeded))
            .count();
        SweepSummary {
            slot: self.slot,
            started_at: self.started_at,
            duration: self.duration,
            deadline: self.config.daemon.deadline,
            checks: self.checked().count(),
            failed,
            deadline_exceeded,
            not_started: self.not_started,
            cut_short: self.cut_short,
            reused_connections: self.checked().filter(|o| o.reused_connection).count(),
            max_in_flight: self.max_in_flight,
            idle_connections: self.idle_connections,
        }
    }
}

/// A service whose state changed in a sweep: what gets logged, once.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub service: String,
    pub from: State,
    pub to: State,
    pub reason: Option<Reason>,
    pub error: Option<Box<str>>,
}

/// Everything `/metrics` and `/status` show, as of one sweep.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Generation of the config this snapshot reflects.
    pub generation: u64,
    pub config: Arc<Config>,
    /// One per configured service, in config order.
    pub services: Vec<ServiceStatus>,
    /// The latest completed sweep; `None` until the first one ends (not ready yet).
    pub last_sweep: Option<SweepSummary>,
    /// Sweeps completed since start.
    pub sweeps_total: u64,
    /// Checks cut off by the sweep deadline since start.
    pub deadline_exceeded_total: u64,
    /// Which services are blocked by a dependency that is down.
    pub blocked: Blocked,
    /// After a reload that changed `[daemon] interval`, until the next sweep ends: that
    /// sweep's slot and start on the new schedule (the latest sweep's slot counts the old
    /// one's), for [`Snapshot::next_check`]. Set by the sweeper, which makes the schedule.
    pub rescheduled: Option<(u64, SystemTime)>,
}

/// For each service with `depends_on`, its dependencies that are down, direct or through other
/// dependencies, the one down longest first (the likely root cause). A view computed once per
/// snapshot; empty when no service has dependencies.
#[derive(Debug, Clone, Default)]
pub struct Blocked(Arc<[Box<[u32]>]>);

impl Blocked {
    fn compute(services: &[ServiceStatus]) -> Blocked {
        if services
            .iter()
            .all(|s| s.service.extra.depends_on.is_none())
        {
            return Blocked::default();
        }
        let index: foldhash::HashMap<&str, u32> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.service.name.as_str(), i as u32))
            .collect();
        let deps = |i: u32| {
            services[i as usize]
                .service
                .extra
                .depends_on
                .iter()
                .flat_map(|d| d.names.iter())
                .filter_map(|n| index.get(&**n).copied())
        };
        let blocked = services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.service.extra.depends_on.is_none() {
                    return Box::default();
                }
                // Breadth first over the dependencies (a dependency of another shard, or one
                // removed, is not there: it blocks nothing).
                let mut seen = vec![i as u32];
                let mut queue: std::collections::VecDeque<u32> = deps(i as u32).collect();
                let mut down = Vec::new();
                while let Some(j) = queue.pop_front() {
                    if seen.contains(&j) {
                        continue;
                    }
                    seen.push(j);
                    if services[j as usize].state == State::Down {
                        down.push(j);
                    }
                    queue.extend(deps(j));
                }
                down.sort_by_key(|&j| (services[j as usize].since, j));
                down.into_boxed_slice()
            })
            .collect();
        Blocked(blocked)
    }

    /// The down dependencies of the service at `i` (indices into the snapshot's services).
    pub fn of(&self, i: usize) -> &[u32] {
        self.0.get(i).map_or(&[], |b| b)
    }
}

impl Snapshot {
    /// The snapshot before any sweep: every service `unknown`.
    pub fn new(loaded: &Loaded, now: SystemTime) -> Self {
        Snapshot {
            generation: loaded.generation,
            config: loaded.config.clone(),
            services: loaded
                .config
                .services
                .iter()
                .map(|s| ServiceStatus::new(s.clone(), now))
                .collect(),
            last_sweep: None,
            sweeps_total: 0,
            deadline_exceeded_total: 0,
            blocked: Blocked::default(),
            rescheduled: None,
        }
        .with_blocked()
    }

    /// This snapshot with [`Snapshot::blocked`] computed for its states.
    fn with_blocked(mut self) -> Self {
        self.blocked = Blocked::compute(&self.services);
        self
    }

    /// This snapshot with the state the state store kept (`kept`): every service stored
    /// at the same URL continues where it was, its threshold counts and counters included.
    /// What this config's services take is taken out of `kept`; the rest may be found later
    /// ([`Snapshot::reconfigured_restoring`]).
    pub fn restored(mut self, kept: &mut Restore) -> Self {
        for st in &mut self.services {
            if let Some(k) = kept.remove(st.service.name.as_str()) {
                st.resume(&k);
            }
        }
        self.with_blocked()
    }

    /// This snapshot under a new config: services kept (same name and target) keep their state
    /// and counters, removed ones are gone, new ones are `unknown`.
    pub fn reconfigured(&self, loaded: &Loaded, now: SystemTime) -> Self {
        self.reconfigured_restoring(loaded, now, &mut Restore::default())
    }

    /// [`Snapshot::reconfigured`], where a new service that `restore` holds (stored by the
    /// last run, at the same URL) continues from it, and is taken out of `restore`: services
    /// a discovery source finds after the start resume as the config file's do.
    pub fn reconfigured_restoring(
        &self,
        loaded: &Loaded,
        now: SystemTime,
        restore: &mut Restore,
    ) -> Self {
        let services = carry_over(&self.services, &loaded.config.services, now, restore);
        Snapshot {
            generation: loaded.generation,
            config: loaded.config.clone(),
            services,
            ..self.clone_without_services()
        }
        .with_blocked()
    }

    /// This snapshot after `report`. Outcomes are matched to services by name, target and how
    /// they are checked, so a sweep that started before a reload still lands correctly: results
    /// for removed services, or services whose check changed (a stricter CA, another
    /// expectation), are dropped; services added meanwhile stay `unknown`.
    pub fn swept(&self, report: SweepReport) -> (Snapshot, Vec<Transition>) {
        let summary = report.summary();
        let same_config = Arc::ptr_eq(&report.config, &self.config);
        let mut outcomes = report.outcomes;
        let index: foldhash::HashMap<&str, usize> = if same_config {
            foldhash::HashMap::default()
        } else {
            report
                .config
                .services
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect()
        };
        let number = self.sweeps_total + 1;
        let judged = |j: usize| report.judged.get(j).copied().unwrap_or(true);
        let mut transitions = Vec::new();
        let services = self
            .services
            .iter()
            .enumerate()
            .map(|(i, status)| {
                let j = if same_config {
                    Some(i)
                } else {
                    index
                        .get(status.service.name.as_str())
                        .copied()
                        .filter(|&j| report.config.services[j].same_check(&status.service))
                };
                match j.and_then(|j| Some((j, outcomes.get_mut(j)?.take()?))) {
                    Some((j, _)) if !judged(j) => ServiceStatus {
                        missed: status.missed.saturating_add(1),
                        ..status.clone()
                    },
                    Some((_, outcome)) => {
                        let next = status.after(outcome, number);
                        if next.state != status.state {
                            transitions.push(Transition {
                                service: status.service.name.clone(),
                                from: status.state,
                                to: next.state,
                                reason: next.last.as_ref().and_then(|o| o.reason),
                                error: next.last.as_ref().and_then(|o| o.error.clone()),
                            });
                        }
                        next
                    }
                    None => status.clone(),
                }
            })
            .collect();
        // A sweep started on the old schedule (before the reload) leaves the new one standing;
        // the new schedule's first sweep takes exactly its slot (told by number, not by a
        // clock that may step).
        let rescheduled = self.rescheduled.filter(|&(next, _)| summary.slot != next);
        let snapshot = Snapshot {
            generation: self.generation,
            config: self.config.clone(),
            services,
            sweeps_total: number,
            deadline_exceeded_total: self.deadline_exceeded_total
                + summary.deadline_exceeded as u64,
            last_sweep: Some(summary),
            blocked: Blocked::default(),
            rescheduled,
        }
        .with_blocked();
        (snapshot, transitions)
    }

    /// Whether the first sweep has finished (what `/readyz` reports).
    pub fn ready(&self) -> bool {
        self.last_sweep.is_some()
    }

    /// How many services are in `state`.
    pub fn count(&self, state: State) -> usize {
        self.services.iter().filter(|s| s.state == state).count()
    }

    /// When the service at `i` is next checked: the start of the first sweep after the
    /// latest one that it is due in (see `sweep::Plan::due_in`): the next sweep for one
    /// checked every sweep, or without a verdict yet or since its latest try. `None` before
    /// the first sweep, unless a reload has set the next one on a new schedule.
    pub fn next_check(&self, i: usize) -> Option<SystemTime> {
        let interval = self.config.daemon.interval;
        // Counted from the latest sweep, or from the one before the next on a new schedule.
        let (slot, started_at) = match (self.rescheduled, self.last_sweep.as_ref()) {
            (Some((next, at)), _) => (next.wrapping_sub(1), at.checked_sub(interval)?),
            (None, Some(sweep)) => (sweep.slot, sweep.started_at),
            (None, None) => return None,
        };
        let st = self.services.get(i)?;
        let next = if st.awaits_verdict() {
            slot.wrapping_add(1)
        } else {
            st.service.next_due_after(slot)
        };
        let sweeps = u32::try_from(next.wrapping_sub(slot)).unwrap_or(u32::MAX);
        let wait = interval.saturating_mul(sweeps);
        Some(crate::timestamp::saturating_add(started_at, wait))
    }

    /// The status of the service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.service.name == name)
    }

    fn clone_without_services(&self) -> Snapshot {
        Snapshot {
            generation: self.generation,
            config: self.config.clone(),
            services: Vec::new(),
            last_sweep: self.last_sweep.clone(),
            sweeps_total: self.sweeps_total,
            deadline_exceeded_total: self.deadline_exceeded_total,
            blocked: Blocked::default(),
            rescheduled: self.rescheduled,
        }
    }
}

/// The statuses of `services`, carried over from `old` for every service with the same name
/// and target, `unknown` for the rest.
///
/// Most services are found by pointer ([`crate::config::align`]); only the rest are matched by
/// name, against the old statuses no pointer claimed (names are unique on both sides, so a
/// name matched by pointer cannot be another service's).
fn carry_over(
    old: &[ServiceStatus],
    services: &[Arc<Service>],
    now: SystemTime,
    restore: &mut Restore,
) -> Vec<ServiceStatus> {
    let crate::config::Alignment { found, claimed } =
        crate::config::align(old, services, |s| &s.service);
    let mut by_name: Option<foldhash::HashMap<&str, &ServiceStatus>> = None;
    services
        .iter()
        .zip(found)
        .map(|(svc, found)| {
            let previous = match found {
                Some(k) => Some(&old[k]),
                None => by_name
                    .get_or_insert_with(|| {
                        old.iter()
                            .zip(&claimed)
                            .filter(|(_, c)| !**c)
                            .map(|(s, _)| (s.service.name.as_str(), s))
                            .collect()
                    })
                    .get(svc.name.as_str())
                    .copied()
                    .filter(|s| s.service.same_target(svc)),
            };
            match previous {
                Some(s) => ServiceStatus {
                    service: svc.clone(),
                    // Checked another way now: due in the next sweep, not on its turn (which
                    // may be an hour away for a service with an `interval`).
                    last_judged: if s.service.check_digest == svc.check_digest {
                        s.last_judged
                    } else {
                        0
                    },
                    ..s.clone()
                },
                None => {
                    let mut st = ServiceStatus::new(svc.clone(), now);
                    if let Some(k) = restore.remove(svc.name.as_str()) {
                        st.resume(&k);
                    }
                    st
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn loaded(generation: u64, src: &str) -> Loaded {
        Loaded {
            generation,
            config: Arc::new(crate::config::parse(Path::new("t.toml"), src).expect("valid")),
        }
    }

    fn services(names: &[(&str, &str)]) -> String {
        names
            .iter()
            .map(|(n, u)| format!("[[service]]\nname = \"{n}\"\nurl = \"{u}\"\n"))
            .collect()
    }

    /// A service the last run stored, found after the start: it resumes once, at the URL it
    /// was stored at; gone and found again later, it starts over like any new service.
    #[test]
    fn a_service_found_after_the_start_resumes_once_and_only_at_its_url() {
        let none = loaded(1, "");
        let found = loaded(
            1,
            "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n\
             [[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/other\"\n",
        );
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let kept = |url: &str| Kept {
            url: url.to_string(),
            state: State::Down,
            since,
            consecutive_failures: 7,
            consecutive_successes: 0,
            counts: Counts::default(),
        };
        let mut restore = Restore::default();
        restore.insert("a".into(), kept("http://127.0.0.1/"));
        restore.insert("b".into(), kept("http://127.0.0.1/stored-elsewhere"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        let start = Snapshot::new(&none, now);
        let s = start.reconfigured_restoring(&found, now, &mut restore);
        assert_eq!(
            (
                s.services[0].state,
                s.services[0].since,
                s.services[0].consecutive_failures
            ),
            (State::Down, since, 7)
        );
        assert_eq!(
            (s.services[1].state, s.services[1].since),
            (State::Unknown, now)
        );
        assert!(restore.is_empty(), "each taken once");
        let gone = s.reconfigured_restoring(&none, now, &mut restore);
        let back = gone.reconfigured_restoring(&found, now, &mut restore);
        assert_eq!(back.services[0].state, State::Unknown, "starts over");
    }

    /// The failure counters are shared between snapshots until one of them counts another
    /// failure: the older snapshot (still being read by a scrape) keeps its numbers.
    #[test]
    fn counts_are_copied_on_the_first_change_and_not_before() {
        let mut older = Counts::default();
        assert_eq!(older.failures().count(), 0, "no failures, no counters");
        older.add(&outcome(true));
        older.add(&outcome(false));
        let mut newer = older.clone();
        let shared = |a: &Counts, b: &Counts| match (&a.failed, &b.failed) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        assert!(shared(&older, &newer), "a copy of the status shares them");
        newer.add(&outcome(true));
        assert!(shared(&older, &newer), "a pass does not touch them");
        newer.add(&outcome(false));
        assert!(!shared(&older, &newer), "the first change copies them");
        assert_eq!((older.ok, older.failed(Reason::HttpStatus)), (1, 1));
        assert_eq!((newer.ok, newer.failed(Reason::HttpStatus)), (2, 2));
        let mut zeros = Counts::default();
        zeros.set_failed(Reason::Timeout, 0);
        assert_eq!(
            zeros,
            Counts::default(),
            "made but all zero is equal to none made"
        );
        assert_eq!(
            newer.failures().collect::<Vec<_>>(),
            [(Reason::HttpStatus, 2)]
        );
        assert_eq!(newer.failed(Reason::Timeout), 0);
    }

    fn outcome(ok: bool) -> Outcome {
        if ok {
            Outcome {
                http_status: Some(200),
                ..Outcome::passed(SystemTime::UNIX_EPOCH, Duration::from_millis(5))
            }
        } else {
            Outcome::failed(
                Reason::HttpStatus,
                SystemTime::UNIX_EPOCH,
                Duration::from_millis(5),
                "status 500",
            )
        }
    }

    fn report(config: &Arc<Config>, oks: &[bool]) -> SweepReport {
        SweepReport {
            slot: 0,
            config: config.clone(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(10),
            outcomes: oks.iter().map(|&ok| Some(outcome(ok))).collect(),
            max_in_flight: 10,
            not_started: 0,
            cut_short: 0,
            judged: Vec::new(),
            idle_connections: 0,
        }
    }

    /// A service with an `interval` of its own is left as it is by the sweeps it is not due in:
    /// its thresholds count checks, its series stay, and `/status` says when it is next due.
    #[test]
    fn sweeps_a_service_is_not_due_in_leave_it_alone_and_thresholds_count_checks() {
        let l = loaded(
            1,
            "[daemon]\ninterval = \"10s\"\n[[service]]\nname = \"rare\"\n\
             url = \"http://127.0.0.1:1/\"\ninterval = \"30s\"\nfailure_threshold = 2\n",
        );
        let every = l.config.services[0].every;
        assert_eq!(every, 3);
        let at = |slot: u64, outcome: Option<Outcome>| SweepReport {
            slot,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(10 * slot),
            outcomes: vec![outcome],
            ..report(&l.config, &[true])
        };
        let mut s = Snapshot::new(&l, SystemTime::UNIX_EPOCH);
        s = s.swept(at(0, Some(outcome(true)))).0;
        assert_eq!(s.services[0].state, State::Up);
        let phase = u64::from(l.config.services[0].phase);
        // One failed check, then two sweeps it is not due in: still up, one failure counted.
        s = s.swept(at(1, Some(outcome(false)))).0;
        for slot in 2..4 {
            let (next, transitions) = s.swept(at(slot, None));
            assert!(transitions.is_empty());
            s = next;
            let st = &s.services[0];
            assert_eq!(
                (st.state, st.consecutive_failures, st.missed),
                (State::Up, 1, 0)
            );
            assert_eq!(st.counts.failed(Reason::HttpStatus), 1);
            assert!(st.last.is_some(), "the latest result stays, and its series");
            let due = (slot + 1..).find(|k| k % 3 == phase).expect("a turn");
            assert_eq!(
                s.next_check(0),
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10 * due)),
                "after slot {slot}"
            );
            assert_eq!(s.last_sweep.as_ref().map(|w| w.checks), Some(0));
        }
        // The second failed check turns it down.
        s = s.swept(at(4, Some(outcome(false)))).0;
        assert_eq!(s.services[0].state, State::Down);
        // A service never judged is due in the next sweep whatever its turn.
        let fresh = Snapshot::new(&l, SystemTime::UNIX_EPOCH)
            .swept(at(7, None))
            .0;
        assert_eq!(
            fresh.next_check(0),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(80))
        );
    }

    /// A reload that changes `[daemon] interval` puts the next sweeps on a new schedule, whose
    /// slots count in the new interval: the next check is told from that, not from the latest
    /// sweep's slot, until a sweep of the new schedule ends.
    #[test]
    fn after_the_interval_changes_the_next_check_follows_the_new_schedule() {
        let secs = |n: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(n);
        let text = |interval: &str| {
            format!(
                "[daemon]\ninterval = \"{interval}\"\n[[service]]\nname = \"rare\"\n\
                 url = \"http://127.0.0.1:1/\"\ninterval = \"30s\"\n"
            )
        };
        let old = loaded(1, &text("10s"));
        let at = |l: &Loaded, slot: u64, started: u64| SweepReport {
            slot,
            started_at: secs(started),
            outcomes: vec![Some(outcome(true))],
            ..report(&l.config, &[true])
        };
        let mut s = Snapshot::new(&old, secs(0));
        s = s.swept(at(&old, 2, 20)).0;
        // At 22 s, every 5 s from now on: the next sweep is slot 5 (25 s / 5 s).
        let new = loaded(2, &text("5s"));
        let mut r = s.reconfigured(&new, secs(22));
        r.rescheduled = Some((5, secs(25)));
        let rare = &new.config.services[0];
        let due = |from: u64| (from..).find(|&k| rare.due_in(k)).expect("a turn");
        let expected = if r.services[0].awaits_verdict() {
            secs(25)
        } else {
            secs(5 * due(5))
        };
        assert_eq!(r.next_check(0), Some(expected));
        // A sweep of the old schedule ending now changes nothing of that.
        let late = r.swept(at(&old, 2, 20)).0;
        assert_eq!(late.rescheduled, Some((5, secs(25))));
        // The first sweep of the new schedule: counted from it again.
        let first = late.swept(at(&new, 5, 25)).0;
        assert_eq!(first.rescheduled, None);
        assert_eq!(first.next_check(0), Some(secs(5 * due(6))));
    }

    #[test]
    fn every_service_is_unknown_until_swept_and_not_ready() {
        let l = loaded(1, &services(&[("a", "http://127.0.0.1/")]));
        let s = Snapshot::new(&l, SystemTime::UNIX_EPOCH);
        assert_eq!(s.services[0].state, State::Unknown);
        assert!(!s.ready());
    }

    #[test]
    fn a_sweep_sets_states_counts_and_reports_changes_once() {
        let l = loaded(
            1,
            &services(&[("a", "http://127.0.0.1/"), ("b", "http://127.0.0.2/")]),
        );
        let s0 = Snapshot::new(&l, SystemTime::UNIX_EPOCH);
        let (s1, t1) = s0.swept(report(&l.config, &[true, false]));
        assert!(s1.ready());
        assert_eq!(s1.services[0].state, State::Up);
        assert_eq!(s1.services[1].state, State::Down);
        assert_eq!(s1.services[1].consecutive_failures, 1);
        assert_eq!(t1.len(), 2);
        let (s2, t2) = s1.swept(report(&l.config, &[true, false]));
        assert!(t2.is_empty(), "a steady state produces no transitions");
        assert_eq!(s2.services[1].consecutive_failures, 2);
        assert_eq!(s2.services[0].consecutive_successes, 2);
        assert_eq!(s2.sweeps_total, 2);
        let (s3, t3) = s2.swept(report(&l.config, &[true, true]));
        assert_eq!(t3.len(), 1);
        assert_eq!((t3[0].from, t3[0].to), (State::Down, State::Up));
        assert_eq!(s3.services[1].consecutive_failures, 0);
    }

    #[test]
    fn a_reload_keeps_unchanged_services_drops_removed_and_adds_unknown() {
        let l1 = loaded(
            1,
            &services(&[("keep", "http://127.0.0.1/"), ("gone", "http://127.0.0.2/")]),
        );
        let (s1, _) =
            Snapshot::new(&l1, SystemTime::UNIX_EPOCH).swept(report(&l1.config, &[false, true]));
        let l2 = loaded(
            2,
            &services(&[("keep", "http://127.0.0.1/"), ("new", "http://127.0.0.3/")]),
        );
        let s2 = s1.reconfigured(&l2, SystemTime::UNIX_EPOCH);
        assert_eq!(s2.generation, 2);
        assert_eq!(s2.services.len(), 2);
        assert_eq!(s2.services[0].state, State::Down);
        assert_eq!(s2.services[0].consecutive_failures, 1);
        assert_eq!(s2.services[1].state, State::Unknown);
        assert!(s2.service("gone").is_none());
        assert_eq!(s2.sweeps_total, 1);
    }

    #[test]
    fn a_refresh_keeping_arcs_carries_state_over_by_pointer_and_the_rest_by_name() {
        let names: Vec<(String, String)> = (0..12)
            .map(|i| (format!("s{i}"), format!("http://127.0.0.{}/", i + 1)))
            .collect();
        let refs: Vec<(&str, &str)> = names
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        let l1 = loaded(1, &services(&refs));
        let oks: Vec<bool> = (0..12).map(|i| i % 3 != 0).collect();
        let (s1, _) = Snapshot::new(&l1, SystemTime::UNIX_EPOCH).swept(report(&l1.config, &oks));
        // As discovery does: the same Arcs, one removed, the last moved to the front (beyond
        // the lookahead), a new one, and one made anew under the same name and URL.
        let mut list = l1.config.services.clone();
        list.remove(4);
        let last = list.pop().expect("services");
        list.insert(0, last);
        let extra = loaded(
            9,
            &services(&[("new", "http://127.0.0.99/"), ("s7", "http://127.0.0.8/")]),
        );
        list.push(extra.config.services[0].clone());
        let i7 = list.iter().position(|s| s.name == "s7").expect("s7");
        list[i7] = extra.config.services[1].clone();
        let mut c = (*l1.config).clone();
        c.services = list;
        let l2 = Loaded {
            generation: 1,
            config: Arc::new(c),
        };
        let s2 = s1.reconfigured(&l2, SystemTime::UNIX_EPOCH);
        for (i, st) in s2.services.iter().enumerate() {
            assert!(
                Arc::ptr_eq(&st.service, &l2.config.services[i]),
                "in config order"
            );
            let expected = match st.service.name.as_str() {
                "new" => State::Unknown,
                n => {
                    let i: usize = n[1..].parse().expect("a number");
                    if oks[i] { State::Up } else { State::Down }
                }
            };
            assert_eq!(st.state, expected, "{}", st.service.name);
        }
        assert!(s2.service("s4").is_none());
        assert_eq!(s2.services.len(), 12);
    }

    #[test]
    fn a_service_pointed_elsewhere_starts_again_as_unknown() {
        let l1 = loaded(1, &services(&[("a", "http://127.0.0.1/")]));
        let (s1, _) = Snapshot::new(&l1, SystemTime::UNIX_EPOCH).swept(report(&l1.config, &[true]));
        let l2 = loaded(2, &services(&[("a", "http://127.0.0.9/")]));
        assert_eq!(
            s1.reconfigured(&l2, SystemTime::UNIX_EPOCH).services[0].state,
            State::Unknown
        );
    }

    #[test]
    fn a_sweep_that_straddles_a_reload_does_not_land_on_a_service_now_checked_otherwise() {
        let l1 = loaded(
            1,
            &services(&[("a", "http://127.0.0.1/"), ("b", "http://127.0.0.2/")]),
        );
        let s1 = Snapshot::new(&l1, SystemTime::UNIX_EPOCH);
        // `a` gets a stricter expectation; `b` is unchanged.
        let src = format!(
            "{}expect_body_contains = \"ok\"\n{}",
            services(&[("a", "http://127.0.0.1/")]),
            services(&[("b", "http://127.0.0.2/")])
        );
        let l2 = loaded(2, &src);
        let s2 = s1.reconfigured(&l2, SystemTime::UNIX_EPOCH);
        let (s3, _) = s2.swept(report(&l1.config, &[true, true]));
        assert_eq!(
            s3.service("a").map(|s| s.state),
            Some(State::Unknown),
            "checked under the old settings"
        );
        assert_eq!(s3.service("b").map(|s| s.state), Some(State::Up));
    }

    #[test]
    fn a_check_that_gave_no_verdict_leaves_the_state_and_counts_a_missed_sweep() {
        let l = loaded(
            1,
            &services(&[("a", "http://127.0.0.1/"), ("b", "http://127.0.0.2/")]),
        );
        let (s1, _) =
            Snapshot::new(&l, SystemTime::UNIX_EPOCH).swept(report(&l.config, &[true, true]));
        let mut r = report(&l.config, &[false, false]);
        r.judged = vec![false, true];
        let (s2, t) = s1.swept(r);
        let a = s2.service("a").expect("a");
        assert_eq!(
            (a.state, a.missed, a.consecutive_failures),
            (State::Up, 1, 0)
        );
        assert!(
            a.last.as_ref().is_some_and(Outcome::ok),
            "the last verdict stays"
        );
        assert_eq!(s2.service("b").map(|s| s.state), Some(State::Down));
        assert_eq!(t.len(), 1, "only b changed");
        let (s3, _) = s2.swept(report(&l.config, &[true, true]));
        assert_eq!(
            s3.service("a").map(|s| (s.missed, s.last_judged)),
            Some((0, 3))
        );
    }

    #[test]
    fn a_sweep_that_straddles_a_reload_only_lands_on_services_still_there() {
        let l1 = loaded(
            1,
            &services(&[("a", "http://127.0.0.1/"), ("b", "http://127.0.0.2/")]),
        );
        let s1 = Snapshot::new(&l1, SystemTime::UNIX_EPOCH);
        let l2 = loaded(
            2,
            &services(&[("c", "http://127.0.0.3/"), ("b", "http://127.0.0.2/")]),
        );
        let s2 = s1.reconfigured(&l2, SystemTime::UNIX_EPOCH);
        // The sweep ran with the old config.
        let (s3, _) = s2.swept(report(&l1.config, &[true, false]));
        assert_eq!(s3.service("c").map(|s| s.state), Some(State::Unknown));
        assert_eq!(s3.service("b").map(|s| s.state), Some(State::Down));
        assert!(s3.service("a").is_none());
    }
}
