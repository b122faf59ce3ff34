//! The `healthsweep` command: arguments, logging, exit codes. Only wiring; the work is in the
//! library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;

use healthsweep::app::{self, Settings};
use healthsweep::config::{self, Config, Overrides};
use healthsweep::shard::Shard;
use healthsweep::{bench, check, demo, limits, mock, signals};

/// Exit statuses, documented in docs/operating.md.
mod exit {
    /// `check`: at least one service is down.
    pub const SERVICES_DOWN: u8 = 1;
    /// The config is invalid or unreadable (also clap's status for bad arguments).
    pub const BAD_CONFIG: u8 = 2;
    /// The daemon could not start (e.g. the listen address is taken).
    pub const CANNOT_START: u8 = 3;
    /// A task panicked: a bug. Non-zero so that `Restart=on-failure` restarts the daemon.
    pub const PANIC: i32 = 101;
}

/// How long the runtime waits for blocking work (a name lookup) at exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(300);

#[derive(Parser)]
#[command(
    name = "healthsweep",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HEALTHSWEEP_REVISION"), ")"),
    about = "Sweeps every downstream /health endpoint concurrently under a hard deadline, \
             and serves the results as Prometheus metrics and JSON."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, global = true, env = "HEALTHSWEEP_LOG", default_value = "info")]
    log_level: String,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: sweep on a schedule, serve /metrics and /status, reload on SIGHUP.
    Run {
        #[arg(
            long,
            short,
            env = "HEALTHSWEEP_CONFIG",
            default_value = "/etc/healthsweep/healthsweep.toml"
        )]
        config: PathBuf,
        /// Listen here instead of the config's [daemon] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Check only shard INDEX of COUNT (e.g. 0/3) instead of the config's [daemon] shard.
        #[arg(long, env = "HEALTHSWEEP_SHARD", value_name = "INDEX/COUNT")]
        shard: Option<Shard>,
    },
    /// Check a config file; exit 0 if valid, 2 with every problem listed if not.
    Validate {
        #[arg(
            long,
            short,
            env = "HEALTHSWEEP_CONFIG",
            default_value = "/etc/healthsweep/healthsweep.toml"
        )]
        config: PathBuf,
        /// Also ask every [[discover]] source once and list the services it would add (exit 1
        /// if a source fails).
        #[arg(long)]
        discover: bool,
    },
    /// Sweep once and print a table; exit 1 if any service is down.
    Check {
        #[arg(
            long,
            short,
            env = "HEALTHSWEEP_CONFIG",
            default_value = "/etc/healthsweep/healthsweep.toml"
        )]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Start 100 mock services on loopback and the daemon sweeping them.
    Demo {
        /// Where the daemon listens (default 127.0.0.1:9915, or any free port if taken).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Stop after this long, e.g. "30s" (default: run until Ctrl-C).
        #[arg(long, value_parser = humantime::parse_duration)]
        exit_after: Option<Duration>,
    },
    /// Measure sweeps of 100 to 100,000 mock services (see docs/performance.md).
    Bench {
        /// Fleet sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
        services: Vec<usize>,
        /// Sweeps per size; the first opens new connections.
        #[arg(long, default_value_t = 5)]
        sweeps: usize,
        /// Latency of every mock service.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
        latency: Duration,
        /// Pause between sweeps.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        gap: Duration,
        /// Mock fleet processes (each stays under the open-file limit).
        #[arg(long, default_value_t = 4)]
        mock_processes: usize,
        /// Ports each mock process listens on.
        #[arg(long, default_value_t = 16)]
        ports_per_process: usize,
        /// Extra config line for every service (`[defaults]`), e.g. 'connection = "fresh"';
        /// prefix with `daemon.` for `[daemon]`, e.g. 'daemon.max_in_flight = 5000'. Repeatable.
        #[arg(long = "set")]
        extra_config: Vec<String>,
        /// Give every service its own host name, served by a mock DNS server; the measured
        /// process runs in a private mount namespace whose /etc/resolv.conf points at it
        /// (needs root and unshare(1)).
        #[arg(long)]
        hostnames: bool,
        /// With --hostnames: percent of the names the DNS server never answers.
        #[arg(long, default_value_t = 0)]
        dns_unanswered: u8,
        /// gRPC services instead (grpc://, the standard health check; the mock fleet serves
        /// h2c). With --ports-per-process 25: 100 endpoints.
        #[arg(long)]
        grpc: bool,
        /// Measure discovery instead, at these numbers of targets in one file_sd file: the
        /// first load, and refreshes that change 1 % of the targets.
        #[arg(long, value_delimiter = ',')]
        discovery: Vec<usize>,
        /// Measure the history and the state store instead, at these numbers of services:
        /// memory, writer CPU per sweep, the database after 30 days, the page's render.
        #[arg(long, value_delimiter = ',')]
        history: Vec<usize>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// (benchmark) Serve mock services until stdin closes.
    #[command(hide = true)]
    MockFleet {
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        #[arg(long, default_value_t = 16)]
        ports: usize,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
        latency: Duration,
        /// Also serve DNS here, answering every name with --ip.
        #[arg(long)]
        dns: Option<SocketAddr>,
        /// Serve the gRPC health check (h2c) instead of HTTP/1.1.
        #[arg(long)]
        grpc: bool,
    },
    /// (benchmark) The measured worker: sweep a config and report as JSON.
    #[command(hide = true)]
    BenchRun {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 5)]
        sweeps: usize,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        gap: Duration,
    },
    /// (benchmark) The measured discovery worker: load a file_sd file, refresh it, report.
    #[command(hide = true)]
    BenchDiscovery {
        #[arg(long)]
        config: PathBuf,
        /// The file_sd file the config reads, rewritten for each refresh.
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        targets: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Heap profiling for memory work: build with `--features dhat` and run with `DHAT=1`; the
/// process writes `dhat-heap.json` (allocation sites at peak) when it exits.
#[cfg(feature = "dhat")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    #[cfg(feature = "dhat")]
    let _profiler = std::env::var_os("DHAT").map(|_| dhat::Profiler::new_heap());
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    exit_on_panic();
    let code = dispatch(cli.command);
    flush_logs();
    code
}

fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { config, discover } => validate(&config, discover),
        Command::Run {
            config,
            listen,
            shard,
        } => run_daemon(&config, listen, Overrides { shard }),
        Command::Check { config, format } => check(&config, format),
        Command::Demo { listen, exit_after } => demo(listen, exit_after),
        Command::Bench {
            discovery,
            sweeps,
            json,
            ..
        } if !discovery.is_empty() => report(bench::discovery::run(&discovery, sweeps, json)),
        Command::Bench { history, json, .. } if !history.is_empty() => {
            report(bench::history::run(&history, json))
        }
        Command::Bench {
            services,
            sweeps,
            latency,
            gap,
            mock_processes,
            ports_per_process,
            extra_config,
            hostnames,
            dns_unanswered,
            grpc,
            discovery: _,
            history: _,
            json,
        } => report(bench::run(&bench::BenchOptions {
            sizes: services,
            sweeps,
            latency,
            gap,
            mock_processes,
            ports_per_process,
            extra_config,
            hostnames,
            dns_unanswered,
            grpc,
            json,
        })),
        Command::MockFleet {
            ip,
            ports,
            latency,
            dns,
            grpc,
        } => {
            limits::raise_open_file_limit();
            // One thread per mock process, so the fleet does not outnumber the measured
            // daemon's threads in the CPU scheduler; the fleet scales out by processes.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime starts");
            report(
                rt.block_on(mock::run_fleet(ip, ports, latency, dns, grpc))
                    .map_err(anyhow::Error::from),
            )
        }
        Command::BenchRun {
            config,
            sweeps,
            gap,
        } => {
            let nofile = limits::raise_open_file_limit();
            let rt = runtime();
            report(rt.block_on(bench::run_worker(bench::WorkerOptions {
                config,
                sweeps,
                gap,
                connection_budget: limits::connection_budget(nofile),
            })))
        }
        Command::BenchDiscovery {
            config,
            file,
            targets,
            rounds,
        } => {
            let nofile = limits::raise_open_file_limit();
            let rt = runtime();
            report(rt.block_on(bench::discovery::run_worker(
                bench::discovery::WorkerOptions {
                    config,
                    file,
                    targets,
                    rounds,
                    connection_budget: limits::connection_budget(nofile),
                },
            )))
        }
    }
}

/// The log writer's thread: dropped (which flushes what is queued) before the process exits.
static LOG_WRITER: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// Lines the log queue holds before new ones are dropped (and counted in the next line that
/// gets through): a burst of 100,000 state changes fits, and a stderr that does not drain (a
/// full pipe, journald under load) costs log lines, never a stalled sweep.
const LOG_QUEUE_LINES: usize = 256 * 1024;

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    *LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Writes out the log lines still queued.
fn flush_logs() {
    drop(LOG_WRITER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// Any panic, on any thread or task, is logged (with the span it happened in: the task, the
/// sweep, the request) and ends the process with [`exit::PANIC`]. Tokio would otherwise catch a
/// task's panic and carry on without that task, or the daemon would exit 0 after it, and
/// systemd's `Restart=on-failure` would never restart it.
fn exit_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            panic = %message,
            "panic: this is a bug; exiting"
        );
        flush_logs();
        print(info);
        std::process::exit(exit::PANIC);
    }));
}

