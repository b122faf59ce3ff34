//! `healthsweep bench --discovery N`: what discovery costs at N targets in one file_sd file,
//! measured on the daemon's own path (the file source task with its watcher, the [`Fleet`]
//! that composes the services, the snapshot carried over as the sweeper does on a change).
//!
//! The orchestrator writes the file and a config; a worker process of its own
//! (`healthsweep bench-discovery`, so its peak memory is discovery's alone) measures:
//! - the **first load**: from the process start to a snapshot holding every target (config
//!   load, the file read and parsed, the services made): wall time, CPU and peak RSS;
//! - **refreshes**: the file replaced by a rename (as config management writes it) with 1 % of
//!   its targets changed, from the rename to the snapshot under the new fleet: wall time, CPU
//!   of the whole process, and how many services kept their state (every other one should).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{cpu_seconds, current_rss, median, peak_rss, reset_peak_rss};
use crate::config::{self, Loaded};
use crate::discovery::Fleet;
use crate::probe::Prober;
use crate::snapshot::{Snapshot, State};

/// Targets per target group in the generated file (each group has its own labels).
const GROUP: usize = 100;

/// Of every 100 targets, how many a refresh changes.
const CHANGED_PER_100: usize = 1;

/// How long to wait for the fleet to show a change before calling the run failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// After a refresh is seen, how long CPU is still counted: a second read of the same change
/// (two watcher events) belongs to the refresh's cost.
const TAIL: Duration = Duration::from_millis(500);

/// What the discovery worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoveryReport {
    pub targets: usize,
    pub file_bytes: u64,
    /// Config load to a snapshot of every target (CPU and memory: since the process started).
    pub first_load_seconds: f64,
    pub first_load_cpu_seconds: f64,
    pub first_load_peak_rss_bytes: u64,
    /// Resident memory once the first load is done.
    pub rss_after_load_bytes: u64,
    pub refreshes: Vec<RefreshMeasure>,
    /// Peak resident memory during the refreshes.
    pub refresh_peak_rss_bytes: u64,
}

/// One refresh: the file renamed over with `changed` targets replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshMeasure {
    pub changed: usize,
    /// Rename to the snapshot under the new fleet (includes the file source's 100 ms settle).
    pub wall_seconds: f64,
    /// CPU of the whole process from the rename to half a second after the new snapshot.
    pub cpu_seconds: f64,
    /// Services that kept their state (`up`, from the sweep before), and new ones (`unknown`).
    pub kept_state: usize,
    pub new_unknown: usize,
    pub services: usize,
}

