//! The state store: an embedded SQLite database in `[daemon] state_dir` (`state.db`) holding,
//! per service, its state, since when, its consecutive counts and counters, its recent results
//! and its events, so a restart (a `kill -9` included) continues where the daemon stopped.
//!
//! What is written is what changed: an event per state change, a service's row when its state
//! or a threshold count moved, and every service's row (counters, recent results) once per
//! [`SPREAD`] sweeps (or every sweep for a fleet of at most [`MIN_ROWS`]), a share of the
//! fleet each sweep. Uptime is computed from the events, so
//! the file grows with state changes, not with sweeps.
//!
//! The store never stops the daemon. An error (locked, full, read-only, corrupt) is logged,
//! counted (`healthsweep_state_store_errors_total`), and the daemon goes on with memory only,
//! trying again later; a corrupt file is moved aside (`state.db.corrupt-<unix time>`), never
//! deleted, and a fresh one started.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension as _, params};
use tracing::{error, info, warn};

use crate::history::{self, Event, Millis, ServiceHistory};
use crate::probe::Reason;
use crate::snapshot::{Counts, State};

/// The file in `state_dir`.
pub const FILE: &str = "state.db";

/// Every service's row is written at least once per this many sweeps (10 minutes at a 15 s
/// interval): its counters and recent results are at most that old after a `kill -9`.
pub const SPREAD: u64 = 40;

/// ... but never fewer rows a sweep than this (all of a small fleet, every sweep).
pub const MIN_ROWS: usize = 250;

/// Error texts are stored up to this many bytes.
const ERROR_BYTES: usize = 300;

/// The schema's version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long after a failure the store tries to open the database again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    state INTEGER NOT NULL,
    since INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    consecutive_successes INTEGER NOT NULL,
    counts TEXT NOT NULL,
    recent BLOB NOT NULL,
    removed_at INTEGER
);
CREATE TABLE IF NOT EXISTS error_text (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS event (
    service INTEGER NOT NULL REFERENCES service(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    from_state INTEGER NOT NULL,
    to_state INTEGER NOT NULL,
    reason TEXT,
    error INTEGER REFERENCES error_text(id)
);
CREATE INDEX IF NOT EXISTS event_by_service ON event(service, at);
-- At another URL a service starts over: the old target's events are not its history.
CREATE TRIGGER IF NOT EXISTS service_moved AFTER UPDATE OF url ON service
    WHEN old.url != new.url
    BEGIN DELETE FROM event WHERE service = old.id; END;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS maintenance (
    id TEXT PRIMARY KEY,
    targets TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    reason TEXT NOT NULL
);
";

/// A service's state as stored.
pub use crate::snapshot::Kept as Saved;

/// A service's row to write. The service itself, not copies of its name and URL: a sweep
/// writes thousands.
#[derive(Debug, Clone)]
pub struct Row {
    pub service: Arc<crate::config::Service>,
    pub state: State,
    pub since: SystemTime,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub counts: Counts,
    pub recent: Vec<history::Result>,
}

/// Events (and rows) kept at most while the database cannot be written.
pub const MAX_PENDING: usize = 200_000;

/// One sweep's writes, committed in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub events: Vec<(Box<str>, Event)>,
    pub removed: Vec<(Box<str>, Millis)>,
    pub returned: Vec<Box<str>>,
    /// Forget events and removed services older than this (once in a while).
    pub prune_before: Option<Millis>,
    /// The ad-hoc maintenance windows, all of them, when they changed.
    pub ad_hoc: Option<Vec<crate::maintenance::AdHoc>>,
}

impl Batch {
    /// This batch, then `later`: what both would have written, in order.
    fn absorb(&mut self, later: Batch) {
        self.rows.extend(later.rows);
        self.events.extend(later.events);
        self.removed.extend(later.removed);
        self.returned.extend(later.returned);
        self.prune_before = later.prune_before.or(self.prune_before);
        self.ad_hoc = later.ad_hoc.or(self.ad_hoc.take());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.events.is_empty()
            && self.removed.is_empty()
            && self.returned.is_empty()
            && self.prune_before.is_none()
            && self.ad_hoc.is_none()
    }
}

/// What a start finds in the store.
#[derive(Debug, Default)]
pub struct Restored {
    pub services: foldhash::HashMap<String, Saved>,
    pub history: history::History,
    /// Ad-hoc maintenance windows (those that ended long ago are dropped by the next change).
    pub ad_hoc: Vec<crate::maintenance::AdHoc>,
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the file: {0}")]
    Create(std::io::Error),
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the database has schema version {0}, newer than this healthsweep knows ({SCHEMA_VERSION})"
    )]
    Newer(i64),
}

