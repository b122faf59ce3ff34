//! The bound on connections to our server, and who gives way when it is reached.
//!
//! A plain semaphore would let a slowloris client, or a crowd of idle keep-alive connections,
//! hold every slot: new clients would then wait in the kernel's backlog until one times out.
//! Here, when all slots are taken, the connection that has been *idle* the longest (waiting for
//! a request head, or for its TLS handshake) is closed to make room. A connection serving a
//! request is never evicted, so an attacker can only displace other idle connections, and a
//! scraper that connects and sends its request gets served at once. Only when every slot is busy
//! with a request does accepting wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The table of open connections.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    table: Mutex<Table>,
    /// Signalled when a connection leaves or goes idle, for an `admit` waiting on a full table.
    freed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
    evicted_total: u64,
}

#[derive(Debug)]
struct Entry {
    /// `Some(since)` while waiting for a request; `None` while serving one.
    idle_since: Option<Instant>,
    evict: CancellationToken,
}

impl Connections {
    /// A table of at most `max` connections (at least one).
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            table: Mutex::new(Table::default()),
            freed: Notify::new(),
        })
    }

    /// Takes a slot for a new connection, evicting the longest-idle connection if all are
    /// taken; waits only while every connection is busy serving a request.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            if let Some(slot) = self.try_admit() {
                return slot;
            }
            self.freed.notified().await;
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        if t.open.len() >= self.max {
            let oldest = t
                .open
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(e) = t.open.remove(&oldest) {
                e.evict.cancel();
                t.evicted_total += 1;
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let evict = CancellationToken::new();
        t.open.insert(
            id,
            Entry {
                idle_since: Some(Instant::now()),
                evict: evict.clone(),
            },
        );
        Some(Slot {
            id,
            connections: self.clone(),
            evict,
        })
    }

    /// Connections open now.
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
        // operation), so a poisoned lock is still usable.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One connection's place in the table, released on drop.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    connections: Arc<Connections>,
    evict: CancellationToken,
}

impl Slot {
    /// A handle the request handler uses to mark the connection busy and idle.
    pub fn activity(&self) -> Activity {
        Activity {
            id: self.id,
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
        self.connections.lock().open.remove(&self.id);
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
    /// Busy until the returned guard drops; idle again after.
    pub fn busy(&self) -> Busy {
        self.connections.set_idle(self.id, false);
        Busy(self.clone())
    }
}

/// The connection is serving a request while this lives.
#[derive(Debug)]
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.connections.set_idle(self.0.id, true);
        // An idle connection can be evicted: an admission waiting on a full table may proceed.
        self.0.connections.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_table_evicts_the_longest_idle_connection_and_never_a_busy_one() {
        let c = Connections::new(2);
        let first = c.admit().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = c.admit().await;
        let _busy = first.activity().busy();
        // Full: `first` is busy, so the idle `second` gives way.
        let third = c.admit().await;
        assert!(second.evict.is_cancelled());
        assert!(!first.evict.is_cancelled());
        assert_eq!(c.open(), 2);
        assert_eq!(c.evicted_total(), 1);
        drop(second);
        assert_eq!(c.open(), 2, "an evicted slot was already given up");
        drop(third);
        assert_eq!(c.open(), 1);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_admission_waits_for_one_to_leave() {
        let c = Connections::new(1);
        let only = c.admit().await;
        let busy = only.activity().busy();
        assert!(c.try_admit().is_none(), "nothing idle to evict");
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.admit().await }
        });
        drop(busy);
        drop(only);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("admitted once the slot is free")
            .expect("task ran");
        assert_eq!(c.open(), 1);
        drop(next);
    }
}