/// Runs the discovery benchmark at each size in `sizes` and prints the results.
pub fn run(sizes: &[usize], rounds: usize, json: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the healthsweep binary")?;
    let dir = std::env::temp_dir().join(format!("healthsweep-bench-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    for &n in sizes {
        let report = measure(&exe, &dir, n, rounds).with_context(|| format!("{n} targets"));
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        if !json {
            println!("{}", table(&report));
        }
        reports.push(report);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

fn measure(exe: &Path, dir: &Path, n: usize, rounds: usize) -> anyhow::Result<DiscoveryReport> {
    let file = dir.join(format!("targets-{n}.json"));
    std::fs::write(&file, targets_file(n, 0))?;
    let config = dir.join(format!("discovery-{n}.toml"));
    std::fs::write(&config, config_text(&file))?;
    let out = Command::new(exe)
        .args(["--log-level", "warn", "bench-discovery", "--config"])
        .arg(&config)
        .arg("--file")
        .arg(&file)
        .args(["--targets", &n.to_string(), "--rounds", &rounds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the discovery bench worker")?;
    if !out.status.success() {
        bail!("the discovery bench worker failed: {}", out.status);
    }
    serde_json::from_slice(&out.stdout).context("parsing the discovery bench worker's report")
}

/// The config: one file_sd source, a template as a real fleet would use it.
fn config_text(file: &Path) -> String {
    let path = toml::Value::String(file.display().to_string());
    format!(
        "[daemon]\ninterval = \"30s\"\ndeadline = \"5s\"\n\n\
         [[discover]]\nname = \"bench\"\nfile = {{ paths = [{path}] }}\n\n\
         [discover.service]\nurl = \"http://{{target}}/health\"\ngroup = \"{{label:team}}\"\n\
         expect_json = {{ \"/status\" = \"ok\" }}\n"
    )
}

/// A file_sd JSON file of `n` targets in groups of 100, at `version`: from version
/// `v - 1` to `v`, the targets `i` with `i % 100 == v - 1` move to another port (so they are
/// new targets, and the ones they replace are gone): 1 % of them.
fn targets_file(n: usize, version: usize) -> String {
    let mut s = String::with_capacity(n * 24 + n / GROUP * 64);
    s.push('[');
    for (g, start) in (0..n).step_by(GROUP).enumerate() {
        if g > 0 {
            s.push(',');
        }
        s.push_str("\n{\"targets\": [");
        for i in start..(start + GROUP).min(n) {
            if i > start {
                s.push_str(", ");
            }
            let port = if i % 100 < version * CHANGED_PER_100 {
                9000 + i % 100
            } else {
                8080
            };
            let _ = write!(
                s,
                "\"10.{}.{}.{}:{port}\"",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            );
        }
        let _ = write!(
            s,
            "], \"labels\": {{\"team\": \"team-{}\", \"env\": \"prod\"}}}}",
            g % 20
        );
    }
    s.push_str("\n]\n");
    s
}

/// Options of the measured worker (`healthsweep bench-discovery`).
pub struct WorkerOptions {
    pub config: PathBuf,
    pub file: PathBuf,
    pub targets: usize,
    pub rounds: usize,
    pub connection_budget: usize,
}

/// The measured process: the first load, then `rounds` refreshes. Prints its report as JSON.
pub async fn run_worker(options: WorkerOptions) -> anyhow::Result<()> {
    // The config load is part of it; CPU counts from the process start.
    let started = Instant::now();
    let cfg = config::load(&options.config)?;
    let (configs_tx, configs) = watch::channel(Loaded {
        generation: 1,
        config: Arc::new(cfg),
    });
    let prober = Arc::new(Prober::new(options.connection_budget));
    let fleet = Fleet::new(prober.clone(), configs);
    let mut fleet_configs = fleet.configs();
    let shutdown = CancellationToken::new();
    tokio::spawn(fleet.run(shutdown.clone()));
    let loaded = wait_for(&mut fleet_configs, |l| {
        l.config.services.len() == options.targets
    })
    .await
    .context("the first load")?;
    let snapshot = Snapshot::new(&loaded, SystemTime::now());
    prober.use_config(&loaded.config);
    let first_load_seconds = started.elapsed().as_secs_f64();
    let first_load_cpu_seconds = cpu_seconds();
    let first_load_peak_rss_bytes = peak_rss();
    let rss_after_load_bytes = current_rss();
    let file_bytes = std::fs::metadata(&options.file)?.len();
    reset_peak_rss();

    let mut snapshot = all_up(&snapshot);
    let mut refreshes = Vec::with_capacity(options.rounds);
    for version in 1..=options.rounds {
        let tmp = options.file.with_extension("json.tmp");
        std::fs::write(&tmp, targets_file(options.targets, version))?;
        // The generation of the file the fleet must show: its first changed target.
        let first_new = format!("10.0.0.{}:{}", version - 1, 9000 + version - 1);
        let cpu = cpu_seconds();
        let t = Instant::now();
        std::fs::rename(&tmp, &options.file)?;
        let next = wait_for(&mut fleet_configs, |l| {
            l.config.services.iter().any(|s| s.name == first_new)
        })
        .await
        .with_context(|| format!("refresh {version}"))?;
        // As the sweeper does when the fleet changes.
        snapshot = snapshot.reconfigured(&next, SystemTime::now());
        prober.use_config(&next.config);
        let wall_seconds = t.elapsed().as_secs_f64();
        tokio::time::sleep(TAIL).await;
        let cpu_seconds = cpu_seconds() - cpu;
        let kept_state = snapshot.count(State::Up);
        let new_unknown = snapshot.count(State::Unknown);
        refreshes.push(RefreshMeasure {
            changed: options.targets * CHANGED_PER_100 / 100,
            wall_seconds,
            cpu_seconds,
            kept_state,
            new_unknown,
            services: snapshot.services.len(),
        });
        snapshot = all_up(&snapshot);
    }
    shutdown.cancel();
    drop(configs_tx);
    let report = DiscoveryReport {
        targets: options.targets,
        file_bytes,
        first_load_seconds,
        first_load_cpu_seconds,
        first_load_peak_rss_bytes,
        rss_after_load_bytes,
        refreshes,
        refresh_peak_rss_bytes: peak_rss(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    std::io::Write::write_all(&mut out, b"\n")?;
    Ok(())
}

/// The next config from the fleet that satisfies `done`.
async fn wait_for(
    rx: &mut watch::Receiver<Loaded>,
    done: impl Fn(&Loaded) -> bool,
) -> anyhow::Result<Loaded> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        {
            let current = rx.borrow_and_update();
            if done(&current) {
                return Ok(current.clone());
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the fleet stopped"),
            Err(_) => bail!("the fleet did not show the targets within {PATIENCE:?}"),
        }
    }
}

/// `snapshot` after a sweep in which every check passed: so a refresh shows which services
/// kept their state (`up`) and which are new (`unknown`).
fn all_up(snapshot: &Snapshot) -> Snapshot {
    super::swept(snapshot, SystemTime::now(), &[])
}

/// The report as a table, with medians of the refreshes.
pub fn table(r: &DiscoveryReport) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut wall: Vec<f64> = r.refreshes.iter().map(|m| m.wall_seconds).collect();
    let mut cpu: Vec<f64> = r.refreshes.iter().map(|m| m.cpu_seconds).collect();
    let kept_all = r
        .refreshes
        .iter()
        .all(|m| m.kept_state + m.changed == m.services && m.new_unknown == m.changed);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "discovery: {} targets in one file_sd file ({:.1} MiB)",
        r.targets,
        r.file_bytes as f64 / MIB
    );
    let _ = writeln!(
        s,
        "  first load     {:>8.3} s wall  {:>8.3} s CPU  peak RSS {:.1} MiB (then {:.1} MiB)",
        r.first_load_seconds,
        r.first_load_cpu_seconds,
        r.first_load_peak_rss_bytes as f64 / MIB,
        r.rss_after_load_bytes as f64 / MIB
    );
    let changed = r.refreshes.first().map_or(0, |m| m.changed);
    let _ = writeln!(
        s,
        "  refresh (1 %)  {:>8.3} s wall  {:>8.3} s CPU  median of {}; {changed} changed, {}  peak RSS {:.1} MiB",
        median(&mut wall),
        median(&mut cpu),
        r.refreshes.len(),
        if kept_all {
            "every other service kept its state"
        } else {
            "SOME SERVICES LOST THEIR STATE"
        },
        r.refresh_peak_rss_bytes as f64 / MIB
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_of_the_file_changes_one_target_in_a_hundred() {
        let parse = |v| {
            crate::discovery::parse(
                targets_file(1000, v).as_bytes(),
                crate::discovery::Format::Json,
            )
            .expect("valid file_sd JSON")
        };
        let targets = |v| -> std::collections::BTreeSet<String> {
            parse(v).into_iter().flat_map(|g| g.targets).collect()
        };
        assert_eq!(parse(0).len(), 10, "groups of {GROUP}");
        let (a, b) = (targets(2), targets(3));
        assert_eq!(a.len(), 1000);
        assert_eq!(a.difference(&b).count(), 10);
        assert_eq!(b.difference(&a).count(), 10);
        assert!(
            b.contains("10.0.0.2:9002"),
            "the marker the worker waits for"
        );
    }

    #[test]
    fn the_config_has_one_file_source_for_the_file() {
        let text = config_text(Path::new("/tmp/x y/targets.json"));
        let c = crate::config::parse(Path::new("t.toml"), &text).expect("valid config");
        assert_eq!(c.discover.len(), 1);
        assert_eq!(c.discover[0].spec.kind(), "file");
    }
}
