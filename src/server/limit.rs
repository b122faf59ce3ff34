//! The bound on connections to our server, and who gives way when it is reached.
//!
//! A plain semaphore would let a slowloris client, a crowd of idle keep-alive connections, or
//! clients that request `/metrics` and never read, hold every slot: new clients would then wait
//! in the kernel's backlog until one times out, and `/healthz` would go unanswered. Here a
//! connection is admitted once it has been accepted, and when all slots are taken the
//! connection that has been *really idle* the longest is closed to make room: one waiting for a
//! request head (or its TLS handshake), or one whose response has not moved for
//! [`STALLED_AFTER`] because its client stopped reading. A connection serving a request (its
//! handler running, or its response being written to a client that reads it) is never evicted,
//! and neither is the connection just accepted.
//!
//! When every slot is busy like that, a new connection takes one of a few **probe slots**
//! instead of waiting: it is served one request, and only `/healthz` or `/readyz` get a real
//! answer (anything else moves to a regular slot if one has come free by then, or gets a 503
//! that says to retry). A liveness probe must not fail because 256
//! scrapers are being served, or because 256 clients asked for `/metrics` and stopped reading
//! while their responses were still being rendered (they count as stalled only once their
//! socket buffers are full). A probe slot's answer is small and immediate, so these slots cannot
//! be held by a slow response; one waiting for a request head gives way to the next probe
//! after [`PROBE_GRACE`], so a flood of silent connections cannot push out a probe before it
//! has sent its head. Only when the probe slots are busy too does a new connection wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A response whose writes have been blocked this long (the client is not reading) makes its
/// connection as good as idle: it may be evicted for a new client.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// A probe slot waiting for its request head gives way to the next probe only once it has
/// waited this long: a probe sends its head at once, and a flood of silent connections must
/// not push it out before it could.
pub const PROBE_GRACE: Duration = Duration::from_millis(250);

/// The table of open connections.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    /// Probe slots, beyond `max`, for when every regular slot is busy.
    probes: usize,
    table: Mutex<Table>,
    /// Signalled when a connection leaves, goes idle or stalls, for an admission waiting on a
    /// full table.
    freed: Notify,
    /// Times in [`Entry::write_blocked`] count from here.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// How many of `open` are probe slots.
    probes_open: usize,
    evicted_total: u64,
}

#[derive(Debug)]
struct Entry {
    /// `Some(since)` while waiting for a request; `None` while serving one.
    idle_since: Option<Instant>,
    /// Milliseconds after `epoch` (plus one) since which a write has been waiting for the
    /// client to read; 0 while writes go through. Set by the connection's stream without the
    /// table lock.
    write_blocked: Arc<AtomicU64>,
    evict: CancellationToken,
    probe: bool,
}

