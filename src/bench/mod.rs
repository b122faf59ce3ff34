//! `healthsweep bench`: how fast and how lean a sweep is at 100 to 100,000 services.
//!
//! Three kinds of process, so each is measured alone:
//! - the **mock fleet** (`healthsweep mock-fleet`, several processes so no one process needs more
//!   descriptors than the open-file limit allows): services answering `{"status":"ok"}` after a
//!   fixed latency, spread over many ports so ephemeral ports and accept queues never run out;
//! - one **worker** per fleet size (`healthsweep bench-run`), the measured "daemon": it loads the
//!   config and runs the daemon's real engine ([`run_sweep`] with the daemon's [`Prober`]) for
//!   several sweeps, then renders `/metrics` and `/status` and sits idle for a moment;
//! - this **orchestrator**, which starts the others and prints one table per size.

pub mod discovery;
pub mod history;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{self, Loaded};
use crate::metrics::Metrics;
use crate::probe::Prober;
use crate::reload::ReloadStatus;
use crate::snapshot::Snapshot;
use crate::sweep::{Plan, run_sweep};

/// Options of `healthsweep bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fleet sizes to measure, in order.
    pub sizes: Vec<usize>,
    /// Sweeps per size (the first opens new connections; the rest may reuse them).
    pub sweeps: usize,
    /// Latency of every mock service.
    pub latency: Duration,
    /// Pause between sweeps, as the daemon's interval would leave.
    pub gap: Duration,
    /// Mock fleet processes, and ports each one listens on.
    pub mock_processes: usize,
    pub ports_per_process: usize,
    /// Extra `[defaults]`/`[daemon]` TOML lines for the generated config (e.g. a connection
    /// policy), to compare settings side by side.
    pub extra_config: Vec<String>,
    /// Give every service its own host name, resolved through a mock DNS server.
    pub hostnames: bool,
    /// With `hostnames`: percent of names the DNS server never answers.
    pub dns_unanswered: u8,
    /// gRPC health checks instead of HTTP GETs.
    pub grpc: bool,
    /// Print JSON instead of tables.
    pub json: bool,
}

/// Where the mock DNS server listens for `--hostnames`: a loopback address of its own, port 53
/// because /etc/resolv.conf cannot name another port.
const MOCK_DNS: &str = "127.0.0.153:53";

/// What one worker measured at one fleet size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeReport {
    pub services: usize,
    pub max_in_flight: usize,
    pub config_load_seconds: f64,
    /// Resident memory right after loading the config.
    pub rss_after_load_bytes: u64,
    /// Peak resident memory while the config was read, parsed and validated.
    pub peak_rss_load_bytes: u64,
    /// Peak resident memory during the sweeps (measured from the end of the config load).
    pub peak_rss_sweeps_bytes: u64,
    /// Peak resident memory while `/metrics` and `/status` were rendered, and during the sweep
    /// under scraping.
    pub peak_rss_render_bytes: u64,
    pub sweeps: Vec<SweepMeasure>,
    /// The median of as many sweeps as the later ones, with /metrics scraped back to back.
    pub sweep_under_scrape: Option<SweepMeasure>,
    /// The median of the same number of sweeps without scraping, run alternately with those.
    #[serde(default)]
    pub sweep_beside_scrape: Option<SweepMeasure>,
    #[serde(default)]
    pub reload: Option<ReloadMeasure>,
    /// Peak resident memory during the reload: two configs and a parse at once, for a moment
    /// (not in `peak_rss_bytes`, the steady state).
    #[serde(default)]
    pub peak_rss_reload_bytes: u64,
    /// How late a task beside the sweep (a 5 ms timer, as the server's tasks are) wakes during
    /// the later sweeps: p50, p99, max, in milliseconds.
    #[serde(default)]
    pub wake_lateness_ms: Option<[f64; 3]>,
    pub metrics_render_seconds: f64,
    pub metrics_bytes: usize,
    /// The same, gzipped as served to a scraper that asks (Prometheus does).
    #[serde(default)]
    pub metrics_gzip_seconds: f64,
    #[serde(default)]
    pub metrics_gzip_bytes: usize,
    pub status_render_seconds: f64,
    pub status_bytes: usize,
    pub peak_rss_bytes: u64,
    pub idle_seconds: f64,
    pub idle_cpu_seconds: f64,
    pub idle_rss_bytes: u64,
    /// Threads of the process after the sweeps (the system resolver's blocking pool shows here).
    pub threads: u64,
    /// Connections kept open after the sweeps (idle HTTP/1.1 ones, and shared HTTP/2 ones).
    pub connections_kept: usize,
    /// Bytes of one check's future (the first service's), as each of the `max_in_flight`
    /// checks in flight holds it for its whole life.
    #[serde(default)]
    pub check_future_bytes: usize,
}

