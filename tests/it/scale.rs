//! End to end: connection reuse, servers that drop idle connections, and fleets larger than the
//! open-file limit allows at once, against the real binary on loopback.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";

async fn mock(latency: Duration, stop: &CancellationToken) -> MockServer {
    MockServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), latency, stop.clone())
        .await
        .expect("mock server starts")
}

/// Reads one request head; `false` if the peer closed first.
async fn read_request(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_is_reused_on_the_next_sweep_and_status_says_so() {
    let stop = CancellationToken::new();
    let m = mock(Duration::from_millis(10), &stop).await;
    let config = format!(
        "{}{}[[service]]\nname = \"fresh\"\nurl = \"{}\"\nconnection = \"fresh\"\n",
        daemon_section("1s", "1s", ""),
        service("reused", &m.url("/health")),
        m.url("/health")
    );
    let d = Daemon::start(&config);
    let first = d.status_after_sweeps(1).await;
    assert_eq!(
        service_status(&first, "reused")["last"]["reused_connection"],
        false
    );
    let later = d.status_after_sweeps(3).await;
    let reused = service_status(&later, "reused");
    assert_eq!(reused["state"], "up");
    assert_eq!(reused["last"]["reused_connection"], true, "{reused}");
    let fresh = service_status(&later, "fresh");
    assert_eq!(fresh["state"], "up");
    assert_eq!(fresh["last"]["reused_connection"], false, "{fresh}");
    assert_eq!(later["sweep"]["connections_reused"], 1);
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains("healthsweep_last_sweep_connections_reused 1"),
        "{metrics}"
    );
    stop.cancel();
}

/// Like many web servers with a short keep-alive timeout: one response, then it closes the idle
/// connection. The next check notices before sending and opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_idle_connections_only_costs_a_new_connection() {
    let stop = CancellationToken::new();
    let addr = serve_each(
        any_loopback_port(),
        |mut s| async move {
            if read_request(&mut s).await {
                let _ = s.write_all(OK_RESPONSE).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
        &stop,
    )
    .await;
    let config = format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("closes-idle", &format!("http://{addr}/health"))
    );
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(3).await;
    let s = service_status(&status, "closes-idle");
    assert_eq!(s["state"], "up", "{s}");
    assert_eq!(s["consecutive_successes"], 3, "{s}");
    assert_eq!(s["last"]["reused_connection"], false);
    stop.cancel();
}

/// The race a keep-alive client must handle: the server closes the connection just as the next
/// request arrives on it. The check retries once on a new connection instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_under_the_next_request_is_retried_on_a_new_one() {
    let stop = CancellationToken::new();
    let addr = serve_each(
        any_loopback_port(),
        |mut s| async move {
            if read_request(&mut s).await {
                let _ = s.write_all(OK_RESPONSE).await;
                // Stay open while idle (so the pool keeps it), but drop the next request.
                let _ = read_request(&mut s).await;
            }
        },
        &stop,
    )
    .await;
    let config = format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("drops-second-request", &format!("http://{addr}/health"))
    );
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(3).await;
    let s = service_status(&status, "drops-second-request");
    assert_eq!(s["state"], "up", "{s}");
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    assert_eq!(s["consecutive_successes"], 3, "{s}");
    assert_eq!(
        s["last"]["reused_connection"], false,
        "the retry used a new connection"
    );
    stop.cancel();
}

/// `n` services spread over `servers`.
fn fleet(n: usize, servers: &[MockServer]) -> String {
    let mut s = String::new();
    for i in 0..n {
        let m = &servers[i % servers.len()];
        let _ = write!(
            s,
            "{}",
            service(&format!("svc-{i}"), &m.url(&format!("/svc/{i}/health")))
        );
    }
    s
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_larger_than_the_open_file_limit_is_checked_within_the_deadline() {
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(mock(Duration::from_millis(20), &stop).await);
    }
    let config = format!(
        "{}[defaults]\nexpect_json = {{ \"/status\" = \"ok\" }}\n\n{}",
        daemon_section("10s", "3s", ""),
        fleet(2000, &servers)
    );
    let d = Daemon::with_config(&config).nofile(256).start();
    let status = d.status_after_sweeps(1).await;
    assert_eq!(status["summary"]["up"], 2000, "{}", status["summary"]);
    let sweep = &status["sweep"];
    // A quarter of a small limit is kept back, and a fifth of the rest is slack for reuse.
    assert_eq!(sweep["max_in_flight"], 153);
    assert_eq!(sweep["not_started"], 0);
    assert_eq!(sweep["deadline_exceeded"], 0);
    assert!(
        sweep["duration_seconds"].as_f64().unwrap_or(9.0) < 3.0,
        "{sweep}"
    );
    let metrics = d.get("/metrics").await.body;
    assert_eq!(metric(&metrics, "process_max_fds"), 256.0);
    assert!(metric(&metrics, "process_open_fds") <= 256.0);
    assert_eq!(metric(&metrics, "healthsweep_sweep_max_in_flight"), 153.0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_cannot_start_before_the_deadline_are_counted_and_judge_no_service() {
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(mock(Duration::from_millis(400), &stop).await);
    }
    // 153 slots x 400 ms cannot fit 2,000 checks into 1 s.
    let config = format!(
        "{}{}",
        daemon_section("10s", "1s", ""),
        fleet(2000, &servers)
    );
    let d = Daemon::with_config(&config).nofile(256).start();
    let status = d.status_after_sweeps(1).await;
    let sweep = &status["sweep"];
    assert_eq!(sweep["checks"], 2000);
    let not_started = sweep["not_started"].as_u64().unwrap_or(0);
    let cut = sweep["deadline_exceeded"].as_u64().unwrap_or(0);
    assert!(not_started >= 1000, "{sweep}");
    assert!(cut >= not_started, "{sweep}");
    assert!(
        sweep["duration_seconds"].as_f64().unwrap_or(9.0) < 1.2,
        "{sweep}"
    );
    // A check that never got a slot says nothing about its service: still unknown, its
    // missed sweep counted, no failure recorded.
    let services = status["services"].as_array().expect("services");
    let missed: Vec<&serde_json::Value> = services
        .iter()
        .filter(|s| s["missed_sweeps"] == 1)
        .collect();
    assert_eq!(
        missed.len() as u64,
        not_started + sweep["cut_short"].as_u64().unwrap_or(0),
        "{sweep}"
    );
    assert!(
        missed
            .iter()
            .all(|s| s["state"] == "unknown" && s["last"].is_null() && s["checks"]["ok"] == 0),
        "no verdict, no failure"
    );
    assert!(
        services.iter().all(|s| s["state"] != "down"),
        "no healthy service is shown down for the daemon's lack of slots"
    );
    let metrics = d.get("/metrics").await.body;
    assert_eq!(
        metric(&metrics, "healthsweep_last_sweep_checks_not_started"),
        not_started as f64
    );
    assert_eq!(
        d.logs_containing("checks did not start before the sweep deadline")
            .len(),
        1,
        "said once"
    );
    stop.cancel();
}
