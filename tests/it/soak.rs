//! Soak and load: the real daemon sweeping a fleet of 1,000 loopback services, a tenth of them
//! failing in varied ways (error statuses, wrong bodies, refused ports, and the hostile
//! behaviours), for many sweeps, optionally while `/metrics` and `/status` are under load.
//!
//! Short versions run in `cargo test` (seconds). The long runs are one command:
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `SOAK_SWEEPS` (2000), `SOAK_SERVICES` (1000), `SOAK_INTERVAL_MS` (500), `LOAD_SECONDS` (30)
//! and `LOAD_CONNECTIONS` (16) tune them. They print the figures the README quotes: the
//! daemon's RSS, open descriptors and tokio tasks at the start and end of the soak, and the
//! load's requests/s and latency percentiles.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use healthsweep::hostile::{Behaviour, HostileServer};
use healthsweep::mock::MockServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Hostile behaviours in the soak fleet: all of them but the trickle, whose 1-byte-a-second
/// server tasks would outlive many sweeps and only measure the test's own server.
fn soak_hostile() -> impl Iterator<Item = Behaviour> {
    Behaviour::ALL
        .into_iter()
        .filter(|b| *b != Behaviour::Trickle)
}

/// Healthy services are spread over this many mock servers (ports), which spreads the
/// connections' ephemeral ports over as many destinations.
const MOCKS: usize = 8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fleet: mock and hostile servers, and the config that sweeps them.
struct Fleet {
    config: String,
    failing: usize,
    _stop: StopOnDrop,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// `services` services: 1 in 10 fails (2 in 100 a 500, 1 a wrong body, 1 a refused port, 6 a
/// hostile behaviour with a 300 ms timeout); the rest are healthy and read their body.
async fn fleet(services: usize, interval: Duration) -> Fleet {
    let stop = CancellationToken::new();
    let mut mocks = Vec::new();
    for _ in 0..MOCKS {
        mocks.push(
            MockServer::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                Duration::from_millis(5),
                stop.clone(),
            )
            .await
            .expect("mock starts"),
        );
    }
    let mut hostile = Vec::new();
    for b in soak_hostile() {
        hostile.push(
            HostileServer::start(b, stop.clone())
                .await
                .expect("hostile starts"),
        );
    }
    let refused = closed_port();
    let deadline = interval.mul_f64(0.8);
    let mut config = format!(
        "[daemon]\ninterval = \"{}ms\"\ndeadline = \"{}ms\"\n\n[defaults]\ntimeout = \"300ms\"\nexpect_body_contains = \"ok\"\n\n",
        interval.as_millis(),
        deadline.as_millis()
    );
    let mut failing = 0;
    for i in 0..services {
        let mock = &mocks[i % MOCKS];
        let url = match i % 100 {
            10 | 60 => mock.url(&format!("/fail/500?svc={i}")),
            20 => mock.url(&format!("/fail/body?svc={i}")),
            30 => format!("http://127.0.0.1:{refused}/health"),
            40..=45 => hostile[(i / 100 + i) % hostile.len()].url(),
            _ => mock.url(&format!("/svc-{i}/health")),
        };
        if matches!(i % 100, 10 | 20 | 30 | 40..=45 | 60) {
            failing += 1;
        }
        config += &service(&format!("svc-{i:04}"), &url);
    }
    Fleet {
        config,
        failing,
        _stop: StopOnDrop(stop),
    }
}

/// What the soak watches, at one point in time.
#[derive(Debug, Clone, Copy)]
struct Figures {
    sweep: u64,
    rss_mib: f64,
    /// Open descriptors besides the connections the daemon keeps for reuse
    /// (`healthsweep_idle_connections`), which are held by design and bounded by the fleet.
    own_fds: usize,
    idle_connections: usize,
    tasks: u64,
}