/// A reload with one service changed, in the middle of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadMeasure {
    /// Reading, parsing and validating the file (on a blocking thread, as the daemon does).
    pub load_seconds: f64,
    /// Taking it on: the snapshot carried over to the new config, the prober told (the sweeper
    /// does this on its own task).
    pub apply_seconds: f64,
    /// The sweep the reload happened in.
    pub sweep: SweepMeasure,
}

/// One sweep, measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepMeasure {
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` spent in the kernel (sockets, epoll, page faults): lowered
    /// only by fewer system calls, and the figure to compare with a load generator's
    /// per-request cost. 0 in reports written before it was measured.
    #[serde(default)]
    pub kernel_seconds: f64,
    pub ok: usize,
    /// Failed checks by reason.
    pub failed: BTreeMap<String, usize>,
    /// Checks on a connection kept from the previous sweep.
    pub reused: usize,
    /// Checks that never got a slot before the deadline.
    pub not_started: usize,
    /// `/metrics` scrapes rendered during the sweep (the sweep under scraping only).
    #[serde(default)]
    pub scrapes: Option<u64>,
    /// Gzipped `/metrics` bytes streamed during the sweep, finished scrapes or not: at 100,000
    /// services the render thread (nice 19) may finish none while the sweep has the cores.
    #[serde(default)]
    pub scraped_bytes: u64,
}

/// Runs the whole benchmark: starts the mock fleet, measures each size, prints the results.
pub fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the healthsweep binary")?;
    let fleet = MockFleet::start(&exe, options)?;
    let dir = std::env::temp_dir().join(format!("healthsweep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    if !options.json {
        println!("{}", header(options, &fleet));
    }
    for &n in &options.sizes {
        let path = dir.join(format!("fleet-{n}.toml"));
        std::fs::write(&path, fleet_config(n, &fleet.endpoints, options))?;
        let report = run_worker_process(&exe, &path, &dir, options)
            .with_context(|| format!("measuring {n} services"))?;
        if !options.json {
            println!("{}", table(&report, options.latency));
        }
        reports.push(report);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if options.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// The mock fleet's processes; they exit when their stdin closes (on drop).
struct MockFleet {
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl MockFleet {
    fn start(exe: &Path, options: &BenchOptions) -> anyhow::Result<MockFleet> {
        let mut fleet = MockFleet {
            children: Vec::new(),
            endpoints: Vec::new(),
        };
        for i in 0..options.mock_processes {
            let mut command = Command::new(exe);
            command.args([
                "--log-level",
                "warn",
                "mock-fleet",
                "--ports",
                &options.ports_per_process.to_string(),
                "--latency",
                &format!("{}ms", options.latency.as_millis()),
            ]);
            if options.hostnames && i == 0 {
                command.args(["--dns", MOCK_DNS]);
            }
            if options.grpc {
                command.arg("--grpc");
            }
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting a mock fleet process")?;
            let stdout = child.stdout.take().context("mock stdout")?;
            fleet.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let v: serde_json::Value =
                serde_json::from_str(&line).context("the mock fleet's address line")?;
            for e in v["endpoints"].as_array().context("endpoints list")? {
                fleet
                    .endpoints
                    .push(e.as_str().context("endpoint")?.to_string());
            }
        }
        Ok(fleet)
    }
}

impl Drop for MockFleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A config of `n` services spread round-robin over the fleet's endpoints, each checked the way
/// a real health check is (status and JSON body). With `hostnames`, each service has a name of
/// its own (`svc-7.bench.test`) instead of the endpoint's IP address.
pub fn fleet_config(n: usize, endpoints: &[String], options: &BenchOptions) -> String {
    let extra = &options.extra_config;
    let mut s = String::with_capacity(n * 80 + 256);
    s.push_str("[daemon]\ninterval = \"30s\"\ndeadline = \"5s\"\n");
    let (daemon_extra, defaults_extra): (Vec<&String>, Vec<&String>) =
        extra.iter().partition(|l| l.starts_with("daemon."));
    for l in daemon_extra {
        let _ = writeln!(s, "{}", l.trim_start_matches("daemon."));
    }
    s.push_str(if options.grpc {
        "\n[defaults]\n"
    } else {
        "\n[defaults]\nexpect_json = { \"/status\" = \"ok\" }\n"
    });
    for l in defaults_extra {
        let _ = writeln!(s, "{l}");
    }
    s.push('\n');
    for i in 0..n {
        let e = &endpoints[i % endpoints.len()];
        let host = if options.hostnames {
            let port = e.rsplit(':').next().unwrap_or("80");
            let hang = if i % 100 < usize::from(options.dns_unanswered) {
                "hang-"
            } else {
                ""
            };
            format!("{hang}svc-{i}.bench.test:{port}")
        } else {
            e.clone()
        };
        if options.grpc {
            let _ = write!(
                s,
                "[[service]]\nname = \"svc-{i:06}\"\nurl = \"grpc://{host}\"\ngrpc_service = \"svc.{i}\"\n"
            );
        } else {
            let _ = write!(
                s,
                "[[service]]\nname = \"svc-{i:06}\"\nurl = \"http://{host}/svc/{i}/health\"\n"
            );
        }
    }
    s
}

fn run_worker_process(
    exe: &Path,
    config: &Path,
    dir: &Path,
    options: &BenchOptions,
) -> anyhow::Result<SizeReport> {
    let mut command = if options.hostnames {
        // A private mount namespace whose /etc/resolv.conf names the mock DNS server: both
        // resolvers read it, and the machine's own configuration is untouched.
        let resolv = dir.join("resolv.conf");
        let ip = MOCK_DNS.split(':').next().unwrap_or("127.0.0.153");
        std::fs::write(&resolv, format!("nameserver {ip}\n"))?;
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/resolv.conf && shift && exec "$@""#)
            .arg("sh")
            .arg(&resolv)
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = command
        .args(["--log-level", "warn", "bench-run", "--config"])
        .arg(config)
        .args([
            "--sweeps",
            &options.sweeps.to_string(),
            "--gap",
            &format!("{}ms", options.gap.as_millis()),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running the bench worker")?;
    if !out.status.success() {
        bail!("bench worker failed: {}", out.status);
    }
    serde_json::from_slice(&out.stdout).context("parsing the bench worker's report")
}

/// Options of the measured worker process (`healthsweep bench-run`).
pub struct WorkerOptions {
    pub config: PathBuf,
    pub sweeps: usize,
    pub gap: Duration,
    pub connection_budget: usize,
}

/// How long the worker sits idle after its sweeps, to show it does nothing when there is
/// nothing to do.
const IDLE: Duration = Duration::from_secs(2);

/// The measured process: load, sweep, render, idle. Prints its [`SizeReport`] as JSON.
pub async fn run_worker(options: WorkerOptions) -> anyhow::Result<()> {
    let t = Instant::now();
    let config = config::load(&options.config)?;
    let config_load_seconds = t.elapsed().as_secs_f64();
    let rss_after_load_bytes = current_rss();
    let peak_rss_load_bytes = peak_rss();
    reset_peak_rss();
    let services = config.services.len();
    let max_in_flight = crate::limits::max_in_flight(&config, options.connection_budget);
    let loaded = Loaded {
        generation: 1,
        config: Arc::new(config),
    };
    let prober = Arc::new(Prober::new(options.connection_budget));
    // Made, measured and dropped unpolled (which sends nothing).
    let check_future_bytes = loaded.config.services.first().map_or(0, |svc| {
        std::mem::size_of_val(&prober.check(svc, tokio::time::Instant::now()))
    });
    let mut snapshot = Snapshot::new(&loaded, SystemTime::now());
    let mut sweeps = Vec::with_capacity(options.sweeps);
    let lateness = Lateness::start();
    for i in 0..options.sweeps {
        if i > 0 {
            tokio::time::sleep(options.gap).await;
        }
        lateness.during(i > 0);
        let (measure, next) = measured_sweep(&prober, &loaded, &snapshot, max_in_flight).await;
        lateness.during(false);
        sweeps.push(measure);
        snapshot = next;
    }
    let wake_lateness_ms = lateness.finish().await;

    let peak_rss_sweeps_bytes = peak_rss();
    reset_peak_rss();
    // Shared as the daemon shares it: one snapshot, readers holding the Arc.
    let shared = Arc::new(snapshot);
    let (snapshots_tx, snapshots) = watch::channel(shared.clone());
    let reload = ReloadStatus {
        successful: true,
        last_success: SystemTime::now(),
        last_error: None,
    };
    let (_reload_tx, reloads) = watch::channel(reload.clone());
    let metrics = Arc::new(Metrics::new(snapshots, reloads));
    // Rendered as served: streamed pieces, never the whole body at once.
    let (metrics_render_seconds, metrics_bytes) = median_render(|| streamed(metrics.pieces()));
    // As served to Prometheus, which asks for gzip: streamed pieces, compressed one by one.
    let (metrics_gzip_seconds, metrics_gzip_bytes) =
        median_render(|| streamed(crate::body::gzip(metrics.pieces())));
    let (status_render_seconds, status_bytes) =
        median_render(|| streamed(crate::api::status_document_pieces(&shared, &reload)));

    // A sweep while /metrics is scraped back to back, gzipped, through the server's own body
    // (rendered on the render thread, see `crate::body`): far more often than any real
    // Prometheus. The scrapes must not slow the sweep down much.
    tokio::time::sleep(options.gap).await;
    // Sweeps in pairs, one without scraping and one with, so the two medians come from the
    // same minutes of a machine whose speed drifts.
    let scraping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scraped_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scraper = {
        let (m, scraping, stop, scrapes, bytes) = (
            metrics.clone(),
            scraping.clone(),
            stop.clone(),
            scrapes.clone(),
            scraped_bytes.clone(),
        );
        tokio::spawn(async move {
            use http_body_util::BodyExt as _;
            use std::sync::atomic::Ordering::Relaxed;
            while !stop.load(Relaxed) {
                if !scraping.load(Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut body = crate::body::Body::pieces(crate::body::gzip(m.pieces()));
                // Dropped mid-body when the scraping stops: the next sweep is a quiet one.
                while scraping.load(Relaxed) {
                    match body.frame().await {
                        None => {
                            scrapes.fetch_add(1, Relaxed);
                            break;
                        }
                        Some(Ok(frame)) => {
                            let n = frame.data_ref().map_or(0, bytes::Buf::remaining);
                            bytes.fetch_add(n as u64, Relaxed);
                            drop(std::hint::black_box(frame));
                        }
                        // A failed body fails at every poll from then on.
                        Some(Err(_)) => break,
                    }
                }
            }
        })
    };
    let (mut quiet, mut scraped) = (Vec::new(), Vec::new());
    // Published after every sweep, as the daemon's sweeper publishes it: the scrapes render
    // the latest snapshot, and the one before goes when no reader holds it any more.
    let mut current = shared;
    for i in 0..options.sweeps.saturating_sub(1).max(1) * 2 {
        if i > 0 {
            tokio::time::sleep(options.gap).await;
        }
        let with = i % 2 == 1;
        scraping.store(with, std::sync::atomic::Ordering::Relaxed);
        let before = scrapes.load(std::sync::atomic::Ordering::Relaxed);
        let bytes_before = scraped_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let (mut measure, next) = measured_sweep(&prober, &loaded, &current, max_in_flight).await;
        scraping.store(false, std::sync::atomic::Ordering::Relaxed);
        current = Arc::new(next);
        snapshots_tx.send_replace(current.clone());
        if with {
            measure.scrapes = Some(scrapes.load(std::sync::atomic::Ordering::Relaxed) - before);
            measure.scraped_bytes =
                scraped_bytes.load(std::sync::atomic::Ordering::Relaxed) - bytes_before;
            scraped.push(measure);
        } else {
            quiet.push(measure);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = scraper.await;
    let (under_scrape, beside_scrape) = (median_sweep(scraped), median_sweep(quiet));
    let peak_rss_render_bytes = peak_rss();
    reset_peak_rss();
    tokio::time::sleep(options.gap).await;
    let reload =
        measured_reload(&options.config, &prober, &loaded, &current, max_in_flight).await?;
    let peak_rss_reload_bytes = peak_rss();

    let peak_rss_bytes = peak_rss_load_bytes
        .max(peak_rss_sweeps_bytes)
        .max(peak_rss_render_bytes);
    let cpu = cpu_seconds();
    let t = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle_seconds = t.elapsed().as_secs_f64();
    let idle_cpu_seconds = cpu_seconds() - cpu;
    let report = SizeReport {
        services,
        max_in_flight,
        config_load_seconds,
        rss_after_load_bytes,
        peak_rss_load_bytes,
        peak_rss_sweeps_bytes,
        peak_rss_render_bytes,
        sweeps,
        sweep_under_scrape: under_scrape,
        sweep_beside_scrape: beside_scrape,
        reload: Some(reload),
        peak_rss_reload_bytes,
        wake_lateness_ms,
        metrics_render_seconds,
        metrics_gzip_seconds,
        metrics_gzip_bytes,
        metrics_bytes,
        status_render_seconds,
        status_bytes,
        peak_rss_bytes,
        idle_seconds,
        idle_cpu_seconds,
        idle_rss_bytes: current_rss(),
        threads: proc_status("Threads:").unwrap_or(0),
        connections_kept: prober.idle_connections(),
        check_future_bytes,
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

/// A sweep with a reload in it: 100 ms in, the config file with one service changed is loaded
/// on a blocking thread and taken on, as the daemon's reloader and sweeper do, while the sweep
/// runs. The sweep must still end by its deadline with every check done.
async fn measured_reload(
    path: &Path,
    prober: &Arc<Prober>,
    loaded: &Loaded,
    snapshot: &Snapshot,
    max_in_flight: usize,
) -> anyhow::Result<ReloadMeasure> {
    let text = std::fs::read_to_string(path)?;
    let changed = if text.contains("/svc/0/health\"") {
        text.replacen("/svc/0/health\"", "/svc/0/health?reloaded=1\"", 1)
    } else if text.contains("grpc_service = \"svc.0\"") {
        text.replacen(
            "grpc_service = \"svc.0\"",
            "grpc_service = \"svc.0.reloaded\"",
            1,
        )
    } else {
        bail!("no service svc-000000 to change in {}", path.display());
    };
    let changed_path = path.with_extension("reloaded.toml");
    std::fs::write(&changed_path, changed)?;
    let reload = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let running = loaded.config.clone();
        let config = tokio::task::spawn_blocking(move || {
            config::load_reusing(&changed_path, config::Overrides::default(), Some(&running))
        })
        .await??;
        let load_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let next = Loaded {
            generation: loaded.generation + 1,
            config: Arc::new(config),
        };
        let carried = snapshot.reconfigured(&next, SystemTime::now());
        prober.use_config(&next.config);
        let apply_seconds = t.elapsed().as_secs_f64();
        std::hint::black_box(carried);
        anyhow::Ok((load_seconds, apply_seconds))
    };
    let ((sweep, _), times) = tokio::join!(
        measured_sweep(prober, loaded, snapshot, max_in_flight),
        reload
    );
    let (load_seconds, apply_seconds) = times?;
    Ok(ReloadMeasure {
        load_seconds,
        apply_seconds,
        sweep,
    })
}

async fn measured_sweep(
    prober: &Arc<Prober>,
    loaded: &Loaded,
    snapshot: &Snapshot,
    max_in_flight: usize,
) -> (SweepMeasure, Snapshot) {
    let cpu = cpu_seconds();
    let kernel = kernel_seconds();
    let t = Instant::now();
    let plan = Plan::new(loaded.config.clone(), max_in_flight).fair_order(snapshot);
    let report = run_sweep(prober.clone(), plan).await;
    let wall_seconds = t.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds() - cpu;
    let kernel_seconds = kernel_seconds() - kernel;
    let mut failed = BTreeMap::new();
    let mut ok = 0;
    for o in report.checked() {
        match o.reason {
            None => ok += 1,
            Some(r) => *failed.entry(r.as_str().to_string()).or_insert(0) += 1,
        }
    }
    let summary = report.summary();
    let (next, _) = snapshot.swept(report);
    (
        SweepMeasure {
            wall_seconds,
            cpu_seconds,
            kernel_seconds,
            ok,
            failed,
            reused: summary.reused_connections,
            not_started: summary.not_started,
            scrapes: None,
            scraped_bytes: 0,
        },
        next,
    )
}

/// A task on the runtime beside the sweeps that sleeps 5 ms again and again and notes how late
/// it wakes while a sweep runs: what the server's tasks wait for the lanes.
struct Lateness {
    during: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Lateness {
    const TICK: Duration = Duration::from_millis(5);

    fn start() -> Lateness {
        let during = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, s) = (during.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut late = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Lateness::TICK).await;
                if d.load(std::sync::atomic::Ordering::Relaxed) {
                    late.push(t.elapsed().saturating_sub(Lateness::TICK).as_secs_f64() * 1e3);
                }
            }
            late
        });
        Lateness { during, stop, task }
    }

    fn during(&self, sweeping: bool) {
        self.during
            .store(sweeping, std::sync::atomic::Ordering::Relaxed);
    }

    /// p50, p99 and max of the lateness seen, in milliseconds.
    async fn finish(self) -> Option<[f64; 3]> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut late = self.task.await.ok()?;
        if late.is_empty() {
            return None;
        }
        late.sort_by(f64::total_cmp);
        let at = |q: f64| late[((late.len() - 1) as f64 * q).round() as usize];
        Some([at(0.5), at(0.99), at(1.0)])
    }
}

/// The sweep of median wall time.
fn median_sweep(mut sweeps: Vec<SweepMeasure>) -> Option<SweepMeasure> {
    sweeps.sort_by(|a, b| a.wall_seconds.total_cmp(&b.wall_seconds));
    let middle = sweeps.len() / 2;
    (!sweeps.is_empty()).then(|| sweeps.swap_remove(middle))
}

/// Median CPU time of five renders (on this thread: a render runs on one), and the size of
/// the output.
fn median_render(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut times = Vec::with_capacity(5);
    let mut size = 0;
    for _ in 0..5 {
        let t = thread_cpu_seconds();
        size = std::hint::black_box(f());
        times.push(thread_cpu_seconds() - t);
    }
    (median(&mut times), size)
}

/// The bytes of a streamed body, taken piece by piece and dropped, as a client reads it.
fn streamed(pieces: crate::body::Pieces) -> usize {
    pieces.map(|p| p.len()).sum()
}

/// CPU time of the calling thread so far.
fn thread_cpu_seconds() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (user + system) of the whole process so far.
fn cpu_seconds() -> f64 {
    rusage_seconds().map_or(0.0, |(user, system)| user + system)
}

/// System CPU time of the whole process so far.
fn kernel_seconds() -> f64 {
    rusage_seconds().map_or(0.0, |(_, system)| system)
}

/// User and system CPU time of the whole process so far.
fn rusage_seconds() -> Option<(f64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    Some((t(u.user_time()), t(u.system_time())))
}

/// Peak resident set size of the process since it started or since [`reset_peak_rss`].
fn peak_rss() -> u64 {
    proc_status("VmHWM:").map_or(0, |kb| kb * 1024)
}

/// Starts a new peak: what each phase (load, sweeps, render) costs shows on its own instead of
/// hiding under an earlier phase's peak. Linux resets `VmHWM` when "5" is written to
/// `clear_refs`; on failure the peak simply carries over, which overstates a later phase.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident set size now.
fn current_rss() -> u64 {
    proc_status("VmRSS:").map_or(0, |kb| kb * 1024)
}

/// A number from /proc/self/status (`VmRSS:` is in KiB).
fn proc_status(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
}

fn header(options: &BenchOptions, fleet: &MockFleet) -> String {
    format!(
        "healthsweep bench: mock services answer in {} ms ({} mock processes, {} endpoints on 127.0.0.1); \
         {} sweeps per size, {} ms apart; {} cores{}",
        options.latency.as_millis(),
        options.mock_processes,
        fleet.endpoints.len(),
        options.sweeps,
        options.gap.as_millis(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if options.extra_config.is_empty() {
            String::new()
        } else {
            format!("; config: {}", options.extra_config.join(", "))
        }
    )
}

/// One size's results as a small table.
pub fn table(r: &SizeReport, latency: Duration) -> String {
    let first = r.sweeps.first();
    let mut later: Vec<f64> = r.sweeps.iter().skip(1).map(|s| s.wall_seconds).collect();
    let later_max = later.iter().copied().fold(0.0, f64::max);
    let later_p50 = median(&mut later);
    let mut all: Vec<f64> = r.sweeps.iter().map(|s| s.wall_seconds).collect();
    let all_p50 = median(&mut all);
    let mut all_cpu: Vec<f64> = r.sweeps.iter().map(|s| s.cpu_seconds).collect();
    let all_cpu_p50 = median(&mut all_cpu);
    let checks: usize = r
        .sweeps
        .iter()
        .map(|s| s.ok + s.failed.values().sum::<usize>())
        .sum();
    let ok: usize = r.sweeps.iter().map(|s| s.ok).sum();
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &r.sweeps {
        for (k, v) in &s.failed {
            *failed.entry(k).or_insert(0) += v;
        }
    }
    let failed = if failed.is_empty() {
        "none".to_string()
    } else {
        failed
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cpu: Vec<f64> = r.sweeps.iter().skip(1).map(|s| s.cpu_seconds).collect();
    let cpu_p50 = median(&mut cpu);
    let mut kernel: Vec<f64> = r.sweeps.iter().skip(1).map(|s| s.kernel_seconds).collect();
    let kernel_p50 = median(&mut kernel);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} services ({} ms each; floor {:.3} s), max_in_flight {}",
        r.services,
        latency.as_millis(),
        latency.as_secs_f64(),
        r.max_in_flight
    );
    if let Some(f) = first {
        let _ = writeln!(
            s,
            "  first sweep        {:.3} s wall, {:.3} s CPU ({:.1} µs/check)",
            f.wall_seconds,
            f.cpu_seconds,
            f.cpu_seconds * 1e6 / r.services.max(1) as f64
        );
    }
    if !later.is_empty() {
        let _ = writeln!(
            s,
            "  later sweeps       p50 {later_p50:.3} s, max {later_max:.3} s wall; p50 {cpu_p50:.3} s CPU ({:.1} µs/check, {:.1} of them in the kernel)",
            cpu_p50 * 1e6 / r.services.max(1) as f64,
            kernel_p50 * 1e6 / r.services.max(1) as f64
        );
    }
    if r.sweeps.len() > 1 {
        let _ = writeln!(
            s,
            "  all sweeps         p50 {all_p50:.3} s wall (first included); p50 {:.1} µs CPU/check",
            all_cpu_p50 * 1e6 / r.services.max(1) as f64
        );
    }
    if let (Some(u), Some(q)) = (&r.sweep_under_scrape, &r.sweep_beside_scrape) {
        let _ = writeln!(
            s,
            "  sweep + scraping   p50 {:.3} s wall while /metrics is scraped back to back, gzipped ({} scrapes, {:.2} MiB, in that sweep), against p50 {:.3} s in the sweeps between ({:+.0} %)",
            u.wall_seconds,
            u.scrapes.unwrap_or(0),
            u.scraped_bytes as f64 / (1024.0 * 1024.0),
            q.wall_seconds,
            (u.wall_seconds / q.wall_seconds.max(f64::MIN_POSITIVE) - 1.0) * 100.0,
        );
    }
    if let Some([p50, p99, max]) = r.wake_lateness_ms {
        let _ = writeln!(
            s,
            "  beside the sweeps  a 5 ms timer task wakes late by p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
    }
    if let Some(reload) = &r.reload {
        let _ = writeln!(
            s,
            "  reload             one service changed, in a sweep: load {:.3} s (blocking thread), apply {:.3} s; that sweep {:.3} s wall, {} ok, {} failed, {} never started",
            reload.load_seconds,
            reload.apply_seconds,
            reload.sweep.wall_seconds,
            reload.sweep.ok,
            reload.sweep.failed.values().sum::<usize>(),
            reload.sweep.not_started
        );
    }
    let reused: usize = r.sweeps.iter().map(|s| s.reused).sum();
    let not_started: usize = r.sweeps.iter().map(|s| s.not_started).sum();
    let _ = writeln!(
        s,
        "  checks             {ok} ok of {checks}; failed: {failed}; on reused connections: {reused}; never started: {not_started}"
    );
    let _ = writeln!(
        s,
        "  peak RSS           {:.1} MiB; by phase: config load {:.1} MiB (then {:.1} MiB), sweeps {:.1} MiB, rendering {:.1} MiB; during the reload {:.1} MiB",
        mib(r.peak_rss_bytes),
        mib(r.peak_rss_load_bytes),
        mib(r.rss_after_load_bytes),
        mib(r.peak_rss_sweeps_bytes),
        mib(r.peak_rss_render_bytes),
        mib(r.peak_rss_reload_bytes)
    );
    let _ = writeln!(
        s,
        "  /metrics           {:.1} ms CPU render, {:.2} MiB; gzipped {:.1} ms CPU, {:.2} MiB",
        r.metrics_render_seconds * 1e3,
        mib(r.metrics_bytes as u64),
        r.metrics_gzip_seconds * 1e3,
        mib(r.metrics_gzip_bytes as u64)
    );
    let _ = writeln!(
        s,
        "  /status            {:.1} ms CPU render, {:.2} MiB",
        r.status_render_seconds * 1e3,
        mib(r.status_bytes as u64)
    );
    let _ = writeln!(
        s,
        "  config load        {:.1} ms (read, parse, validate)",
        r.config_load_seconds * 1e3
    );
    let in_flight = r.max_in_flight.min(r.services);
    let _ = writeln!(
        s,
        "  check future       {} bytes each; {in_flight} in flight at most: {:.1} MiB",
        r.check_future_bytes,
        mib((r.check_future_bytes * in_flight) as u64)
    );
    let _ = write!(
        s,
        "  idle {:.1} s         {:.3} s CPU, RSS {:.1} MiB, {} threads, {} connections kept",
        r.idle_seconds,
        r.idle_cpu_seconds,
        mib(r.idle_rss_bytes),
        r.threads,
        r.connections_kept
    );
    s
}

/// `snapshot` after a sweep at `at` in which the services at `down` failed and all others
/// passed.
pub(super) fn swept(snapshot: &Snapshot, at: SystemTime, down: &[usize]) -> Snapshot {
    let mut outcomes: Vec<crate::probe::Outcome> = snapshot
        .services
        .iter()
        .map(|_| crate::probe::Outcome::passed(at, Duration::from_millis(200)))
        .collect();
    for &i in down {
        if let Some(o) = outcomes.get_mut(i) {
            *o = crate::probe::Outcome::failed(
                crate::probe::Reason::ALL[1],
                at,
                Duration::from_millis(1),
                "connect: Connection refused (os error 111)",
            );
        }
    }
    let report = crate::snapshot::SweepReport {
        config: snapshot.config.clone(),
        slot: snapshot.sweeps_total,
        started_at: at,
        duration: Duration::from_millis(210),
        outcomes: outcomes.into_iter().map(Some).collect(),
        max_in_flight: 1,
        not_started: 0,
        cut_short: 0,
        judged: Vec::new(),
        idle_connections: 0,
    };
    snapshot.swept(report).0
}
