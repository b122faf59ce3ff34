//! Running under systemd: the unit file as systemd's own tools judge it, and the notify protocol
//! spoken by the real binary to a real `NOTIFY_SOCKET` (a unix datagram socket this test binds,
//! standing in for the service manager, since no systemd runs here).

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

/// The hardening bar the issue sets: "OK" in `systemd-analyze security`.
const MAX_EXPOSURE: f64 = 1.5;

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/healthsweep.service")
}

/// The unit as installed, with the binary path pointed at the one just built: `verify` checks
/// that every `Exec*=` program exists.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    assert!(
        text.contains("ExecStart=/usr/bin/healthsweep run"),
        "the unit runs /usr/bin/healthsweep (where the .deb installs it)"
    );
    let path = dir.join("healthsweep.service");
    std::fs::write(&path, text.replace("/usr/bin/healthsweep", bin())).expect("write unit");
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_a_word() {
    if !needs(&[Tool::SystemdAnalyze]) {
        return;
    }
    let dir = TempDir::new("unit-verify");
    let unit = unit_for_verify(dir.path());
    let (ok, said) = run_tool(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        "systemd-analyze comes with systemd",
    );
    assert!(ok, "verify failed: {said}");
    assert_eq!(said.trim(), "", "verify must be clean");
}

#[test]
fn the_unit_scores_ok_in_systemd_analyze_security_and_can_still_reach_the_network() {
    if !needs(&[Tool::SystemdAnalyze]) {
        return;
    }
    let unit = unit_path();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for healthsweep.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in: {text}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );

    // The checks need outbound TCP: the tool itself must see the network left open.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--json=short"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed");
    let checks: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("security --json is JSON");
    let is_set = |name: &str| {
        checks
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .and_then(|c| c["set"].as_bool())
            .unwrap_or_else(|| panic!("no check {name} in {checks}"))
    };
    assert!(
        !is_set("PrivateNetwork="),
        "the network must stay reachable"
    );
    assert!(
        !is_set("RestrictAddressFamilies=~AF_(INET|INET6)"),
        "AF_INET and AF_INET6 must stay allowed"
    );
    assert!(
        !is_set("IPAddressDeny="),
        "no IP deny list: services are anywhere"
    );
    assert!(is_set("RestrictAddressFamilies=~AF_PACKET"));
    assert!(is_set("SystemCallFilter=~@privileged"));
    // The one call of @resources let through (see the unit): the render thread's nice 19.
    assert!(
        !is_set("SystemCallFilter=~@resources"),
        "setpriority must stay allowed"
    );
}

#[test]
fn the_unit_declares_the_lifecycle_the_daemon_speaks() {
    let text = std::fs::read_to_string(unit_path()).expect("read the unit");
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "Type=notify",
        "ExecStartPre=/usr/bin/healthsweep validate --config /etc/healthsweep/healthsweep.toml",
        "ExecStart=/usr/bin/healthsweep run --config /etc/healthsweep/healthsweep.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ConfigurationDirectory=healthsweep",
    ] {
        assert!(settings.contains(&want), "the unit lacks {want:?}");
    }
    let value = |key: &str| {
        settings
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit lacks {key}"))
    };
    let watchdog = humantime::parse_duration(value("WatchdogSec=")).expect("a duration");
    // The pings stop only when a sweep overruns its deadline by the grace: the watchdog must
    // allow a default sweep (5 s) plus the grace, or a healthy daemon would be killed.
    assert!(
        watchdog >= healthsweep::config::DEFAULT_DEADLINE + healthsweep::notify::WATCHDOG_GRACE,
        "WatchdogSec={watchdog:?} is too short"
    );
    let nofile: u64 = value("LimitNOFILE=").parse().expect("a number");
    assert!(
        nofile >= 65536,
        "LimitNOFILE={nofile} is small for a large fleet"
    );
}

/// The service manager's end of `NOTIFY_SOCKET`: every datagram received, in order.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    _dir: TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (messages.clone(), stop.clone());
        // Ends by itself once the test drops this (the read timeout bounds each wait).
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().expect("message lock").push(text);
                }
            }
        });
        NotifySocket {
            path,
            messages,
            stop,
            _dir: dir,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("message lock").clone()
    }

    /// Waits (at most 10 s) for a message after the first `after` that has `line`; returns its
    /// index.
    async fn wait_for(&self, after: usize, line: &str) -> usize {
        self.wait_for_line(after, line, |l| l == line).await
    }

    /// Waits (at most 10 s) for a message after the first `after` with a line that satisfies
    /// `matches` (`what` describes it); returns its index.
    async fn wait_for_line(
        &self,
        after: usize,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> usize {
        let found = || {
            self.messages()
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, m)| m.lines().any(&matches))
                .map(|(i, _)| i)
        };
        let ok = wait_for(Duration::from_secs(10), || async { found().is_some() }).await;
        assert!(
            ok,
            "no {what:?} after message {after}: {:#?}",
            self.messages()
        );
        found().expect("just found")
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of `KEY=` in a notify message.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