/// The daemon's figures between sweeps: the minimum over one interval (checks, and their
/// sockets and tasks, come and go within a sweep; a leak raises the floor). Descriptors and kept
/// connections are read together, since how many connections stay kept varies from sweep to
/// sweep with which servers closed theirs.
async fn figures(d: &Daemon, interval: Duration) -> Figures {
    let pid = d.child.id();
    let stats = min_proc_stats(pid, interval + Duration::from_millis(100)).await;
    let end = Instant::now() + interval + Duration::from_millis(100);
    let mut tasks = u64::MAX;
    let mut own_fds = usize::MAX;
    let mut idle_connections = 0;
    while Instant::now() < end {
        let metrics = d.get("/metrics").await.body;
        let fds = proc_stats(pid).open_fds;
        if let Some(t) = metric(&metrics, "healthsweep_tokio_tasks") {
            tasks = tasks.min(t as u64);
        }
        if let Some(i) = metric(&metrics, "healthsweep_idle_connections") {
            let own = fds.saturating_sub(i as usize);
            if own < own_fds {
                own_fds = own;
                idle_connections = i as usize;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sweep = d.json("/status").await["sweep"]["number"]
        .as_u64()
        .unwrap_or(0);
    Figures {
        sweep,
        rss_mib: stats.rss_bytes as f64 / (1024.0 * 1024.0),
        own_fds,
        idle_connections,
        tasks,
    }
}

/// The value of an unlabelled metric in a text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the soak and asserts that nothing grows; returns the start and end figures.
async fn soak(services: usize, sweeps: u64, interval: Duration) -> (Figures, Figures) {
    let fleet = fleet(services, interval).await;
    let d = Daemon::start(&fleet.config);
    let warm_up = 3;
    let first = d.status_after_sweeps(warm_up).await;
    let start = figures(&d, interval).await;
    eprintln!("soak start: {start:?}");
    let started_at = Instant::now();
    let start_sweep = start.sweep;
    let mut last = start_sweep;
    let mut worst_sweep_s: f64 = 0.0;
    let mut most_cut = 0u64;
    // Sample twice per interval so every sweep's summary is seen; a filter that matches no
    // service keeps the document small (the summary and the sweep are always there).
    while last < sweeps {
        tokio::time::sleep(interval / 2).await;
        let doc = d.json("/status?group=-").await;
        let number = doc["sweep"]["number"].as_u64().unwrap_or(0);
        worst_sweep_s = worst_sweep_s.max(doc["sweep"]["duration_seconds"].as_f64().unwrap_or(0.0));
        most_cut = most_cut.max(doc["sweep"]["deadline_exceeded"].as_u64().unwrap_or(0));
        if sweeps >= 100 && number / (sweeps / 10) != last / (sweeps / 10) {
            let now = proc_stats(d.child.id());
            eprintln!(
                "soak progress: sweep {number}/{sweeps}, RSS {:.1} MiB, {} fds, worst sweep so far {worst_sweep_s:.3} s",
                now.rss_bytes as f64 / (1024.0 * 1024.0),
                now.open_fds
            );
        }
        assert!(
            started_at.elapsed() < interval * (sweeps as u32 + 10) * 2,
            "the soak is far behind schedule at sweep {number}"
        );
        last = number;
    }
    let end = figures(&d, interval).await;
    let elapsed = started_at.elapsed();
    eprintln!("soak end: {end:?}");
    eprintln!(
        "soak: {} services ({} failing), sweeps {}..{} in {:.1} s, worst sweep {worst_sweep_s:.3} s (deadline {:.3} s), most checks cut in one sweep {most_cut}",
        services,
        fleet.failing,
        start_sweep,
        end.sweep,
        elapsed.as_secs_f64(),
        interval.mul_f64(0.8).as_secs_f64(),
    );

    // The schedule held: one sweep per interval, none skipped.
    let expected = elapsed.as_secs_f64() / interval.as_secs_f64();
    let done = (end.sweep - start_sweep) as f64;
    assert!(
        done >= expected - 2.0,
        "{done} sweeps in {:.1} s at one per {interval:?}",
        elapsed.as_secs_f64()
    );
    // Every sweep ends by its deadline (with scheduling slack on a shared machine).
    assert!(
        worst_sweep_s <= interval.mul_f64(0.8).as_secs_f64() + 0.3,
        "a sweep took {worst_sweep_s} s"
    );
    let summary = &first["summary"];
    assert_eq!(summary["total"], services);
    // Nothing grows: descriptors other than kept connections stay flat, and kept connections
    // never outnumber the services (how many stay open between sweeps varies with which
    // servers closed theirs).
    assert!(
        end.own_fds <= start.own_fds + 4,
        "descriptors besides kept connections {} -> {} ({start:?} -> {end:?})",
        start.own_fds,
        end.own_fds
    );
    assert!(
        end.idle_connections <= services,
        "{} kept connections for {services} services",
        end.idle_connections
    );
    assert!(
        end.tasks <= start.tasks + 4,
        "tasks {} -> {}",
        start.tasks,
        end.tasks
    );
    assert!(
        end.rss_mib <= start.rss_mib + 16.0,
        "RSS {:.1} MiB -> {:.1} MiB",
        start.rss_mib,
        end.rss_mib
    );
    (start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_of_1000_services_keeps_descriptors_memory_and_tasks_flat() {
    soak(1000, 15, Duration::from_millis(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with --ignored (see the module docs)"]
async fn soak_long() {
    let services = env_or("SOAK_SERVICES", 1000);
    let sweeps = env_or("SOAK_SWEEPS", 2000);
    let interval = Duration::from_millis(env_or("SOAK_INTERVAL_MS", 500));
    soak(services, sweeps, interval).await;
}

/// Latencies of one load run, per endpoint.
#[derive(Default)]
struct Latencies {
    metrics: Vec<Duration>,
    status: Vec<Duration>,
    errors: usize,
}

/// `connections` keep-alive clients, each alternating `/metrics` and `/status` for `length`.
async fn load(addr: SocketAddr, connections: usize, length: Duration) -> Latencies {
    let end = Instant::now() + length;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..connections {
        clients.spawn(async move {
            let mut lat = Latencies::default();
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                lat.errors += 1;
                return lat;
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                lat.errors += 1;
                return lat;
            };
            let conn = tokio::spawn(conn);
            let mut n = c;
            while Instant::now() < end {
                n += 1;
                let path = if n % 2 == 0 { "/metrics" } else { "/status" };
                let req = http::Request::get(path)
                    .header("host", "load")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let asked = Instant::now();
                let ok = match sender.send_request(req).await {
                    Ok(r) if r.status() == 200 => r.into_body().collect().await.is_ok(),
                    _ => false,
                };
                if !ok {
                    lat.errors += 1;
                    break;
                }
                let took = asked.elapsed();
                if path == "/metrics" {
                    lat.metrics.push(took);
                } else {
                    lat.status.push(took);
                }
            }
            conn.abort();
            lat
        });
    }
    let mut all = Latencies::default();
    while let Some(Ok(l)) = clients.join_next().await {
        all.metrics.extend(l.metrics);
        all.status.extend(l.status);
        all.errors += l.errors;
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, lat: &mut [Duration], secs: f64) {
    lat.sort_unstable();
    eprintln!(
        "load {name}: {} requests, {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        lat.len() as f64 / secs,
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// Loads `/metrics` and `/status` of a daemon sweeping 1,000 services and checks the sweeps
/// keep their deadline and schedule meanwhile; prints requests/s and percentiles.
async fn load_run(connections: usize, length: Duration) {
    let interval = Duration::from_millis(1000);
    let fleet = fleet(1000, interval).await;
    let d = Daemon::start(&fleet.config);
    let before = d.status_after_sweeps(2).await;
    let n0 = before["sweep"]["number"].as_u64().unwrap_or(0);
    let began = Instant::now();
    let mut lat = load(d.addr, connections, length).await;
    let secs = began.elapsed().as_secs_f64();
    let after = d.json("/status").await;
    let n1 = after["sweep"]["number"].as_u64().unwrap_or(0);
    report("/metrics", &mut lat.metrics, secs);
    report("/status", &mut lat.status, secs);
    let mut all: Vec<Duration> = lat.metrics.iter().chain(&lat.status).copied().collect();
    report("both", &mut all, secs);
    eprintln!(
        "load: {connections} connections for {secs:.1} s, {} errors; sweeps {n0}..{n1}; last sweep {} s, {} checks cut",
        lat.errors, after["sweep"]["duration_seconds"], after["sweep"]["deadline_exceeded"]
    );
    assert_eq!(lat.errors, 0, "failed requests under load");
    assert!(!all.is_empty(), "no request completed");
    // Sweeps kept their schedule (one per interval) and their deadline under the load.
    let expected = secs / interval.as_secs_f64();
    assert!(
        (n1 - n0) as f64 >= expected - 2.0,
        "{} sweeps in {secs:.1} s under load",
        n1 - n0
    );
    let took = after["sweep"]["duration_seconds"].as_f64().unwrap_or(99.0);
    assert!(took <= 0.8 + 0.3, "a sweep took {took} s under load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_keep_their_deadline_and_schedule_while_metrics_and_status_are_loaded() {
    load_run(4, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with --ignored (see the module docs)"]
async fn load_long() {
    load_run(
        env_or("LOAD_CONNECTIONS", 16),
        Duration::from_secs(env_or("LOAD_SECONDS", 30)),
    )
    .await;
}