impl Entry {
    /// Since when the connection has been doing nothing for anyone, if it has: waiting for a
    /// request, or stalled on a client that does not read.
    fn idle_since(&self, epoch: Instant, now: Instant) -> Option<Instant> {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        let stalled = (blocked > 0)
            .then(|| epoch + Duration::from_millis(blocked - 1))
            .filter(|&since| now.saturating_duration_since(since) >= STALLED_AFTER);
        match (self.idle_since, stalled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Connections {
    /// A table of at most `max` connections (at least one), plus `probes` probe slots.
    pub fn new(max: usize, probes: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            probes,
            table: Mutex::new(Table::default()),
            freed: Notify::new(),
            epoch: Instant::now(),
        })
    }

    /// A slot for a connection just accepted: a free one, or one freed by evicting the
    /// connection idle the longest; waits only while every connection is busy serving.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            // Registered before trying, so a slot freed in between is not missed.
            let freed = self.freed.notified();
            if let Some(slot) = self.try_admit() {
                return slot;
            }
            // A stalled writer becomes evictable without telling anyone: look again then.
            tokio::select! {
                () = freed => {}
                () = tokio::time::sleep(STALLED_AFTER / 4) => {}
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        let now = Instant::now();
        let regular = t.open.len() - t.probes_open;
        let probe = if regular < self.max || self.evict_idlest(&mut t, now, false) {
            false
        } else if t.probes_open < self.probes || self.evict_idlest(&mut t, now, true) {
            true
        } else {
            return None;
        };
        let id = t.next_id;
        t.next_id += 1;
        let evict = CancellationToken::new();
        let write_blocked = Arc::new(AtomicU64::new(0));
        t.open.insert(
            id,
            Entry {
                idle_since: Some(now),
                write_blocked: write_blocked.clone(),
                evict: evict.clone(),
                probe,
            },
        );
        t.probes_open += usize::from(probe);
        Some(Slot {
            id,
            connections: self.clone(),
            evict,
            write_blocked,
            probe,
        })
    }

    /// Evicts the regular (or probe) connection idle the longest, if one is; says whether it did.
    fn evict_idlest(&self, t: &mut Table, now: Instant, probe: bool) -> bool {
        let oldest = t
            .open
            .iter()
            .filter(|(_, e)| e.probe == probe)
            .filter_map(|(id, e)| e.idle_since(self.epoch, now).map(|since| (since, *id)))
            .filter(|&(since, _)| !probe || now.saturating_duration_since(since) >= PROBE_GRACE)
            .min()
            .map(|(_, id)| id);
        let Some(e) = oldest.and_then(|id| t.remove(id)) else {
            return false;
        };
        e.evict.cancel();
        t.evicted_total += 1;
        true
    }

    /// Connections open now, probe slots included.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Idle connections closed to make room, since start.
    pub fn evicted_total(&self) -> u64 {
        self.lock().evicted_total
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(e) = self.lock().open.get_mut(&id) {
            e.idle_since = idle.then(Instant::now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock leaves the table consistent (every change is one map
        // operation, and the probe count beside it is updated in the same statement or the
        // next, with nothing between that can panic), so a poisoned lock is still usable.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Table {
    /// Takes a connection out of the table, keeping the probe count.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        self.probes_open -= usize::from(e.probe);
        Some(e)
    }
}

/// One connection's place in the table, released on drop.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    connections: Arc<Connections>,
    evict: CancellationToken,
    write_blocked: Arc<AtomicU64>,
    probe: bool,
}

impl Slot {
    /// A probe slot: serve one request, and only `/healthz` or `/readyz` (see the module docs).
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// A handle the request handler uses to mark the connection busy and idle.
    pub fn activity(&self) -> Activity {
        Activity {
            id: self.id,
            connections: self.connections.clone(),
        }
    }

    /// What the connection's stream reports its blocked writes to.
    pub fn writes(&self) -> Writes {
        Writes {
            blocked: self.write_blocked.clone(),
            connections: self.connections.clone(),
        }
    }

    /// Completes when the connection is evicted to make room for a new one.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().remove(self.id);
        self.connections.freed.notify_one();
    }
}

/// Marks a connection busy while a request is served, so it is never evicted mid-request.
#[derive(Debug, Clone)]
pub struct Activity {
    id: u64,
    connections: Arc<Connections>,
}

impl Activity {
    /// Moves a probe slot's connection to a regular slot, free or freed by evicting the one
    /// idle the longest, if there is one now: a request that is not a probe, which came in on a
    /// probe slot, is then served instead of refused. Says whether the connection has a
    /// regular slot.
    pub fn promote(&self) -> bool {
        let c = &self.connections;
        let mut t = c.lock();
        if !t.open.get(&self.id).is_some_and(|e| e.probe) {
            return t.open.contains_key(&self.id);
        }
        let regular = t.open.len() - t.probes_open;
        if regular >= c.max && !c.evict_idlest(&mut t, Instant::now(), false) {
            return false;
        }
        if let Some(e) = t.open.get_mut(&self.id) {
            e.probe = false;
            t.probes_open -= 1;
        }
        // A probe slot is free now.
        c.freed.notify_one();
        true
    }

    /// Busy until the returned guard drops; idle again after.
    pub fn busy(&self) -> Busy {
        self.connections.set_idle(self.id, false);
        Busy(self.clone())
    }
}

/// The connection is serving a request while this lives (the server keeps it in the response
/// body, so it lives until the response is written).
#[derive(Debug)]
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.connections.set_idle(self.0.id, true);
        // An idle connection can be evicted: an admission waiting on a full table may proceed.
        self.0.connections.freed.notify_one();
    }
}

/// Where a connection's stream says whether its writes are blocked on the client.
#[derive(Debug, Clone)]
pub struct Writes {
    blocked: Arc<AtomicU64>,
    connections: Arc<Connections>,
}

