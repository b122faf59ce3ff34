//! The connection budget, and the idle connections kept between sweeps.
//!
//! Every open connection, in use or idle, holds a [`Slot`]: one permit of a semaphore sized to
//! the descriptors the daemon may spend on checks (see [`crate::limits`]). A check that needs a
//! new connection takes a slot; when none is free it closes an idle connection to get one, and
//! only waits when every slot is in use by a check in flight. So reuse never starves a check of
//! a descriptor, and thousands of services never exhaust the open-file limit.
//!
//! A service with `connection = "reuse"` keeps at most one idle connection. It is taken out
//! only if the server has not closed it meanwhile and it is younger than [`MAX_AGE`].

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::http1::Connection;
use crate::config::Target;

/// Oldest connection reused. Bounds how long a check keeps talking to an address that DNS or a
/// load balancer has since moved away from.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// One descriptor's worth of the budget; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// A connection with its slot and age: what a check holds and what the pool keeps.
pub struct Leased {
    pub connection: Connection,
    pub opened: Instant,
    /// Held for as long as the connection is open; dropping both frees the descriptor.
    pub _slot: Slot,
}

struct Idle {
    /// Which target the connection goes to: a reload may point the service elsewhere.
    target: u64,
    leased: Leased,
}

/// A fingerprint of where a connection goes, so the pool need not keep a copy of each target.
fn fingerprint(target: &Target) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&target.host, target.port, target.tls, target.ip).hash(&mut h);
    h.finish()
}

/// The budget and the idle connections, by service name.
pub struct Pool {
    slots: Arc<Semaphore>,
    idle: Mutex<HashMap<Box<str>, Idle>>,
}

impl Pool {
    /// A pool that lets at most `budget` connections be open at once.
    pub fn new(budget: usize) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(budget.max(1))),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a new connection: a free one, else one freed by closing an idle connection,
    /// else the next one a check in flight gives back.
    pub async fn slot(&self) -> Slot {
        loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return Slot { _permit: p };
            }
            if !self.evict_one() {
                break;
            }
        }
        Slot {
            _permit: self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the slot semaphore is never closed"),
        }
    }

    /// The idle connection of `service` to `target`, if it is still usable.
    pub fn take(&self, service: &str, target: &Target) -> Option<Leased> {
        let idle = self.lock().remove(service)?;
        let usable = idle.target == fingerprint(target)
            && idle.leased.opened.elapsed() < MAX_AGE
            && idle.leased.connection.is_clean()
            && still_open(&idle.leased.connection);
        usable.then_some(idle.leased)
    }

    /// Keeps `leased` for the next check of `service`.
    pub fn put(&self, service: &str, target: &Target, mut leased: Leased) {
        leased.connection.shrink();
        // An old connection of the same service (possible after a reload) is replaced, closed.
        self.lock().insert(
            service.into(),
            Idle {
                target: fingerprint(target),
                leased,
            },
        );
    }

    /// Closes the idle connections of services `keep` says no to (removed by a reload).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// Closes one idle connection, freeing its slot; `false` if there was none.
    fn evict_one(&self) -> bool {
        let mut idle = self.lock();
        let Some(name) = idle.keys().next().cloned() else {
            return false;
        };
        idle.remove(&name);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Idle>> {
        // Every operation under the lock is a single map call; a panic cannot leave it torn.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection's socket is still open with nothing unread: a peek that would
/// block. End of stream (the server closed it) or unexpected bytes (for TLS, likely a
/// close_notify alert) make it unusable.
fn still_open(connection: &Connection) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(connection.stream().tcp()).peek(&mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
