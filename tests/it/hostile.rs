//! Hostile downstream services: the real daemon sweeps one service per misbehaviour
//! ([`healthsweep::hostile`]) next to healthy ones, for many sweeps. Each check must fail with
//! the right reason within its timeout, every sweep must end by its deadline, the healthy
//! services must not notice, and the daemon's descriptors and memory must stay flat.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use healthsweep::hostile::{Behaviour, HostileServer};
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

/// The hostile services' own timeout.
const TIMEOUT_S: f64 = 0.4;
/// The sweep deadline; a service with a longer timeout is cut by it.
const DEADLINE_S: f64 = 0.8;
/// Scheduling slack on a shared 2-core machine: a limit is met if it is met within this.
const SLACK_S: f64 = 0.3;
/// Sweeps watched. Enough for a leak of one descriptor per sweep to show several times over.
const SWEEPS: u64 = 12;

/// The reason each behaviour must fail with (every hostile service expects a body).
fn expected_reason(b: Behaviour) -> &'static str {
    match b {
        Behaviour::Silent | Behaviour::StallBody | Behaviour::Trickle | Behaviour::TlsStall => {
            "timeout"
        }
        Behaviour::EndlessBody | Behaviour::HugeBody => "body_too_large",
        Behaviour::Garbage | Behaviour::HugeHeaders => "invalid_response",
        Behaviour::ResetMidResponse | Behaviour::CloseAtOnce => "connection_closed",
        Behaviour::RedirectLoop => "http_status",
        Behaviour::TlsPlaintext => "tls_handshake",
    }
}

/// Servers that notice at once when the prober closes its socket (they are reading), so their
/// open-connection count between sweeps tells whether the prober closed it.
fn notices_close_at_once(b: Behaviour) -> bool {
    matches!(
        b,
        Behaviour::Silent
            | Behaviour::StallBody
            | Behaviour::Garbage
            | Behaviour::RedirectLoop
            | Behaviour::HugeHeaders
            | Behaviour::TlsStall
    )
}

fn hostile_service(name: &str, url: &str, timeout: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nurl = \"{url}\"\ntimeout = \"{timeout}\"\nexpect_body_contains = \"ok\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_service_fails_with_its_reason_on_time_and_leaks_nothing() {
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    for b in Behaviour::ALL {
        servers.push(
            HostileServer::start(b, stop.clone())
                .await
                .expect("hostile server starts"),
        );
    }
    let past_deadline = HostileServer::start(Behaviour::Silent, stop.clone())
        .await
        .expect("hostile server starts");
    let healthy = MockServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_millis(20),
        stop.clone(),
    )
    .await
    .expect("mock starts");

    let mut config = daemon_section("1s", "800ms", "");
    for i in 0..3 {
        config += &hostile_service(&format!("healthy-{i}"), &healthy.url("/health"), "400ms");
    }
    for s in &servers {
        config += &hostile_service(s.behaviour.name(), &s.url(), "400ms");
    }
    // Its own timeout is longer than the deadline: the deadline cuts it.
    config += &hostile_service("silent-past-deadline", &past_deadline.url(), "5s");
    let d = Daemon::start(&config);
    let pid = d.child.id();

    d.status_after_sweeps(2).await;
    let start = min_proc_stats(pid, Duration::from_millis(2100)).await;
    let status = d.status_after_sweeps(SWEEPS).await;
    let end = min_proc_stats(pid, Duration::from_millis(2100)).await;
    let status_end = d.json("/status").await;
    eprintln!("daemon between sweeps: start {start:?}, end {end:?}");

    // Right reason, within its own timeout.
    for s in &servers {
        let svc = service_status(&status, s.behaviour.name());
        let last = &svc["last"];
        eprintln!(
            "{:<20} {} {}",
            s.behaviour.name(),
            last["reason"],
            last["error"]
        );
        assert_eq!(last["reason"], expected_reason(s.behaviour), "{svc}");
        assert_eq!(svc["state"], "down");
        let took = last["duration_seconds"].as_f64().expect("duration");
        assert!(
            took <= TIMEOUT_S + SLACK_S,
            "{} took {took} s",
            s.behaviour.name()
        );
    }
    let redirect = service_status(&status, Behaviour::RedirectLoop.name());
    assert_eq!(redirect["last"]["http_status"], 302);
    let tls_stall = service_status(&status, Behaviour::TlsStall.name());
    assert!(
        tls_stall["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS handshake")),
        "{tls_stall}"
    );
    let cut = service_status(&status, "silent-past-deadline");
    assert_eq!(cut["last"]["reason"], "deadline_exceeded", "{cut}");

    // Every sweep ended by its deadline; the healthy services never failed once.
    for doc in [&status, &status_end] {
        let sweep = &doc["sweep"];
        let took = sweep["duration_seconds"].as_f64().expect("duration");
        assert!(took <= DEADLINE_S + SLACK_S, "sweep took {took} s: {sweep}");
        assert_eq!(sweep["deadline_exceeded"], 1, "{sweep}");
        for i in 0..3 {
            let h = service_status(doc, &format!("healthy-{i}"));
            assert_eq!(h["state"], "up", "{h}");
            assert_eq!(h["consecutive_failures"], 0);
            assert_eq!(
                h["consecutive_successes"], sweep["number"],
                "a healthy service passed every sweep: {h}"
            );
            let took = h["last"]["duration_seconds"].as_f64().expect("duration");
            assert!(
                took < 0.2,
                "healthy check took {took} s next to hostile ones"
            );
        }
    }

    // Nothing leaks: the daemon's descriptors and memory between sweeps stay where they were,
    // and the servers that notice a close at once have no connection left open.
    assert!(
        end.open_fds <= start.open_fds + 2,
        "descriptors grew from {} to {} over {} sweeps",
        start.open_fds,
        end.open_fds,
        SWEEPS - 2
    );
    assert!(
        end.rss_bytes <= start.rss_bytes + 8 * 1024 * 1024,
        "RSS grew from {} to {} bytes",
        start.rss_bytes,
        end.rss_bytes
    );
    let watched: Vec<_> = servers
        .iter()
        .filter(|s| notices_close_at_once(s.behaviour))
        .collect();
    let mut min_open = vec![usize::MAX; watched.len()];
    let sample_end = tokio::time::Instant::now() + Duration::from_millis(1100);
    while tokio::time::Instant::now() < sample_end {
        for (m, s) in min_open.iter_mut().zip(&watched) {
            *m = (*m).min(s.open_connections());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (s, open) in watched.iter().zip(min_open) {
        assert_eq!(
            open,
            0,
            "{} still has a connection from the daemon after its check ended",
            s.behaviour.name()
        );
    }
    // One connection per check: no retries, no stray reconnects. (A sweep may be under way.)
    let sweeps_now = d.json("/status").await["sweep"]["number"]
        .as_u64()
        .expect("sweep number");
    for s in &servers {
        let accepted = s.accepted() as u64;
        assert!(
            accepted <= sweeps_now + 1,
            "{} accepted {accepted} connections in {sweeps_now} sweeps",
            s.behaviour.name()
        );
    }
    stop.cancel();
}