impl Writes {
    /// A write could not go out: the client's receive window is full. Keeps the earliest time.
    pub fn blocked(&self) {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            let ms = Instant::now()
                .saturating_duration_since(self.connections.epoch)
                .as_millis();
            let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1;
            self.blocked.store(ms, Ordering::Relaxed);
        }
    }

    /// Bytes went out.
    pub fn progressed(&self) {
        if self.blocked.load(Ordering::Relaxed) != 0 {
            self.blocked.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_table_evicts_the_longest_idle_connection_and_never_a_busy_one() {
        let c = Connections::new(2, 0);
        let first = c.admit().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = c.admit().await;
        let _busy = first.activity().busy();
        // Full: `first` is busy, so the idle `second` gives way.
        let third = c.admit().await;
        assert!(second.evict.is_cancelled());
        assert!(!first.evict.is_cancelled());
        assert!(!third.evict.is_cancelled(), "never the one just admitted");
        assert_eq!(c.open(), 2);
        assert_eq!(c.evicted_total(), 1);
        drop(second);
        assert_eq!(c.open(), 2, "an evicted slot was already given up");
        drop(third);
        assert_eq!(c.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_connection_is_busy_admission_waits_for_one_to_leave() {
        let c = Connections::new(1, 0);
        let only = c.admit().await;
        let busy = only.activity().busy();
        assert!(c.try_admit().is_none(), "nothing idle to evict");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.admit().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiter.is_finished(), "a busy connection is not evicted");
        drop(busy);
        drop(only);
        let next = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("admitted once the slot is free")
            .expect("task ran");
        assert_eq!(c.open(), 1);
        drop(next);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_whose_client_stopped_reading_gives_way_after_a_while() {
        let c = Connections::new(1, 0);
        let stuck = c.admit().await;
        let _busy = stuck.activity().busy();
        stuck.writes().blocked();
        assert!(c.try_admit().is_none(), "blocked only just now");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.admit().await }
        });
        tokio::time::sleep(STALLED_AFTER * 2).await;
        let admitted = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("admitted once the writer stalled")
            .expect("task ran");
        assert!(stuck.evict.is_cancelled());
        drop(admitted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_makes_progress_is_not_stalled() {
        let c = Connections::new(1, 0);
        let slot = c.admit().await;
        let _busy = slot.activity().busy();
        let writes = slot.writes();
        writes.blocked();
        tokio::time::sleep(STALLED_AFTER / 2).await;
        writes.progressed();
        tokio::time::sleep(STALLED_AFTER).await;
        assert!(c.try_admit().is_none(), "its client reads: still busy");
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_slot_is_busy_a_new_connection_gets_a_probe_slot() {
        let c = Connections::new(1, 2);
        let regular = c.admit().await;
        let _busy = regular.activity().busy();
        let first = c.admit().await;
        assert!(first.is_probe() && !regular.is_probe());
        let _serving = first.activity().busy();
        let second = c.admit().await;
        assert!(second.is_probe());
        assert!(!regular.evict.is_cancelled(), "a busy regular slot is kept");
        let also_serving = second.activity().busy();
        // Both probe slots serving: nothing left to give.
        assert!(c.try_admit().is_none());
        drop((also_serving, second));
        let third = c.admit().await;
        assert!(third.is_probe(), "a probe slot freed is a probe slot again");
        drop((_serving, first, third));
        assert_eq!(c.open(), 1);
        drop(_busy);
        assert!(!c.admit().await.is_probe(), "with room, a regular slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_slot_waiting_for_its_request_gives_way_to_the_next_probe() {
        let c = Connections::new(1, 1);
        let regular = c.admit().await;
        let _busy = regular.activity().busy();
        let silent = c.admit().await;
        tokio::time::sleep(PROBE_GRACE / 2).await;
        assert!(
            c.try_admit().is_none(),
            "a probe slot just opened is not evicted"
        );
        tokio::time::sleep(PROBE_GRACE).await;
        let next = c.admit().await;
        assert!(next.is_probe());
        assert!(
            silent.evict.is_cancelled(),
            "the idle probe slot was evicted"
        );
        assert!(
            !regular.evict.is_cancelled(),
            "never a busy regular one for a probe"
        );
        assert_eq!(c.open(), 2);
        assert_eq!(c.evicted_total(), 1);
        drop(silent);
        assert_eq!(c.open(), 2, "an evicted probe slot was already given up");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_regular_connection_gives_way_before_a_probe_slot_is_used() {
        let c = Connections::new(1, 1);
        let idle = c.admit().await;
        let next = c.admit().await;
        assert!(!next.is_probe());
        assert!(idle.evict.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_slot_moves_to_a_regular_one_when_one_is_free_or_idle() {
        let c = Connections::new(1, 1);
        let regular = c.admit().await;
        let busy = regular.activity().busy();
        let probe = c.admit().await;
        assert!(probe.is_probe());
        assert!(!probe.activity().promote(), "every regular slot busy");
        drop(busy);
        // The regular connection is idle now: it gives way.
        assert!(probe.activity().promote());
        assert!(regular.evict.is_cancelled());
        drop(regular);
        assert_eq!(c.open(), 1);
        assert!(probe.activity().promote(), "already regular");
        // The probe slot it held is free for the next probe.
        let _busy = probe.activity().busy();
        assert!(c.admit().await.is_probe());
    }
}