/// The database, or the memory of having failed to open it.
pub struct Store {
    path: PathBuf,
    conn: Option<Connection>,
    failed_at: Option<tokio::time::Instant>,
    errors: Arc<AtomicU64>,
    /// What could not be written yet.
    pending: Option<Batch>,
}

impl Store {
    /// The store in `dir`, opened now if it can be (otherwise the error is logged and counted, and it tries again later).
    pub fn open(dir: &Path, errors: Arc<AtomicU64>) -> Store {
        let mut store = Store {
            path: dir.join(FILE),
            conn: None,
            failed_at: None,
            errors,
            pending: None,
        };
        store.connect();
        store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        error!(path = %self.path.display(), error = %e, "state store: {what}; going on with memory only");
        self.conn = None;
        self.failed_at = Some(tokio::time::Instant::now());
    }

    /// Opens the database if it is not open and a retry is due.
    fn connect(&mut self) {
        if self.conn.is_some() || self.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return;
        }
        match open_checked(&self.path) {
            Ok(c) => {
                self.conn = Some(c);
                self.failed_at = None;
            }
            Err(StoreError::Corrupt(why)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.move_aside(&why);
                match open_checked(&self.path) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.failed_at = None;
                    }
                    Err(e) => self.failed("cannot start a fresh database", &e),
                }
            }
            Err(e) => self.failed("cannot open the database", &e),
        }
    }

    /// Everything stored (empty when the database cannot be read).
    pub fn load(&mut self) -> Restored {
        self.connect();
        let Some(conn) = &self.conn else {
            return Restored::default();
        };
        match load(conn).and_then(|r| mark_downtime(conn, r)) {
            Ok(r) => {
                info!(path = %self.path.display(), services = r.services.len(), "state store: restored");
                r
            }
            Err(e) => {
                self.failed("cannot read the database", &e);
                Restored::default()
            }
        }
    }

    /// Commits `batch` in one transaction; on failure logs, counts and drops it.
    /// A batch that cannot be written now (the database is locked, full, read-only or not
    /// open) is kept and written with the next one, so no event is lost to a passing failure;
    /// within bounds ([`MAX_PENDING`]).
    pub fn write(&mut self, batch: &Batch) {
        if batch.is_empty() && self.pending.is_none() {
            return;
        }
        self.connect();
        let merged;
        let todo: &Batch = match self.pending.take() {
            Some(mut p) => {
                p.absorb(batch.clone());
                merged = p;
                &merged
            }
            None => batch,
        };
        let Some(conn) = &mut self.conn else {
            self.keep(todo.clone());
            return;
        };
        if let Err(e) = write(conn, todo) {
            let corrupt = is_corrupt(&e);
            self.failed("writing failed", &e);
            self.keep(todo.clone());
            if corrupt {
                self.move_aside(&e.to_string());
                self.failed_at = None;
                self.connect();
            }
        }
    }

    fn keep(&mut self, mut batch: Batch) {
        let over = batch.events.len().saturating_sub(MAX_PENDING);
        if over > 0 {
            batch.events.drain(..over);
            warn!(
                dropped = over,
                "state store: too many events waiting to be written; the oldest are dropped"
            );
        }
        let over = batch.rows.len().saturating_sub(MAX_PENDING);
        batch.rows.drain(..over);
        self.pending = Some(batch);
    }

    /// Renames the database (and its WAL files) out of the way, keeping every byte.
    fn move_aside(&mut self, why: &str) {
        self.conn = None;
        let aside = aside_name(&self.path);
        warn!(path = %self.path.display(), moved_to = %aside.display(), why, "state store: the database is corrupt; moved aside, starting a fresh one");
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", self.path.display()));
            if from.exists()
                && let Err(e) = std::fs::rename(&from, format!("{}{suffix}", aside.display()))
            {
                error!(path = %from.display(), error = %e, "state store: cannot move the corrupt file aside");
            }
        }
    }
}

