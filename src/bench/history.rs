//! `healthsweep bench --history N`: what the status page's history and the state store cost at
//! N services, on the daemon's own code (the recorder's fold, the store's batches, SQLite):
//! - **memory**: resident memory added once every service has its 60 latest results, with
//!   1 % of the services changing state each hour (as on a 15 s interval);
//! - **writer CPU per sweep**: folding a sweep in, choosing what to write, one transaction;
//! - **the database after 30 days**: 720 hours of 1 % of the services changing state each hour
//!   (the events the store keeps), every row written, then pruned as the daemon prunes;
//! - **the page**: `/ui/overview` (the first page, failing first, with strips and uptime) and
//!   the page's HTML, rendered at N services.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::Serialize;

use super::{cpu_seconds, current_rss, median, swept};
use crate::config::{self, Loaded};
use crate::history::{self, Event, Recorder};
use crate::probe::Reason;
use crate::snapshot::{Snapshot, State};
use crate::store::{self, Batch, Store};

/// Sweeps folded in: enough to fill every ring (60) and a few more.
const SWEEPS: usize = 72;

/// The sweep interval simulated: 1 % of the services an hour is this share per sweep.
const INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub services: usize,
    /// Resident memory added by the history and the store once every ring is full.
    pub added_rss_bytes: u64,
    /// CPU of the recorder's work per sweep (fold, batch, transaction): median and max.
    pub writer_cpu_seconds_p50: f64,
    pub writer_cpu_seconds_max: f64,
    /// Rows written per sweep (median).
    pub rows_per_sweep: usize,
    /// The database after 30 days of 1 % of the services changing state each hour.
    pub db_bytes_30_days: u64,
    pub events_30_days: usize,
    /// CPU of one pruning of that database (the recorder prunes once per 240 sweeps).
    pub prune_cpu_seconds: f64,
    /// `/ui/overview`, first page of 100, failing first: median of 5 renders.
    pub overview_seconds: f64,
    pub overview_bytes: usize,
}

