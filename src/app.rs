//! The daemon assembled: the reloader, the sweeper and the HTTP server as tasks, joined by
//! channels and stopped by one shutdown token.
//!
//! ```text
//! SIGHUP / POST /-/reload ─▶ Reloader ─watch<Loaded>─▶ Fleet ─watch<Loaded>─▶ Sweeper ─watch<Arc<Snapshot>>─▶ /metrics, /status
//!                             discovery sources ─Update─┘
//! ```
//! Each channel has one writer. The outside world (listener, shutdown, reload trigger) comes in
//! as parameters, so the same wiring serves `run`, `demo` and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use crate::api::Api;
use crate::config::{Config, Overrides};
use crate::discovery::Fleet;
use crate::maintenance::Windows;
use crate::metrics::Metrics;
use crate::notify::{Notifier, Watchdog};
use crate::probe::Prober;
use crate::reload::{self, ReloadRequest, Reloader};
use crate::server;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::sweep::Sweeper;
use crate::{history, recorder};

/// Longest a clean shutdown waits for the tasks, after which the process exits anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(1500);

/// What the daemon needs from the outside.
pub struct Settings {
    /// The file reloads read.
    pub config_path: PathBuf,
    /// The config already loaded from it, with `overrides` applied.
    pub config: Config,
    /// What the command line overrides in the file, applied again at every reload.
    pub overrides: Overrides,
    /// Where the HTTP server accepts connections.
    pub listener: TcpListener,
    /// Connections checks may hold at once; also `max_in_flight` when the config does not say
    /// (see [`crate::limits`]).
    pub connection_budget: usize,
    /// Where the state store keeps its database (`None`: history in memory only).
    pub state_dir: Option<PathBuf>,
}

/// A started daemon.
pub struct Running {
    /// The latest snapshot, for anything else that wants to watch (the demo's progress line).
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Send a [`ReloadRequest`] here to reload (signals do).
    pub reload_requests: mpsc::Sender<ReloadRequest>,
    /// The address the server is bound to.
    pub local_addr: SocketAddr,
    tasks: JoinSet<&'static str>,
    shutdown: CancellationToken,
    notifier: Notifier,
}

/// Starts the reloader, the sweeper (first sweep at once), the server, and the systemd
/// notifier (a no-op unless systemd started the daemon).
pub fn start(settings: Settings, shutdown: CancellationToken) -> std::io::Result<Running> {
    let local_addr = settings.listener.local_addr()?;
    let notifier = Notifier::from_env();
    let reloader = Reloader::new(settings.config_path, settings.config, settings.overrides)
        .with_notifier(notifier.clone());
    let reload_status = reloader.status();
    let prober = Arc::new(Prober::new(settings.connection_budget));
    // The fleet composes the config file's services with every discovery source's: the
    // sweeper sees its config, not the reloader's.
    let fleet = Fleet::new(prober.clone(), reloader.configs());
    let configs = fleet.configs();
    let discovery = fleet.status();
    let first = configs.borrow().clone();
    // What the last run left, before the first sweep: states, thresholds and counters
    // continue, the history shows again.
    let store_errors = Arc::new(AtomicU64::new(0));
    let mut store = settings
        .state_dir
        .as_deref()
        .map(|dir| open_store(dir, store_errors.clone()));
    let restored = store.as_mut().map(Store::load).unwrap_or_default();
    let history: history::Shared = Arc::new(RwLock::new(restored.history));
    let windows = Arc::new(Windows::new(restored.ad_hoc));
    // What the config's services do not take may be a discovery source's, found in a moment.
    let mut restore = restored.services;
    let (snapshot_tx, snapshots) = watch::channel(Arc::new(
        Snapshot::new(&first, SystemTime::now()).restored(&mut restore),
    ));
    let (reload_requests, reload_rx) = mpsc::channel(reload::QUEUE);

    let metrics = Metrics::new(snapshots.clone(), reload_status.clone())
        .with_idle_connections(prober.idle_gauge())
        .with_discovery(discovery.clone())
        .with_store_errors(store_errors)
        .with_maintenance(windows.clone());
    let api = Arc::new(Api {
        snapshots: snapshots.clone(),
        reload_status,
        reload_requests: reload_requests.clone(),
        metrics: Arc::new(metrics),
        discovery,
        history: history.clone(),
        windows: windows.clone(),
    });
    let sweeper = Sweeper::new(prober, configs, snapshot_tx, settings.connection_budget)
        .with_watchdog(Watchdog::from_env())
        .with_restore(restore);

    // Each task runs in a span named for it, so anything it logs (a panic included) says which.
    let mut tasks = JoinSet::new();
    let s = shutdown.clone();
    tasks.spawn(
        async move {
            reloader.run(reload_rx, s).await;
            "reloader"
        }
        .instrument(info_span!("task", name = "reloader")),
    );
    let s = shutdown.clone();
    tasks.spawn(
        async move {
            fleet.run(s).await;
            "fleet"
        }
        .instrument(info_span!("task", name = "fleet")),
    );
    let s = shutdown.clone();
    tasks.spawn(
        async move {
            sweeper.run(s).await;
            "sweeper"
        }
        .instrument(info_span!("task", name = "sweeper")),
    );
    let s = shutdown.clone();
    tasks.spawn(
        async move {
            server::serve(settings.listener, api, s).await;
            "server"
        }
        .instrument(info_span!("task", name = "server")),
    );
    let (s, watched) = (shutdown.clone(), snapshots.clone());
    tasks.spawn(
        async move {
            recorder::run(watched, history, windows, store, s).await;
            "recorder"
        }
        .instrument(info_span!("task", name = "recorder")),
    );
    let (n, s, watched) = (notifier.clone(), shutdown.clone(), snapshots.clone());
    tasks.spawn(
        async move {
            n.run(watched, s).await;
            "notifier"
        }
        .instrument(info_span!("task", name = "notifier")),
    );
    Ok(Running {
        snapshots,
        reload_requests,
        local_addr,
        tasks,
        shutdown,
        notifier,
    })
}

/// The store in `dir`, created if missing. A directory that cannot be made is the store's
/// error like any other: logged, counted, memory only.
fn open_store(dir: &std::path::Path, errors: Arc<AtomicU64>) -> Store {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        warn!(path = %dir.display(), error = %e, "cannot create state_dir");
    }
    Store::open(dir, errors)
}

impl Running {
    /// Runs until shutdown is requested (or a task ends on its own, which is a bug and stops
    /// the daemon rather than leave it half-working), then waits for the tasks to finish.
    pub async fn wait(mut self) {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {}
            ended = self.tasks.join_next() => {
                match ended {
                    Some(Ok(name)) => error!(task = name, "task ended unexpectedly; shutting down"),
                    Some(Err(e)) => error!(error = %e, "task failed; shutting down"),
                    None => {}
                }
                self.shutdown.cancel();
            }
        }
        self.notifier.stopping();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_WAIT, drain).await.is_err() {
            warn!("tasks still running after the shutdown wait; exiting anyway");
        }
    }
}