fn aside_name(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("{}.corrupt-{secs}", path.display()))
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn open_checked(path: &Path) -> Result<Connection, StoreError> {
    // Only the daemon's user reads it (SQLite would make it world-readable, and its WAL and
    // shared-memory files take the database's mode).
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::Create)?;
    }
    let conn = Connection::open(path)?;
    let classify = |e: rusqlite::Error| {
        if is_corrupt(&e) {
            StoreError::Corrupt(e.to_string())
        } else {
            StoreError::Sqlite(e)
        }
    };
    // Another process holding the file must not stall the writer for long.
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(classify)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(classify)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(check));
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(classify)?;
    // WAL with NORMAL: a power cut may lose the last commits, never the file.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(classify)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(classify)?;
    // A small page cache: the store is written, rarely read.
    conn.pragma_update(None, "cache_size", -2048)
        .map_err(classify)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(classify)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Newer(version));
    }
    conn.execute_batch(SCHEMA).map_err(classify)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(classify)?;
    Ok(conn)
}

fn state_code(s: State) -> i64 {
    match s {
        State::Unknown => 0,
        State::Up => 1,
        State::Degraded => 2,
        State::Down => 3,
    }
}

fn state_of(code: i64) -> State {
    match code {
        1 => State::Up,
        2 => State::Degraded,
        3 => State::Down,
        _ => State::Unknown,
    }
}

fn reason_of(name: &str) -> Option<Reason> {
    Reason::ALL.iter().copied().find(|r| r.as_str() == name)
}

/// Counters as JSON by reason name, so a version that adds reasons reads them. Written by
/// hand into a reused buffer: the names are plain identifiers, nothing needs escaping.
fn counts_json(c: &Counts, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(out, "{{\"ok\":{}", c.ok);
    for (r, n) in c.failures() {
        let _ = write!(out, ",\"{}\":{n}", r.as_str());
    }
    out.push('}');
}

fn counts_of(text: &str) -> Counts {
    let mut c = Counts::default();
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(text) else {
        return c;
    };
    for (k, v) in m {
        let n = v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        if k == "ok" {
            c.ok = n;
        } else if let Some(r) = reason_of(&k)
            && n > 0
        {
            c.set_failed(r, n);
        }
    }
    c
}

/// Recent results, delta-encoded: each as varints of (seconds after the previous one,
/// latency in ms) and the verdict's reason by name index in a trailing table, so a ring of
/// 60 takes ~250 bytes rather than 480.
fn encode_recent(recent: &[history::Result], out: &mut Vec<u8>) {
    out.clear();
    let mut prev = 0u64;
    for r in recent {
        let secs = r.to_bits() >> 32;
        crate::varint::put(out, secs.wrapping_sub(prev));
        prev = secs;
        crate::varint::put(out, r.latency().as_millis() as u64);
        let (code, reason) = match r.verdict() {
            history::Verdict::Up => (0u8, None),
            history::Verdict::Degraded => (1, None),
            history::Verdict::Down(reason) => (2, Some(reason)),
        };
        out.push(code);
        if let Some(reason) = reason {
            let name = reason.as_str().as_bytes();
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }
}

fn decode_recent(mut bytes: &[u8]) -> Vec<history::Result> {
    let mut out = Vec::new();
    let mut prev = 0u64;
    while !bytes.is_empty() && out.len() < history::RECENT {
        let Some((delta, rest)) = crate::varint::read(bytes) else {
            break;
        };
        let Some((latency, rest)) = crate::varint::read(rest) else {
            break;
        };
        let Some((&code, rest)) = rest.split_first() else {
            break;
        };
        bytes = rest;
        let verdict = match code {
            0 => history::Verdict::Up,
            1 => history::Verdict::Degraded,
            _ => {
                let Some((&n, rest)) = bytes.split_first() else {
                    break;
                };
                let Some(name) = rest.get(..usize::from(n)) else {
                    break;
                };
                bytes = &rest[usize::from(n)..];
                history::Verdict::Down(
                    std::str::from_utf8(name)
                        .ok()
                        .and_then(reason_of)
                        .unwrap_or(Reason::InvalidResponse),
                )
            }
        };
        prev = prev.wrapping_add(delta);
        out.push(history::Result::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(prev.min(u64::from(u32::MAX))),
            Duration::from_millis(latency),
            verdict,
        ));
    }
    out
}