pub fn run(sizes: &[usize], json: bool) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for &n in sizes {
        let r = measure(n)?;
        if !json {
            print!("{}", table(&r));
        }
        reports.push(r);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

fn measure(n: usize) -> anyhow::Result<HistoryReport> {
    let mut text = String::with_capacity(n * 80);
    for i in 0..n {
        let _ = write!(
            text,
            "[[service]]\nname = \"svc-{i}\"\ngroup = \"g{}\"\nurl = \"http://127.0.0.1:9/{i}\"\n",
            i % 50
        );
    }
    let cfg = config::parse(std::path::Path::new("bench-history.toml"), &text)
        .map_err(|e| anyhow::anyhow!("{}", e.lines().join("; ")))?;
    let loaded = Loaded {
        generation: 1,
        config: Arc::new(cfg),
    };
    let dir = std::env::temp_dir().join(format!(
        "healthsweep-bench-history-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("a scratch directory")?;
    let flips_per_sweep = (n as f64 * 0.01 * INTERVAL.as_secs_f64() / 3600.0).ceil() as usize;

    let start = SystemTime::now() - INTERVAL * SWEEPS as u32;
    let mut snapshot = Snapshot::new(&loaded, start);
    // A few sweeps first, so the memory of the snapshots' own churn (two alive while one is
    // made) is in the baseline, not in what the history adds.
    for _ in 0..3 {
        snapshot = swept(&snapshot, start, &[]);
    }
    let rss_before = current_rss();
    let shared: history::Shared = Arc::new(RwLock::new(history::History::default()));
    let mut recorder = Recorder::new(shared.clone(), loaded.config.daemon.history_retention);
    let mut store = Store::open(&dir, Arc::new(AtomicU64::new(0)));
    let mut cpu = Vec::with_capacity(SWEEPS);
    let mut rows = Vec::with_capacity(SWEEPS);
    let mut down: Vec<usize> = Vec::new();
    let mut turn = crate::recorder::Turn::default();
    for s in 0..SWEEPS {
        let at = start + INTERVAL * s as u32;
        // A few services change state each sweep: 1 % an hour.
        down = (0..flips_per_sweep)
            .map(|k| (s * flips_per_sweep + k) * 7919 % n)
            .collect();
        let next = swept(&snapshot, at, &down);
        snapshot = next;
        let t = cpu_seconds();
        let changes = recorder.record(&snapshot, at);
        let batch = crate::recorder::batch_turn(&snapshot, &shared, changes, false, &mut turn);
        store.write(&batch);
        cpu.push(cpu_seconds() - t);
        rows.push(batch.rows.len() as f64);
    }
    let _ = down;
    let added_rss_bytes = current_rss().saturating_sub(rss_before);
    let writer_cpu_seconds_max = cpu.iter().copied().fold(0.0, f64::max);
    let writer_cpu_seconds_p50 = median(&mut cpu);
    let rows_per_sweep = median(&mut rows) as usize;

    // The page, at this size and with full rings.
    let snap = Arc::new(snapshot);
    let mut renders = Vec::new();
    let mut overview_bytes = 0;
    for _ in 0..5 {
        let t = tokio::time::Instant::now();
        let body = crate::api::overview_document(&snap, &shared, "");
        renders.push(t.elapsed().as_secs_f64());
        overview_bytes = body.len();
    }
    let overview_seconds = median(&mut renders);
    drop(store);

    // 30 days of state changes, in a database of its own.
    let (db_bytes_30_days, events_30_days, prune_cpu_seconds) =
        thirty_days(&dir.join("30d"), &snap)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(HistoryReport {
        services: n,
        added_rss_bytes,
        writer_cpu_seconds_p50,
        writer_cpu_seconds_max,
        rows_per_sweep,
        db_bytes_30_days,
        events_30_days,
        prune_cpu_seconds,
        overview_seconds,
        overview_bytes,
    })
}

/// 720 hours, 1 % of the services changing state in each (down, and up again the next hour),
/// written as the recorder writes them; then pruned as the daemon prunes. The file's size.
fn thirty_days(dir: &std::path::Path, snapshot: &Snapshot) -> anyhow::Result<(u64, usize, f64)> {
    std::fs::create_dir_all(dir)?;
    let n = snapshot.services.len();
    let mut store = Store::open(dir, Arc::new(AtomicU64::new(0)));
    let now = history::millis(SystemTime::now());
    let hour = 3_600_000i64;
    let base = now - 720 * hour;
    // Every service's row, once.
    let mut all = Batch::default();
    let shared: history::Shared = Default::default();
    let mut recorder = Recorder::new(shared.clone(), Duration::from_secs(30 * 86_400));
    let changes = recorder.record(snapshot, SystemTime::now());
    all.events = changes.events;
    all.rows = crate::recorder::batch_turn(
        snapshot,
        &shared,
        history::Changes::default(),
        true,
        &mut crate::recorder::Turn::default(),
    )
    .rows;
    store.write(&all);
    let per_hour = (n / 100).max(1);
    let mut events = all.events.len();
    for h in 0..720i64 {
        let mut batch = Batch::default();
        for k in 0..per_hour {
            let i = (h as usize * per_hour + k) * 7919 % n;
            let name: Box<str> = snapshot.services[i].service.name.as_str().into();
            let at = base + h * hour + (k as i64 * 1000) % hour;
            batch.events.push((
                name.clone(),
                Event {
                    at,
                    from: State::Up,
                    to: State::Down,
                    reason: Some(Reason::ALL[1]),
                    error: Some(
                        format!(
                            "connect 10.0.{}.{}:8080: Connection refused (os error 111)",
                            i >> 8 & 255,
                            i & 255
                        )
                        .into(),
                    ),
                },
            ));
            batch.events.push((
                name,
                Event {
                    at: at + 60_000,
                    from: State::Down,
                    to: State::Up,
                    reason: None,
                    error: None,
                },
            ));
        }
        events += batch.events.len();
        store.write(&batch);
    }
    let t = cpu_seconds();
    store.write(&Batch {
        prune_before: Some(now - 30 * 24 * hour),
        ..Batch::default()
    });
    let prune_cpu = cpu_seconds() - t;
    drop(store);
    let size = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(dir.join(format!("{}{s}", store::FILE))).ok())
        .map(|m| m.len())
        .sum();
    Ok((size, events, prune_cpu))
}

pub fn table(r: &HistoryReport) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "{} services, history and state store\n  \
         added memory       {:.1} MiB (60 results per service, 1 % changing state an hour)\n  \
         writer per sweep   p50 {:.1} ms CPU, max {:.1} ms ({} rows a sweep)\n  \
         database, 30 days  {:.1} MiB ({} events written, pruned to 30 days in {:.0} ms CPU)\n  \
         /ui/overview       {:.1} ms render, {} bytes (first page of 100, failing first)\n",
        r.services,
        mib(r.added_rss_bytes),
        r.writer_cpu_seconds_p50 * 1e3,
        r.writer_cpu_seconds_max * 1e3,
        r.rows_per_sweep,
        mib(r.db_bytes_30_days),
        r.events_30_days,
        r.prune_cpu_seconds * 1e3,
        r.overview_seconds * 1e3,
        r.overview_bytes,
    )
}
