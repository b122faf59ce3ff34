//! What the daemon remembers of each service beyond its current state: its recent results (the
//! last [`RECENT`]), its state changes ([`Event`]s), and uptime computed exactly from them.
//!
//! The [`Recorder`] is the only writer: it follows the published snapshots (never the sweep
//! itself) and folds each new one in. Readers (the status page, `/status`, badges) take the read
//! lock for as long as they copy what they show. A service removed by a reload keeps its history
//! for `history_retention` and has it again when it returns. The state store (`store`) makes it
//! all survive restarts.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::probe::Reason;
use crate::snapshot::{RESTORE_FOR, Snapshot, State};

mod recent;

/// Results kept per service (the strip on the status page).
pub const RECENT: usize = 60;

/// State changes kept per service with their error text; older events keep time and state.
const ERRORS_KEPT: usize = 20;

/// State changes kept per service at most (in memory and in the store): a service that
/// changes state more often than that within the retention has uptime over the time the
/// latest of them cover.
pub const MAX_EVENTS: usize = 2000;

/// Uptime windows shown everywhere, with their names.
pub const WINDOWS: [(&str, Duration); 3] = [
    ("24h", Duration::from_secs(86_400)),
    ("7d", Duration::from_secs(7 * 86_400)),
    ("30d", Duration::from_secs(30 * 86_400)),
];

/// Milliseconds since the Unix epoch (negative before it, which never happens in practice).
pub type Millis = i64;

pub fn millis(t: SystemTime) -> Millis {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub fn system_time(ms: Millis) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// What one check said, packed in a `u64` (the ring keeps four bytes of it, see `recent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Result(u64);

impl Result {
    /// Latency is kept in milliseconds up to 2^24 - 1 (4.6 hours, far above any timeout).
    const LATENCY_MAX: u64 = (1 << 24) - 1;

    pub fn new(at: SystemTime, latency: Duration, outcome: Verdict) -> Self {
        Result::from_parts(recent::secs_of(at), latency, outcome.code())
    }

    pub fn at(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0 >> 32)
    }

    pub fn latency(self) -> Duration {
        Duration::from_millis((self.0 >> 8) & Self::LATENCY_MAX)
    }

    pub fn verdict(self) -> Verdict {
        Verdict::from_code(self.0 as u8)
    }

    fn secs(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn code(self) -> u8 {
        self.0 as u8
    }

    fn from_parts(secs: u32, latency: Duration, code: u8) -> Self {
        let latency = (latency.as_millis() as u64).min(Self::LATENCY_MAX);
        Result(u64::from(secs) << 32 | latency << 8 | u64::from(code))
    }

    /// The packed form, as stored.
    pub fn to_bits(self) -> u64 {
        self.0
    }

    pub fn from_bits(bits: u64) -> Self {
        Result(bits)
    }
}

/// A check's verdict: passed, passed slowly, or failed for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Up,
    Degraded,
    Down(Reason),
}

impl Verdict {
    fn code(self) -> u8 {
        match self {
            Verdict::Up => 0,
            Verdict::Degraded => 1,
            Verdict::Down(r) => 2 + r.index() as u8,
        }
    }

    fn from_code(code: u8) -> Verdict {
        match code {
            0 => Verdict::Up,
            1 => Verdict::Degraded,
            c => Verdict::Down(
                Reason::ALL
                    .get(usize::from(c - 2))
                    .copied()
                    .unwrap_or(Reason::InvalidResponse),
            ),
        }
    }

    pub fn state(self) -> State {
        match self {
            Verdict::Up => State::Up,
            Verdict::Degraded => State::Degraded,
            Verdict::Down(_) => State::Down,
        }
    }

    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Down(r) => Some(r),
            _ => None,
        }
    }
}

/// A state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Millis,
    pub from: State,
    pub to: State,
    pub reason: Option<Reason>,
    /// The error of the check that caused it (kept for the latest 20 events).
    pub error: Option<Box<str>>,
}

