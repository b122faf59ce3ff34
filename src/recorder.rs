//! The recorder task: follows the published snapshots into the [`history`] and the
//! [`store`], off the sweep's path. The sweep only publishes; when the recorder is slow (a
//! disk stalls), snapshots in between coalesce: no state change is lost (each is a difference
//! between the snapshots it does see), only the results of the sweeps it skipped.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::history::{self, Recorder};
use crate::snapshot::{ServiceStatus, Snapshot};
use crate::store::{self, Batch, Row, Store};

/// How soon a changed set of maintenance windows is stored.
const WINDOWS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Prune old events once per this many sweeps.
const PRUNE_EVERY: u64 = 240;

/// Runs until shutdown, then writes every service's row once more.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    shared: history::Shared,
    windows: Arc<crate::maintenance::Windows>,
    mut store: Option<Store>,
    shutdown: CancellationToken,
) {
    let mut windows_stored = windows.version();
    let first = snapshots.borrow_and_update().clone();
    let mut recorder = Recorder::new(shared.clone(), first.config.daemon.history_retention);
    let mut turn = Turn::default();
    let mut last = first;
    let mut stopping = false;
    loop {
        let changes = recorder.record(&last, SystemTime::now());
        // Without a store the history is all there is to keep.
        if let Some(s) = store.take() {
            let mut batch = batch_turn(&last, &shared, changes, stopping, &mut turn);
            let version = windows.version();
            if version != windows_stored {
                batch.ad_hoc = Some(windows.ad_hoc());
                windows_stored = version;
            }
            match tokio::task::spawn_blocking(move || {
                let mut s = s;
                s.write(&batch);
                s
            })
            .await
            {
                Ok(s) => store = Some(s),
                Err(e) => warn!(error = %e, "state store writer failed; going on with memory only"),
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    stopping = true;
                }
            }
            // A maintenance window opened between sweeps is stored within a second, not at
            // the next sweep (which may be minutes away).
            () = tokio::time::sleep(WINDOWS_EVERY),
                if store.is_some() && windows.version() != windows_stored => {}
            () = shutdown.cancelled() => stopping = true,
        }
        last = snapshots.borrow_and_update().clone();
        recorder.set_retention(last.config.daemon.history_retention);
    }
}

/// Where the recorder is in its rounds: which share of the fleet's rows is next, and when it
/// last pruned. Counted per batch, not per sweep number: snapshots that coalesce (a slow disk)
/// skip sweep numbers, and every share must still get its turn.
#[derive(Debug, Default)]
pub struct Turn {
    batches: u64,
    pruned_at: Option<u64>,
}

/// What `snapshot` gives the store: the events, and the rows of the services whose state or
/// threshold counts moved plus this sweep's share of the rest (every row when `all`), and
/// now and then the pruning of old events.
pub fn batch_turn(
    snapshot: &Snapshot,
    shared: &history::Shared,
    changes: history::Changes,
    all: bool,
    turn: &mut Turn,
) -> Batch {
    let now = history::millis(SystemTime::now());
    turn.batches += 1;
    let sweep = turn.batches;
    let prune = turn.pruned_at.is_none_or(|at| sweep >= at + PRUNE_EVERY);
    if prune {
        turn.pruned_at = Some(sweep);
    }
    let mut batch = Batch {
        events: changes.events,
        removed: changes.removed.into_iter().map(|n| (n, now)).collect(),
        returned: changes.returned,
        prune_before: prune.then(|| {
            now - i64::try_from(snapshot.config.daemon.history_retention.as_millis())
                .unwrap_or(i64::MAX)
        }),
        ..Batch::default()
    };
    let mut h = history::write(shared);
    // This sweep's share of the fleet: a window of `chunk` services, moving on every sweep.
    let n = snapshot.services.len();
    let chunk = n
        .div_ceil(store::SPREAD as usize)
        .max(store::MIN_ROWS.min(n))
        .max(1);
    let first = (sweep as usize).wrapping_mul(chunk) % n.max(1);
    let due_at = |i: usize| (i + n - first) % n.max(1) < chunk;
    for (i, st) in snapshot.services.iter().enumerate() {
        let Some(entry) = h.services.get_mut(st.service.name.as_str()) else {
            continue;
        };
        let fp = fingerprint(st);
        let due = all || due_at(i);
        if fp == entry.written && !due {
            continue;
        }
        entry.written = fp;
        batch.rows.push(Row {
            service: st.service.clone(),
            state: st.state,
            since: st.since,
            consecutive_failures: st.consecutive_failures,
            consecutive_successes: st.consecutive_successes,
            counts: st.counts.clone(),
            recent: entry.recent().collect(),
        });
    }
    batch
}

/// What must not be lost of a service's state: it, since when, and the counts the thresholds
/// look at (successes only up to the threshold: beyond it they change nothing).
fn fingerprint(st: &ServiceStatus) -> u64 {
    let since = history::millis(st.since) as u64;
    let successes = st.consecutive_successes.min(st.service.success_threshold);
    let failures = st.consecutive_failures.min(st.service.failure_threshold);
    since.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (st.state as u64)
        ^ u64::from(failures) << 8
        ^ u64::from(successes) << 36
}