fn load(path: &Path, overrides: Overrides) -> Result<Config, ExitCode> {
    config::load_with(path, overrides).map_err(|e| {
        for line in e.lines() {
            eprintln!("error: {line}");
        }
        ExitCode::from(exit::BAD_CONFIG)
    })
}

fn validate(path: &Path, discover: bool) -> ExitCode {
    match load(path, Overrides::default()) {
        Ok(c) if discover => {
            let nofile = limits::raise_open_file_limit();
            let rt = runtime();
            let prober = healthsweep::probe::Prober::new(limits::connection_budget(nofile));
            let (composed, statuses, skipped) = rt.block_on(check::discover_once(c, &prober));
            rt.shutdown_timeout(RUNTIME_SHUTDOWN);
            check::print(&check::discovered(&composed, &statuses, &skipped));
            if statuses.iter().any(|s| s.error.is_some()) {
                ExitCode::from(exit::SERVICES_DOWN)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(c) => {
            let shard = c.daemon.shard;
            let share = if shard.count() > 1 {
                format!("; shard {shard} checks {}", c.services.len())
            } else {
                String::new()
            };
            // With services_dir, say where the services came from: a file that was skipped
            // (wrong extension, hidden) shows by its absence.
            let files = &c.sources.files;
            let from = if c.sources.services_dir.is_some() {
                format!(" from {} file{}", files.len(), plural(files.len()))
            } else {
                String::new()
            };
            let sources = match c.discover.len() {
                0 => String::new(),
                n => format!(", {n} discovery source{}", plural(n)),
            };
            println!(
                "{}: valid ({} service{}{from}{share}{sources})",
                path.display(),
                c.fleet_size,
                plural(c.fleet_size)
            );
            if c.sources.services_dir.is_some() {
                for f in files {
                    println!(
                        "  {} service{} in {}",
                        f.services,
                        plural(f.services),
                        f.path.display()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// `[daemon] state_dir`, or under systemd its `StateDirectory=` (`$STATE_DIRECTORY`, the first
/// when it lists several); `None` keeps history in memory only.
fn state_dir(configured: Option<&Path>) -> Option<std::path::PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| {
        let from_systemd = std::env::var_os("STATE_DIRECTORY")?;
        let first = std::env::split_paths(&from_systemd).next()?;
        (!first.as_os_str().is_empty()).then_some(first)
    })
}

fn run_daemon(path: &Path, listen: Option<SocketAddr>, overrides: Overrides) -> ExitCode {
    let config = match load(path, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let nofile = limits::raise_open_file_limit();
    let addr = listen.unwrap_or(config.daemon.listen);
    let rt = runtime();
    let code = rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(exit::CANNOT_START);
            }
        };
        let services = config.services.len();
        let shard = config.daemon.shard;
        let shutdown = CancellationToken::new();
        let state_dir = state_dir(config.daemon.state_dir.as_deref());
        let settings = Settings {
            config_path: path.to_path_buf(),
            config,
            overrides,
            listener,
            connection_budget: limits::connection_budget(nofile),
            state_dir,
        };
        let running = match app::start(settings, shutdown.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start: {e}");
                return ExitCode::from(exit::CANNOT_START);
            }
        };
        if let Err(e) = signals::forward(running.reload_requests.clone(), shutdown.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(exit::CANNOT_START);
        }
        info!(addr = %running.local_addr, config = %path.display(), services, %shard, open_file_limit = nofile, "listening");
        running.wait().await;
        info!("stopped");
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

fn check(path: &Path, format: Format) -> ExitCode {
    let config = match load(path, Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let nofile = limits::raise_open_file_limit();
    let rt = runtime();
    let report = rt.block_on(check::sweep_once(config, limits::connection_budget(nofile)));
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    check::print(&match format {
        Format::Table => check::table(&report),
        Format::Json => check::json(&report),
    });
    if report.checked().all(|o| o.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::SERVICES_DOWN)
    }
}

fn demo(listen: Option<SocketAddr>, exit_after: Option<Duration>) -> ExitCode {
    let nofile = limits::raise_open_file_limit();
    let rt = runtime();
    let result = rt.block_on(demo::run(
        demo::DemoOptions {
            listen,
            exit_after,
            connection_budget: limits::connection_budget(nofile),
        },
        CancellationToken::new(),
    ));
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::CANNOT_START)
        }
    }
}

/// Exit status for commands whose failure is an error message.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::CANNOT_START)
        }
    }
}