/// One service's history.
#[derive(Debug, Clone, Default)]
pub struct ServiceHistory {
    /// A digest of the URL it was checked at: a service that comes back at another target
    /// starts over. (A digest, not the URL: one allocation less per service.)
    url: u64,
    recent: recent::Recent,
    /// Oldest first, within the retention.
    events: Vec<Event>,
    /// The state the history last saw, and since when (the latest event, or first sight).
    pub state: Option<State>,
    /// When a reload removed it; its history goes once that is `history_retention` ago.
    pub removed_at: Option<Millis>,
    /// What the state store last got of its state (see `recorder`): a row is written when
    /// this changes.
    pub written: u64,
}

impl ServiceHistory {
    pub fn new(url: &str) -> Self {
        ServiceHistory {
            url: url_digest(url),
            ..ServiceHistory::default()
        }
    }

    /// Whether this is the history of a service checked at `url`.
    pub fn is_at(&self, url: &str) -> bool {
        self.url == url_digest(url)
    }

    pub fn push(&mut self, r: Result) {
        self.recent.push(r);
    }

    /// The latest results, oldest first.
    pub fn recent(&self) -> std::vec::IntoIter<Result> {
        self.recent.to_vec().into_iter()
    }

    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn record(&mut self, mut event: Event) {
        self.state = Some(event.to);
        // Oldest first, always: an event is never before the one it follows (a clock set
        // back, a state restored from the store).
        if let Some(last) = self.events.last() {
            event.at = event.at.max(last.at);
        }
        // Most services change state rarely: room for one more, not four, while few.
        if self.events.len() < 8 {
            self.events.reserve_exact(1);
        }
        // A service flapping every sweep for a month would keep millions: the latest
        // MAX_EVENTS are kept, and uptime is over the time they cover.
        if self.events.len() >= MAX_EVENTS {
            self.events.drain(..self.events.len() + 1 - MAX_EVENTS);
        }
        self.events.push(event);
        let n = self.events.len();
        if n > ERRORS_KEPT {
            self.events[n - ERRORS_KEPT - 1].error = None;
        }
    }

    /// Drops events that ended before `cutoff`, keeping the one in force at it.
    pub fn forget_before(&mut self, cutoff: Millis) {
        let in_force = self.events.partition_point(|e| e.at <= cutoff);
        if in_force > 1 {
            self.events.drain(..in_force - 1);
        }
    }

    /// The share of known time (up, degraded or down; not unknown) in `[from, to)` the service
    /// was up or degraded, or `None` when no state was known in it. Exact: from the events.
    pub fn uptime(&self, from: Millis, to: Millis) -> Option<f64> {
        self.uptime_excluding(from, to, &[])
    }

    /// [`ServiceHistory::uptime`] with the time in `excluded` (sorted, not overlapping:
    /// maintenance windows) left out of both the time up and the time known.
    pub fn uptime_excluding(
        &self,
        from: Millis,
        to: Millis,
        excluded: &[(Millis, Millis)],
    ) -> Option<f64> {
        let (up, known) = self.time_in(from, to, excluded);
        (known > 0).then(|| up as f64 / known as f64)
    }

    /// Milliseconds up and milliseconds known in `[from, to)`, less `excluded`.
    fn time_in(&self, from: Millis, to: Millis, excluded: &[(Millis, Millis)]) -> (i64, i64) {
        let (mut up, mut known) = (0i64, 0i64);
        // From the event in force at `from` on.
        let first = self
            .events
            .partition_point(|e| e.at <= from)
            .saturating_sub(1);
        for (i, e) in self.events.iter().enumerate().skip(first) {
            if e.at >= to {
                break;
            }
            let end = self.events.get(i + 1).map_or(to, |n| n.at).min(to);
            let start = e.at.max(from);
            if end <= start {
                continue;
            }
            let overlap: i64 = excluded
                .iter()
                .map(|&(s, x)| (x.min(end) - s.max(start)).max(0))
                .sum();
            let span = end - start - overlap;
            match e.to {
                State::Up | State::Degraded => {
                    up += span;
                    known += span;
                }
                State::Down => known += span,
                State::Unknown => {}
            }
        }
        (up, known)
    }

    /// Uptime per UTC day for the `days` days ending with today's (oldest first), less
    /// `excluded`.
    pub fn daily(
        &self,
        now: Millis,
        days: u32,
        excluded: &[(Millis, Millis)],
    ) -> Vec<(Millis, Option<f64>)> {
        const DAY: i64 = 86_400_000;
        let today = now.div_euclid(DAY) * DAY;
        (0..i64::from(days))
            .rev()
            .map(|back| {
                let start = today - back * DAY;
                (
                    start,
                    self.uptime_excluding(start, (start + DAY).min(now), excluded),
                )
            })
            .collect()
    }
}