async fn mock(stop: &CancellationToken, latency: Duration) -> MockServer {
    MockServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), latency, stop.clone())
        .await
        .expect("mock server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_speaks_the_notify_protocol_in_order() {
    let stop = CancellationToken::new();
    // 300 ms per check: the first sweep visibly takes time before READY=1.
    let m = mock(&stop, Duration::from_millis(300)).await;
    let fleet = format!(
        "{}{}",
        service("healthy", &m.url("/health")),
        service("broken", &m.url("/fail/500"))
    );
    let socket = NotifySocket::bind();
    let socket_path = socket.path.to_str().expect("a UTF-8 temp path").to_string();
    // 400 ms: the sweeper pings every 200 ms, several times in this test.
    let mut d = Daemon::with_config(&format!("{}{fleet}", daemon_section("1s", "1s", "")))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .start();

    // READY=1 only once the first sweep is done: /status shows it by the time READY arrives.
    let ready = socket.wait_for(0, "READY=1").await;
    let status = d.json("/status").await;
    assert!(status["sweep"]["number"].as_u64() >= Some(1), "{status}");
    let messages = socket.messages();
    assert_eq!(
        field(&messages[ready], "STATUS"),
        Some(format!(
            "1/2 up, last sweep {:.2} s",
            status["sweep"]["duration_seconds"]
                .as_f64()
                .expect("a duration")
        ))
        .as_deref(),
        "READY=1 carries the first status line: {messages:#?}"
    );
    assert!(
        messages[..ready]
            .iter()
            .any(|m| field(m, "STATUS") == Some("first sweep of 2 services running")),
        "a status line while the first sweep runs: {messages:#?}"
    );

    // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1, then the new fleet in STATUS.
    d.write_config(&format!(
        "{}{fleet}{}",
        daemon_section("1s", "1s", ""),
        service("added", &m.url("/health"))
    ));
    d.signal("HUP");
    let reloading = socket.wait_for(ready + 1, "RELOADING=1").await;
    let reloaded = socket.wait_for(reloading + 1, "READY=1").await;
    let first_usec: u64 = field(&socket.messages()[reloading], "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .expect("RELOADING=1 comes with MONOTONIC_USEC=<microseconds>");
    assert_eq!(d.json("/status").await["generation"], 2);
    socket
        .wait_for_line(reloading + 1, "STATUS=2/3 up", |l| {
            l.starts_with("STATUS=2/3 up, last sweep ")
        })
        .await;

    // A second reload is stamped later on the monotonic clock.
    d.signal("HUP");
    let again = socket.wait_for(reloaded + 1, "RELOADING=1").await;
    socket.wait_for(again + 1, "READY=1").await;
    let second_usec: u64 = field(&socket.messages()[again], "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    assert!(second_usec > first_usec, "{second_usec} <= {first_usec}");

    // The sweeper has been pinging the watchdog all along.
    let pings = socket
        .messages()
        .iter()
        .filter(|m| m.as_str() == "WATCHDOG=1\n")
        .count();
    assert!(pings >= 3, "{pings} WATCHDOG=1: {:#?}", socket.messages());

    // SIGTERM: STOPPING=1, then a clean exit.
    d.signal("TERM");
    let stopping = socket.wait_for(0, "STOPPING=1").await;
    let exit = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let messages = socket.messages();
    assert!(
        messages[stopping + 1..]
            .iter()
            .all(|m| !m.contains("READY=1")),
        "nothing claims readiness after STOPPING=1: {messages:#?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watchdog_usec_the_daemon_never_pings_the_watchdog() {
    let stop = CancellationToken::new();
    let m = mock(&stop, Duration::from_millis(10)).await;
    let socket = NotifySocket::bind();
    let socket_path = socket.path.to_str().expect("a UTF-8 temp path").to_string();
    let d = Daemon::with_config(&format!(
        "{}{}",
        daemon_section("300ms", "300ms", ""),
        service("healthy", &m.url("/health"))
    ))
    .env("NOTIFY_SOCKET", &socket_path)
    .start();
    socket.wait_for(0, "READY=1").await;
    d.status_after_sweeps(3).await;
    let messages = socket.messages();
    assert!(
        messages.iter().all(|m| !m.contains("WATCHDOG")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("STATUS=1/1 up")),
        "{messages:#?}"
    );
    stop.cancel();
}
