//! `healthsweep demo`: a mock fleet on loopback and the real daemon sweeping it, to show the
//! whole product in a minute with nothing installed.
//!
//! 100 services answer `{"status":"ok"}` after 200 ms, spread over four ports; four more fail,
//! each in its own way: a 500, a wrong body, one that hangs past the deadline, a refused port.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Settings};
use crate::config;
use crate::mock::MockServer;
use crate::snapshot::Snapshot;

/// Healthy services in the demo fleet.
pub const HEALTHY: usize = 100;
/// Latency of every mock service: the blog's ~200 ms `/health`.
pub const LATENCY: Duration = Duration::from_millis(200);
/// Ports the healthy services are spread over.
const PORTS: usize = 4;

/// Options of `healthsweep demo`.
pub struct DemoOptions {
    /// Where the daemon listens; `None` tries 127.0.0.1:9915, then any free port.
    pub listen: Option<SocketAddr>,
    /// Stop by itself after this long (for scripted runs).
    pub exit_after: Option<Duration>,
    pub connection_budget: usize,
}

/// Runs the demo until `shutdown` (or `exit_after`).
pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut servers = Vec::with_capacity(PORTS);
    for _ in 0..PORTS {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        servers.push(
            MockServer::start(any, LATENCY, shutdown.clone())
                .await
                .context("starting a mock service")?,
        );
    }
    let refused = closed_port().await?;
    let listener = bind(options.listen).await?;
    let listen = listener.local_addr()?;

    let text = fleet_config(listen, &servers, refused);
    let path = std::env::temp_dir().join(format!("healthsweep-demo-{}.toml", std::process::id()));
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let _cleanup = RemoveOnDrop(path.clone());
    // History survives restarts of the daemon; the demo's own lives as long as the demo.
    let state_dir =
        std::env::temp_dir().join(format!("healthsweep-demo-{}.state", std::process::id()));
    let _state_cleanup = RemoveOnDrop(state_dir.clone());
    let config = config::parse(&path, &text).context("the demo config is valid")?;

    let running = app::start(
        Settings {
            config_path: path.clone(),
            config,
            overrides: config::Overrides::default(),
            listener,
            connection_budget: options.connection_budget,
            state_dir: Some(state_dir.clone()),
        },
        shutdown.clone(),
    )?;
    print_banner(listen, &path);
    tokio::spawn(print_sweeps(running.snapshots.clone(), shutdown.clone()));
    if let Some(after) = options.exit_after {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            s.cancel();
        });
    }
    crate::signals::forward(running.reload_requests.clone(), shutdown.clone())?;
    running.wait().await;
    Ok(())
}

/// The demo's config: every key a reader would want to see in use.
fn fleet_config(listen: SocketAddr, servers: &[MockServer], refused: u16) -> String {
    let mut s = format!(
        "# healthsweep demo fleet (generated). Edit and send SIGHUP (or POST /-/reload) to reload.\n\
         [daemon]\nlisten = \"{listen}\"\ninterval = \"5s\"\ndeadline = \"3s\"\nreload_api = true\n\n\
         [defaults]\nexpect_status = [\"2xx\"]\nexpect_json = {{ \"/status\" = \"ok\" }}\n\n"
    );
    for i in 0..HEALTHY {
        let server = &servers[i % servers.len()];
        let group = ["orders", "payments", "search", "ingest"][i % 4];
        let _ = writeln!(
            s,
            "[[service]]\nname = \"svc-{i:03}\"\nurl = \"{}\"\ngroup = \"{group}\"\nlabels = {{ team = \"team-{}\" }}\n",
            server.url(&format!("/svc/{i}/health")),
            i % 7
        );
    }
    let first = &servers[0];
    let _ = write!(
        s,
        "[[service]]\nname = \"broken-500\"\nurl = \"{}\"\ngroup = \"broken\"\n\n\
         [[service]]\nname = \"wrong-body\"\nurl = \"{}\"\ngroup = \"broken\"\n\n\
         [[service]]\nname = \"hanging\"\nurl = \"{}\"\ngroup = \"broken\"\n\n\
         [[service]]\nname = \"refused\"\nurl = \"http://127.0.0.1:{refused}/health\"\ngroup = \"broken\"\n",
        first.url("/fail/500"),
        first.url("/fail/body"),
        first.url("/hang"),
    );
    s
}

/// A loopback port nothing listens on (bound, then released), for the "refused" service.
async fn closed_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    Ok(l.local_addr()?.port())
}

async fn bind(listen: Option<SocketAddr>) -> anyhow::Result<TcpListener> {
    if let Some(addr) = listen {
        return TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"));
    }
    let preferred: SocketAddr = config::DEFAULT_LISTEN.parse()?;
    match TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => Ok(TcpListener::bind(("127.0.0.1", 0)).await?),
    }
}

fn print_banner(listen: SocketAddr, path: &std::path::Path) {
    println!(
        "healthsweep demo: {HEALTHY} mock services answering in {} ms, plus 4 broken ones \
         (a 500, a wrong body, one that hangs, a refused port)\n\
         \n  page:     http://{listen}/  (in a browser)\n  metrics:  http://{listen}/metrics\n  status:   http://{listen}/status?pretty\n  \
         down:     http://{listen}/status?state=down&pretty\n  one:      http://{listen}/status/hanging\n  \
         config:   {}  (edit, then: kill -HUP {}  or  curl -X POST http://{listen}/-/reload)\n\
         \nPress Ctrl-C to stop.\n",
        LATENCY.as_millis(),
        path.display(),
        std::process::id(),
    );
}

/// Prints one line per sweep: what the demo is for is seeing how long 100 x 200 ms takes.
async fn print_sweeps(
    mut snapshots: tokio::sync::watch::Receiver<std::sync::Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let mut printed = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.sweeps_total > printed {
            printed = snapshot.sweeps_total;
            println!("{}", sweep_line(&snapshot));
        }
    }
}

/// `sweep 3: 100 up, 4 down in 3.001 s (deadline 3 s; 1 check cut off, the other 103 done in 0.204 s)`
pub fn sweep_line(snapshot: &Snapshot) -> String {
    let Some(sweep) = &snapshot.last_sweep else {
        return "no sweep yet".into();
    };
    let finished = snapshot
        .services
        .iter()
        .filter_map(|s| s.last.as_ref())
        .filter(|o| o.reason != Some(crate::probe::Reason::DeadlineExceeded))
        .filter_map(|o| (o.at + o.duration).duration_since(sweep.started_at).ok())
        .max()
        .unwrap_or_default();
    format!(
        "sweep {}: {} up, {} down in {:.3} s (deadline {} s; {} check(s) cut off, the other {} done in {:.3} s)",
        snapshot.sweeps_total,
        snapshot.count(crate::snapshot::State::Up),
        snapshot.count(crate::snapshot::State::Down),
        sweep.duration.as_secs_f64(),
        sweep.deadline.as_secs_f64(),
        sweep.deadline_exceeded,
        sweep.checks - sweep.deadline_exceeded,
        finished.as_secs_f64(),
    )
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