fn url_digest(url: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(url.as_bytes(), 0)
}

/// Every service's history, by name.
#[derive(Debug, Default)]
pub struct History {
    pub services: foldhash::HashMap<Box<str>, ServiceHistory>,
}

/// The history, shared: the recorder writes, the handlers read.
pub type Shared = Arc<RwLock<History>>;

/// Reads the shared history, a poisoned lock included (the data is plain values).
pub fn read(shared: &Shared) -> std::sync::RwLockReadGuard<'_, History> {
    shared.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, History> {
    shared.write().unwrap_or_else(|e| e.into_inner())
}

/// What a snapshot changed, for the state store.
#[derive(Debug, Default)]
pub struct Changes {
    /// Events, by service name.
    pub events: Vec<(Box<str>, Event)>,
    /// Services removed (by name) at this time.
    pub removed: Vec<Box<str>>,
    /// Services back after a removal.
    pub returned: Vec<Box<str>>,
}

/// Folds snapshots into the history.
pub struct Recorder {
    shared: Shared,
    /// The number of the last sweep folded in (results of earlier sweeps are not pushed again).
    last_sweep: u64,
    /// The config generation last seen, to notice removed services only when it changes.
    last_generation: Option<u64>,
    retention: Duration,
    /// The sweep of the latest pruning.
    pruned_at: u64,
    /// After a start with discovery sources: until when services the history knows but the
    /// snapshot does not list are not called removed (a source may yet find them; removed,
    /// the store would forget their state). A reload ends the wait.
    removals_wait_until: Option<SystemTime>,
}

impl Recorder {
    pub fn new(shared: Shared, retention: Duration) -> Self {
        Recorder {
            shared,
            last_sweep: 0,
            last_generation: None,
            retention,
            pruned_at: 0,
            removals_wait_until: None,
        }
    }

    pub fn set_retention(&mut self, retention: Duration) {
        self.retention = retention;
    }