/// The daemon was not running from its last write until now: every service it knew (and not
/// removed) was unknown from then, recorded as an event in the store and the history. The
/// restored state resumes when the first sweep sees it again.
fn mark_downtime(conn: &Connection, mut restored: Restored) -> rusqlite::Result<Restored> {
    let last: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'last_write'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(last) = last else {
        return Ok(restored);
    };
    let mut insert = conn.prepare(
        "INSERT INTO event (service, at, from_state, to_state) SELECT id, ?2, ?3, 0 FROM service WHERE name = ?1",
    )?;
    for (name, h) in restored.history.services.iter_mut() {
        let Some(from) = h.state.filter(|s| *s != State::Unknown) else {
            continue;
        };
        if h.removed_at.is_some() {
            continue;
        }
        let at = last.max(h.events().last().map_or(last, |e| e.at));
        insert.execute(params![&**name, at, state_code(from)])?;
        h.record(Event {
            at,
            from,
            to: State::Unknown,
            reason: None,
            error: None,
        });
    }
    Ok(restored)
}

fn load(conn: &Connection) -> rusqlite::Result<Restored> {
    let mut restored = Restored::default();
    let mut ids = foldhash::HashMap::default();
    let mut rows = conn.prepare(
        "SELECT id, name, url, state, since, consecutive_failures, consecutive_successes, counts, recent, removed_at FROM service",
    )?;
    let mut q = rows.query([])?;
    while let Some(r) = q.next()? {
        let id: i64 = r.get(0)?;
        let name: String = r.get(1)?;
        let url: String = r.get(2)?;
        let saved = Saved {
            url: url.clone(),
            state: state_of(r.get(3)?),
            since: history::system_time(r.get(4)?),
            consecutive_failures: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
            consecutive_successes: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
            counts: counts_of(&r.get::<_, String>(7)?),
        };
        let mut h = ServiceHistory::new(&url);
        for result in decode_recent(&r.get::<_, Vec<u8>>(8)?) {
            h.push(result);
        }
        h.removed_at = r.get(9)?;
        ids.insert(id, name.clone());
        restored.history.services.insert(name.clone().into(), h);
        restored.services.insert(name, saved);
    }
    let mut events = conn.prepare(
        "SELECT e.service, e.at, e.from_state, e.to_state, e.reason, t.text FROM event e LEFT JOIN error_text t ON t.id = e.error ORDER BY e.service, e.at",
    )?;
    let mut q = events.query([])?;
    while let Some(r) = q.next()? {
        let Some(name) = ids.get(&r.get::<_, i64>(0)?) else {
            continue;
        };
        let Some(h) = restored.history.services.get_mut(name.as_str()) else {
            continue;
        };
        h.record(Event {
            at: r.get(1)?,
            from: state_of(r.get(2)?),
            to: state_of(r.get(3)?),
            reason: r
                .get::<_, Option<String>>(4)?
                .as_deref()
                .and_then(reason_of),
            error: r.get::<_, Option<String>>(5)?.map(String::into_boxed_str),
        });
    }
    let mut windows =
        conn.prepare("SELECT id, targets, start, end, reason FROM maintenance ORDER BY start")?;
    let mut q = windows.query([])?;
    while let Some(r) = q.next()? {
        let targets: String = r.get(1)?;
        // A window whose targets do not read (written by another version) is dropped: better
        // than a window that covers what nobody meant.
        let Ok(targets) = serde_json::from_str(&targets) else {
            continue;
        };
        restored.ad_hoc.push(crate::maintenance::AdHoc {
            id: r.get(0)?,
            targets,
            start: r.get(2)?,
            end: r.get(3)?,
            reason: r.get(4)?,
        });
    }
    Ok(restored)
}