    /// Folds `snapshot` in: a result per service judged since the last one folded, an event
    /// per state change, removals and returns. What changed comes back for the store.
    pub fn record(&mut self, snapshot: &Snapshot, now: SystemTime) -> Changes {
        let mut changes = Changes::default();
        let mut h = write(&self.shared);
        let new_sweep = snapshot.sweeps_total > self.last_sweep;
        let reconfigured = self.last_generation != Some(snapshot.generation);
        for st in &snapshot.services {
            let name = st.service.name.as_str();
            // Without credentials, as the store keeps it: a new password is the same target.
            let url = st.service.redacted_url();
            let entry = match h.services.get_mut(name) {
                Some(e) if e.is_at(url) => e,
                _ => {
                    // New, or at another target: a history of its own.
                    h.services.insert(name.into(), ServiceHistory::new(url));
                    h.services.get_mut(name).expect("just inserted")
                }
            };
            if entry.removed_at.take().is_some() {
                changes.returned.push(name.into());
            }
            if new_sweep
                && st.last_judged > self.last_sweep
                && let Some(last) = &st.last
            {
                let verdict = match (last.reason, last.degraded) {
                    (Some(r), _) => Verdict::Down(r),
                    (None, true) => Verdict::Degraded,
                    (None, false) => Verdict::Up,
                };
                entry.push(Result::new(last.at, last.duration, verdict));
            }
            if entry.state != Some(st.state) {
                // A state restored from before a time the history knows nothing of (the
                // daemon was stopped): it holds again from now, not from its old `since`.
                let since = millis(st.since);
                let at = match entry.events.last() {
                    Some(last) if since < last.at => millis(now),
                    _ => since,
                };
                let event = Event {
                    at,
                    from: entry.state.unwrap_or(State::Unknown),
                    to: st.state,
                    reason: st
                        .last
                        .as_ref()
                        .and_then(|o| o.reason)
                        .filter(|_| !st.state.is_up()),
                    error: st
                        .last
                        .as_ref()
                        .and_then(|o| o.error.clone())
                        .filter(|_| !st.state.is_up()),
                };
                if event.from == State::Unknown && event.to == State::Unknown {
                    // First sight of a service not checked yet: nothing happened.
                    entry.state = Some(State::Unknown);
                } else {
                    changes.events.push((name.into(), event.clone()));
                    entry.record(event);
                }
            }
        }
        let now_ms = millis(now);
        let started = self.last_generation.is_none();
        if started && !snapshot.config.discover.is_empty() {
            self.removals_wait_until = Some(crate::timestamp::saturating_add(now, RESTORE_FOR));
        }
        let removals = match self.removals_wait_until {
            Some(until) => !started && (reconfigured || now >= until),
            None => reconfigured,
        };
        if removals {
            self.removals_wait_until = None;
            let present: foldhash::HashSet<&str> = snapshot
                .services
                .iter()
                .map(|s| s.service.name.as_str())
                .collect();
            for (name, e) in h.services.iter_mut() {
                if e.removed_at.is_none() && !present.contains(&**name) {
                    e.removed_at = Some(now_ms);
                    // The time it is gone is unknown time, not the last state.
                    if e.state != Some(State::Unknown) {
                        let event = Event {
                            at: now_ms,
                            from: e.state.unwrap_or(State::Unknown),
                            to: State::Unknown,
                            reason: None,
                            error: None,
                        };
                        changes.events.push((name.clone(), event.clone()));
                        e.record(event);
                    }
                    changes.removed.push(name.clone());
                }
            }
        }
        let cutoff = now_ms - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        if new_sweep && snapshot.sweeps_total >= self.pruned_at + 64 {
            self.pruned_at = snapshot.sweeps_total;
            h.services
                .retain(|_, e| e.removed_at.is_none_or(|at| at > cutoff));
            for e in h.services.values_mut() {
                e.forget_before(cutoff);
            }
        }
        self.last_sweep = self.last_sweep.max(snapshot.sweeps_total);
        self.last_generation = Some(snapshot.generation);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: Millis, to: State) -> Event {
        Event {
            at,
            from: State::Unknown,
            to,
            reason: None,
            error: None,
        }
    }