fn write(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO service (name, url, state, since, consecutive_failures, consecutive_successes, counts, recent, removed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)
             ON CONFLICT(name) DO UPDATE SET url = excluded.url, state = excluded.state, since = excluded.since,
               consecutive_failures = excluded.consecutive_failures, consecutive_successes = excluded.consecutive_successes,
               counts = excluded.counts, recent = excluded.recent, removed_at = NULL",
        )?;
        let mut counts = String::new();
        let mut recent = Vec::new();
        for row in &batch.rows {
            counts_json(&row.counts, &mut counts);
            encode_recent(&row.recent, &mut recent);
            upsert.execute(params![
                row.service.name,
                // Never the credentials a URL may carry: the file is not a place for secrets.
                row.service.redacted_url(),
                state_code(row.state),
                history::millis(row.since),
                row.consecutive_failures,
                row.consecutive_successes,
                counts,
                recent,
            ])?;
        }
        let mut ensure = tx.prepare_cached(
            "INSERT INTO service (name, url, state, since, consecutive_failures, consecutive_successes, counts, recent)
             VALUES (?1, '', 0, ?2, 0, 0, '{}', x'') ON CONFLICT(name) DO NOTHING",
        )?;
        let mut id_of = tx.prepare_cached("SELECT id FROM service WHERE name = ?1")?;
        let mut text = tx.prepare_cached(
            "INSERT INTO error_text (text) VALUES (?1) ON CONFLICT(text) DO NOTHING",
        )?;
        let mut text_id = tx.prepare_cached("SELECT id FROM error_text WHERE text = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO event (service, at, from_state, to_state, reason, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (name, e) in &batch.events {
            ensure.execute(params![&**name, e.at])?;
            let id: i64 = id_of.query_row([&**name], |r| r.get(0))?;
            let error_id: Option<i64> = match &e.error {
                Some(err) => {
                    let cut = &err[..crate::probe::prefix_len(err, ERROR_BYTES)];
                    text.execute([cut])?;
                    text_id.query_row([cut], |r| r.get(0)).optional()?
                }
                None => None,
            };
            insert.execute(params![
                id,
                e.at,
                state_code(e.from),
                state_code(e.to),
                e.reason.map(Reason::as_str),
                error_id,
            ])?;
        }
        // Gone is unknown from then on: a restart must not bring it back as what it was.
        let mut removed = tx.prepare_cached(
            "UPDATE service SET removed_at = ?2, state = 0, since = ?2, consecutive_failures = 0, consecutive_successes = 0 WHERE name = ?1",
        )?;
        for (name, at) in &batch.removed {
            removed.execute(params![&**name, at])?;
        }
        let mut back = tx.prepare_cached("UPDATE service SET removed_at = NULL WHERE name = ?1")?;
        for name in &batch.returned {
            back.execute([&**name])?;
        }
    }
    if let Some(windows) = &batch.ad_hoc {
        tx.execute("DELETE FROM maintenance", [])?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO maintenance (id, targets, start, end, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for w in windows {
            let targets = serde_json::to_string(&w.targets).unwrap_or_else(|_| "{}".into());
            insert.execute(params![w.id, targets, w.start, w.end, w.reason])?;
        }
    }
    if let Some(cutoff) = batch.prune_before {
        tx.execute(
            "DELETE FROM service WHERE removed_at IS NOT NULL AND removed_at < ?1",
            [cutoff],
        )?;
        // Events before the cutoff go, but the one in force at it (the latest before it):
        // uptime needs it. And no service keeps more than the history does (a service
        // flapping every sweep). Two statements: one pass with both window columns sorts the
        // whole table twice and took twice as long (bench --history 100000). Both bind the
        // cutoff (`?1 = ?1` in the second, which has no use for it).
        for (sql, limit) in [
            (
                "SELECT rowid, ROW_NUMBER() OVER (PARTITION BY service ORDER BY at DESC, rowid DESC) AS n FROM event WHERE at < ?1",
                1,
            ),
            (
                "SELECT rowid, ROW_NUMBER() OVER (PARTITION BY service ORDER BY at DESC, rowid DESC) AS n FROM event WHERE ?1 = ?1",
                history::MAX_EVENTS as i64,
            ),
        ] {
            tx.execute(
                &format!(
                    "DELETE FROM event WHERE rowid IN (SELECT rowid FROM ({sql}) WHERE n > ?2)"
                ),
                params![cutoff, limit],
            )?;
        }
        tx.execute(
            "DELETE FROM error_text WHERE id NOT IN (SELECT error FROM event WHERE error IS NOT NULL)",
            [],
        )?;
    }
    // When the daemon last wrote: after a stop, the time from then to the next start is
    // unknown, not the state it was in.
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('last_write', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [history::millis(SystemTime::now())],
    )?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "healthsweep-store-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn service(name: &str, url: &str) -> Arc<crate::config::Service> {
        let c = crate::config::parse(
            Path::new("t.toml"),
            &format!("[[service]]\nname = \"{name}\"\nurl = \"{url}\"\n"),
        )
        .expect("valid");
        c.services[0].clone()
    }

    fn saved(state: State) -> Saved {
        let mut counts = Counts::default();
        counts.ok = 7;
        counts.set_failed(Reason::ALL[2], 3);
        Saved {
            url: "http://127.0.0.1:1/health".into(),
            state,
            since: history::system_time(1_700_000_000_000),
            consecutive_failures: 2,
            consecutive_successes: 0,
            counts,
        }
    }

    fn result(secs: u64, v: history::Verdict) -> history::Result {
        history::Result::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Duration::from_millis(secs % 1000),
            v,
        )
    }

    #[test]
    fn what_is_written_comes_back() {
        let d = dir();
        let errors = Arc::new(AtomicU64::new(0));
        let mut store = Store::open(&d, errors.clone());
        assert!(store.is_open());
        let recent = vec![
            result(1_700_000_000, history::Verdict::Up),
            result(1_700_000_015, history::Verdict::Down(Reason::ALL[3])),
            result(1_700_000_030, history::Verdict::Degraded),
        ];
        let s = saved(State::Down);
        let mut batch = Batch {
            rows: vec![Row {
                service: service("a", &s.url),
                state: s.state,
                since: s.since,
                consecutive_failures: s.consecutive_failures,
                consecutive_successes: s.consecutive_successes,
                counts: s.counts,
                recent: recent.clone(),
            }],
            ..Batch::default()
        };
        batch.events.push((
            "a".into(),
            Event {
                at: 1_700_000_000_000,
                from: State::Up,
                to: State::Down,
                reason: Some(Reason::ALL[3]),
                error: Some("connection refused".into()),
            },
        ));
        store.write(&batch);
        drop(store);
        let mut store = Store::open(&d, errors.clone());
        let r = store.load();
        assert_eq!(r.services.get("a"), Some(&saved(State::Down)));
        let h = r.history.services.get("a").expect("history");
        assert_eq!(h.recent().collect::<Vec<_>>(), recent);
        assert_eq!(h.events().len(), 2);
        assert_eq!(h.events()[0].error.as_deref(), Some("connection refused"));
        assert_eq!(
            (h.events()[1].from, h.events()[1].to),
            (State::Down, State::Unknown),
            "the time the daemon was stopped is unknown"
        );
        assert_eq!(errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_a_fresh_one_started() {
        let d = dir();
        std::fs::write(d.join(FILE), vec![0x5a; 8192]).expect("garbage");
        let errors = Arc::new(AtomicU64::new(0));
        let mut store = Store::open(&d, errors.clone());
        assert!(store.is_open(), "a fresh database");
        assert_eq!(store.load().services.len(), 0);
        assert_eq!(errors.load(Ordering::Relaxed), 1);
        let aside: Vec<_> = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "kept, not deleted");
        assert_eq!(
            std::fs::read(aside[0].path()).expect("kept").len(),
            8192,
            "byte for byte"
        );
    }

    #[test]
    fn an_unwritable_place_is_counted_and_memory_goes_on() {
        let errors = Arc::new(AtomicU64::new(0));
        let mut store = Store::open(Path::new("/proc/healthsweep-nowhere"), errors.clone());
        assert!(!store.is_open());
        assert_eq!(store.load().services.len(), 0);
        store.write(&Batch {
            returned: vec!["a".into()],
            ..Batch::default()
        });
        assert_eq!(
            errors.load(Ordering::Relaxed),
            1,
            "one failure, retried later"
        );
    }

    #[test]
    fn pruning_keeps_the_event_in_force_and_drops_old_removed_services() {
        let d = dir();
        let errors = Arc::new(AtomicU64::new(0));
        let mut store = Store::open(&d, errors.clone());
        let ev = |at, to| Event {
            at,
            from: State::Unknown,
            to,
            reason: None,
            error: None,
        };
        let mut batch = Batch::default();
        for (i, at) in [10, 20, 30, 40].into_iter().enumerate() {
            let to = if i % 2 == 0 { State::Up } else { State::Down };
            batch.events.push(("a".into(), ev(at, to)));
            batch.events.push(("gone".into(), ev(at, to)));
        }
        batch.removed.push(("gone".into(), 25));
        store.write(&batch);
        store.write(&Batch {
            prune_before: Some(35),
            ..Batch::default()
        });
        let r = store.load();
        let h = r.history.services.get("a").expect("kept");
        assert_eq!(
            h.events()
                .iter()
                .filter(|e| e.to != State::Unknown)
                .map(|e| e.at)
                .collect::<Vec<_>>(),
            [30, 40],
            "30 was in force at 35"
        );
        assert!(!r.history.services.contains_key("gone"));
    }

    fn event(at: Millis, to: State) -> Event {
        Event {
            at,
            from: State::Unknown,
            to,
            reason: None,
            error: None,
        }
    }

    fn row(name: &str, url: &str, state: State) -> Row {
        Row {
            service: service(name, url),
            state,
            since: history::system_time(5),
            consecutive_failures: 0,
            consecutive_successes: 1,
            counts: Counts::default(),
            recent: Vec::new(),
        }
    }

    #[test]
    fn events_wait_out_a_locked_database_and_none_is_lost() {
        let d = dir();
        let errors = Arc::new(AtomicU64::new(0));
        let mut store = Store::open(&d, errors.clone());
        store.write(&Batch {
            rows: vec![row("a", "http://127.0.0.1:1/", State::Up)],
            ..Batch::default()
        });
        // Another process holds the write lock.
        let other = Connection::open(d.join(FILE)).expect("open");
        other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        store.write(&Batch {
            events: vec![("a".into(), event(10, State::Down))],
            ..Batch::default()
        });
        assert_eq!(errors.load(Ordering::Relaxed), 1, "counted");
        other.execute_batch("COMMIT").expect("unlock");
        drop(other);
        store.failed_at = None; // (the retry delay, not what is tested)
        store.write(&Batch {
            events: vec![("a".into(), event(20, State::Up))],
            ..Batch::default()
        });
        let r = store.load();
        let at: Vec<_> = r.history.services["a"]
            .events()
            .iter()
            .filter(|e| e.to != State::Unknown)
            .map(|e| e.at)
            .collect();
        assert_eq!(at, [10, 20], "the held-back event too, in order");
    }

    #[test]
    fn another_url_starts_over_and_a_removed_service_comes_back_unknown() {
        let d = dir();
        let mut store = Store::open(&d, Arc::new(AtomicU64::new(0)));
        store.write(&Batch {
            rows: vec![
                row("a", "http://127.0.0.1:1/", State::Up),
                row("b", "http://127.0.0.1:2/", State::Down),
            ],
            events: vec![
                ("a".into(), event(1, State::Up)),
                ("b".into(), event(1, State::Down)),
            ],
            ..Batch::default()
        });
        store.write(&Batch {
            rows: vec![row("a", "http://127.0.0.1:9/", State::Up)],
            removed: vec![("b".into(), 50)],
            ..Batch::default()
        });
        let r = store.load();
        assert!(
            r.history.services["a"].events().is_empty(),
            "the old target's events are gone"
        );
        assert_eq!(r.services["b"].state, State::Unknown);
        assert_eq!(history::millis(r.services["b"].since), 50);
        assert_eq!(r.history.services["b"].removed_at, Some(50));
    }

    #[test]
    fn recent_results_survive_garbage() {
        let mut rs = Vec::new();
        for i in 0..60 {
            rs.push(result(1_700_000_000 + i * 15, history::Verdict::Up));
        }
        let mut bytes = Vec::new();
        encode_recent(&rs, &mut bytes);
        assert!(bytes.len() < 60 * 5, "{} bytes", bytes.len());
        assert_eq!(decode_recent(&bytes), rs);
        for cut in 0..bytes.len() {
            let _ = decode_recent(&bytes[..cut]);
        }
        let _ = decode_recent(&[0xff; 64]);
        let _ = decode_recent(&[0, 0, 2, 200, b'x']);
    }
}