    #[test]
    fn results_pack_into_eight_bytes_and_back() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for v in [
            Verdict::Up,
            Verdict::Degraded,
            Verdict::Down(Reason::ALL[0]),
            Verdict::Down(*Reason::ALL.last().expect("reasons")),
        ] {
            let r = Result::new(at, Duration::from_millis(1234), v);
            assert_eq!(r.at(), at);
            assert_eq!(r.latency(), Duration::from_millis(1234));
            assert_eq!(r.verdict(), v);
            assert_eq!(Result::from_bits(r.to_bits()), r);
        }
        let slow = Result::new(at, Duration::from_secs(86_400), Verdict::Up);
        assert_eq!(
            slow.latency().as_millis(),
            (1 << 24) - 1,
            "capped, not wrapped"
        );
        assert!(
            Reason::ALL.len() + 2 <= 32,
            "a verdict fits the ring's five bits"
        );
    }

    #[test]
    fn the_ring_keeps_the_latest_sixty() {
        let mut h = ServiceHistory::new("http://a");
        for i in 0..100u64 {
            h.push(Result::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(i),
                Duration::ZERO,
                Verdict::Up,
            ));
        }
        assert_eq!(h.recent().len(), RECENT);
        let first = h.recent().next().expect("results");
        assert_eq!(first.at(), SystemTime::UNIX_EPOCH + Duration::from_secs(40));
    }

    #[test]
    fn uptime_is_exact_from_the_events_and_ignores_unknown_time() {
        let mut h = ServiceHistory::new("http://a");
        h.record(event(0, State::Up));
        h.record(event(750, State::Down));
        h.record(event(1000, State::Unknown));
        h.record(event(2000, State::Up));
        // [0, 750) up, [750, 1000) down, [1000, 2000) unknown, [2000, 3000) up.
        assert_eq!(h.uptime(0, 3000), Some(1750.0 / 2000.0));
        assert_eq!(h.uptime(500, 1000), Some(0.5));
        assert_eq!(h.uptime(1000, 2000), None, "nothing known");
        assert_eq!(h.uptime(-100, 0), None, "before the first event");
    }

    #[test]
    fn maintenance_time_is_left_out_of_uptime() {
        let mut h = ServiceHistory::new("http://a");
        h.record(event(0, State::Up));
        h.record(event(1000, State::Down));
        // Down [1000, 2000), of which [1000, 1800) in maintenance.
        assert_eq!(h.uptime(0, 2000), Some(0.5));
        assert_eq!(
            h.uptime_excluding(0, 2000, &[(1000, 1800)]),
            Some(1000.0 / 1200.0)
        );
        assert_eq!(
            h.uptime_excluding(1000, 2000, &[(900, 2100)]),
            None,
            "all of it"
        );
    }

    #[test]
    fn a_flapping_service_keeps_the_latest_events_only_and_in_order() {
        let mut h = ServiceHistory::new("http://a");
        for i in 0..(MAX_EVENTS as i64 + 500) {
            h.record(event(
                i * 10,
                if i % 2 == 0 {
                    State::Up
                } else {
                    State::Degraded
                },
            ));
        }
        assert_eq!(h.events().len(), MAX_EVENTS);
        assert_eq!(h.events()[0].at, 5000);
        // An event stamped before the latest (a restored state, a clock set back) is not.
        h.record(event(0, State::Down));
        assert!(h.events().windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(
            h.uptime(0, 10 * MAX_EVENTS as i64),
            Some(1.0),
            "over the time kept"
        );
    }

    #[test]
    fn forgetting_keeps_the_state_in_force() {
        let mut h = ServiceHistory::new("http://a");
        h.record(event(0, State::Up));
        h.record(event(100, State::Down));
        h.record(event(200, State::Up));
        h.forget_before(150);
        assert_eq!(h.events().len(), 2);
        assert_eq!(h.uptime(150, 250), Some(0.5));
    }

    #[test]
    fn only_the_latest_events_keep_their_error_text() {
        let mut h = ServiceHistory::new("http://a");
        for i in 0..30 {
            h.record(Event {
                error: Some("boom".into()),
                ..event(i, State::Down)
            });
        }
        let with_error = h.events().iter().filter(|e| e.error.is_some()).count();
        assert_eq!(with_error, ERRORS_KEPT);
        assert!(h.events().last().is_some_and(|e| e.error.is_some()));
    }

    fn loaded(generation: u64, names: &[&str]) -> crate::config::Loaded {
        let text: String = names
            .iter()
            .map(|n| format!("[[service]]\nname = \"{n}\"\nurl = \"http://127.0.0.1:9/{n}\"\n"))
            .collect();
        crate::config::Loaded {
            generation,
            config: Arc::new(
                crate::config::parse(std::path::Path::new("t.toml"), &text).expect("valid"),
            ),
        }
    }

    fn sweep(s: &Snapshot, at: SystemTime, failing: &[&str]) -> Snapshot {
        use crate::probe::Outcome;
        let outcomes: Vec<_> = s
            .config
            .services
            .iter()
            .map(|svc| {
                if failing.contains(&svc.name.as_str()) {
                    Outcome::failed(Reason::ALL[1], at, Duration::from_millis(2), "refused")
                } else {
                    Outcome::passed(at, Duration::from_millis(5))
                }
            })
            .collect();
        s.swept(crate::snapshot::SweepReport {
            slot: 0,
            config: s.config.clone(),
            started_at: at,
            duration: Duration::from_millis(5),
            outcomes: outcomes.into_iter().map(Some).collect(),
            max_in_flight: 1,
            not_started: 0,
            cut_short: 0,
            judged: Vec::new(),
            idle_connections: 0,
        })
        .0
    }

    #[test]
    fn the_recorder_turns_snapshots_into_results_events_removals_and_returns() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let shared: Shared = Default::default();
        let mut r = Recorder::new(shared.clone(), Duration::from_secs(86_400));
        let first = Snapshot::new(&loaded(1, &["a", "b"]), t0);
        let c = r.record(&first, t0);
        assert!(
            c.events.is_empty(),
            "unknown at first sight is no event: {c:?}"
        );
        let s1 = sweep(&first, t0, &["b"]);
        let c = r.record(&s1, t0);
        assert_eq!(c.events.len(), 2, "{c:?}");
        let (name, down) = c.events.iter().find(|(n, _)| &**n == "b").expect("b");
        assert_eq!(&**name, "b");
        assert_eq!(
            (down.from, down.to, down.reason),
            (State::Unknown, State::Down, Some(Reason::ALL[1]))
        );
        assert_eq!(down.error.as_deref(), Some("refused"));
        // The same snapshot again adds nothing: no result twice.
        assert!(r.record(&s1, t0).events.is_empty());
        assert_eq!(read(&shared).services["a"].recent_len(), 1);
        // b removed by a reload: its time from now is unknown, its history kept.
        let t1 = t0 + Duration::from_secs(60);
        let s2 = s1.reconfigured(&loaded(2, &["a"]), t1);
        let c = r.record(&s2, t1);
        assert_eq!(c.removed, vec![Box::<str>::from("b")]);
        assert!(
            c.events
                .iter()
                .any(|(n, e)| &**n == "b" && e.to == State::Unknown)
        );
        // And back.
        let t2 = t1 + Duration::from_secs(60);
        let s3 = sweep(&s2.reconfigured(&loaded(3, &["a", "b"]), t2), t2, &[]);
        let c = r.record(&s3, t2);
        assert_eq!(c.returned, vec![Box::<str>::from("b")]);
        let h = read(&shared);
        let b = &h.services["b"];
        assert_eq!(b.events().len(), 3, "down, gone, up: {:?}", b.events());
        // Down for 60 s, then unknown, then up for an instant: uptime counts known time only.
        assert_eq!(b.uptime(history_ms(t0), history_ms(t2)), Some(0.0));
    }

    /// After a start with discovery sources, what the history knows and the first snapshots
    /// do not list is not called removed at once (the store would forget its state): a source
    /// may yet find it. After RESTORE_FOR, or at a reload, it is.
    #[test]
    fn at_a_start_with_discovery_services_not_listed_yet_are_not_removed_at_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let with_discovery = |generation: u64| {
            let text = "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/a\"\n\
                        [[discover]]\nname = \"files\"\nfile = { paths = [\"/nonexistent/*.json\"] }\n";
            crate::config::Loaded {
                generation,
                config: Arc::new(
                    crate::config::parse(std::path::Path::new("t.toml"), text).expect("valid"),
                ),
            }
        };
        // What the last run left: a service found by discovery.
        let shared: Shared = Default::default();
        write(&shared).services.insert(
            "found".into(),
            ServiceHistory::new("http://127.0.0.1:9/found"),
        );
        let mut r = Recorder::new(shared.clone(), Duration::from_secs(86_400));
        let start = Snapshot::new(&with_discovery(1), t0);
        assert!(r.record(&start, t0).removed.is_empty(), "not at the start");
        let later = sweep(&start, t0 + Duration::from_secs(60), &[]);
        assert!(
            r.record(&later, t0 + Duration::from_secs(60))
                .removed
                .is_empty()
        );
        let t1 = t0 + RESTORE_FOR;
        let hour = sweep(&later, t1, &[]);
        assert_eq!(r.record(&hour, t1).removed, vec![Box::<str>::from("found")]);

        // Without discovery sources, at once, as before.
        let shared: Shared = Default::default();
        write(&shared).services.insert(
            "gone".into(),
            ServiceHistory::new("http://127.0.0.1:9/gone"),
        );
        let mut r = Recorder::new(shared, Duration::from_secs(86_400));
        let start = Snapshot::new(&loaded(1, &["a"]), t0);
        assert_eq!(r.record(&start, t0).removed, vec![Box::<str>::from("gone")]);
    }

    fn history_ms(t: SystemTime) -> Millis {
        millis(t)
    }

    #[test]
    fn daily_uptime_is_per_utc_day() {
        const DAY: i64 = 86_400_000;
        let mut h = ServiceHistory::new("http://a");
        h.record(event(0, State::Up));
        h.record(event(DAY + DAY / 2, State::Down));
        let days = h.daily(2 * DAY + DAY / 4, 3, &[]);
        assert_eq!(days.len(), 3);
        assert_eq!(days[0], (0, Some(1.0)));
        assert_eq!(days[1], (DAY, Some(0.5)));
        assert_eq!(days[2], (2 * DAY, Some(0.0)));
    }
}
