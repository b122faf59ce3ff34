//! End to end: the `validate`, `check`, `demo` and `bench` commands of the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

#[test]
fn validate_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/healthsweep.toml");
    let (code, out, err) = run_cli(["validate", "--config", example]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("valid (7 services)"), "{out}");
}

#[test]
fn validate_lists_every_problem_with_file_line_and_service_and_exits_2() {
    let dir = TempDir::new("validate");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[daemon]\ninterval = \"5s\"\ndeadline = \"6s\"\n\n[[service]]\nname = \"a\"\nurl = \"gopher://x\"\n\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nlabels = { job = \"x\" }\n",
    )
    .expect("write");
    let path_str = path.to_str().expect("utf-8 path");
    let (code, _, err) = run_cli(["validate", "--config", path_str]);
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines.iter().all(|l| l.contains(path_str)), "{err}");
    assert!(
        err.contains("line 3, column 12: deadline (6s) must not be longer than interval (5s)"),
        "{err}"
    );
    assert!(
        err.contains("line 7, column 7: service \"a\": url scheme \"gopher\""),
        "{err}"
    );
    assert!(
        err.contains("line 10, column 8: service \"a\": duplicate service name"),
        "{err}"
    );
    assert!(
        err.contains("service \"a\": label name \"job\" is reserved"),
        "{err}"
    );
}

#[test]
fn validate_reports_a_missing_file_and_exits_2() {
    let (code, _, err) = run_cli(["validate", "--config", "/nonexistent/healthsweep.toml"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("/nonexistent/healthsweep.toml: cannot read config"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_a_table_and_exits_1_when_a_service_is_down() {
    let stop = CancellationToken::new();
    let m = MockServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_millis(20),
        stop.clone(),
    )
    .await
    .expect("mock");
    let dir = TempDir::new("check");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "{}{}",
            service("fine", &m.url("/health")),
            service("broken", &m.url("/fail/500"))
        ),
    )
    .expect("write");
    let p = path.to_str().expect("utf-8").to_string();
    let out = tokio::task::spawn_blocking(move || run_cli(["check", "--config", &p]))
        .await
        .expect("join");
    let (code, stdout, stderr) = out;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let header = stdout.lines().next().unwrap_or("");
    for col in ["NAME", "STATE", "STATUS", "LATENCY", "REASON", "ERROR"] {
        assert!(header.contains(col), "{stdout}");
    }
    let fine = stdout
        .lines()
        .find(|l| l.starts_with("fine"))
        .expect("row for fine");
    assert!(fine.contains(" up ") && fine.contains("200"), "{fine}");
    let broken = stdout
        .lines()
        .find(|l| l.starts_with("broken"))
        .expect("row for broken");
    assert!(
        broken.contains("down") && broken.contains("500") && broken.contains("http_status"),
        "{broken}"
    );
    assert!(stdout.contains("1 up, 1 down"), "{stdout}");

    // All up: exit 0; and --format json is JSON.
    std::fs::write(&path, service("fine", &m.url("/health"))).expect("write");
    let p = path.to_str().expect("utf-8").to_string();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run_cli(["check", "--config", &p, "--format", "json"]))
            .await
            .expect("join");
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(v["summary"]["up"], 1);
    assert_eq!(v["services"][0]["ok"], true);
    stop.cancel();
}

/// The README's first command: 100 healthy mock services and four broken ones, swept by the
/// real daemon, all on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_100_up_and_4_down_each_with_its_reason() {
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--exit-after", "8s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    let mut sweep_line = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        if let Some(rest) = line.trim().strip_prefix("status:   http://") {
            addr = rest
                .split('/')
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok());
        }
        if line.starts_with("sweep 1:") {
            sweep_line = Some(line);
            break;
        }
    }
    let addr = addr.expect("the demo prints its status URL");
    let sweep_line = sweep_line.expect("the demo prints a line per sweep");
    assert!(sweep_line.contains("100 up, 4 down"), "{sweep_line}");

    let status = http(addr, "GET", "/status").await.json();
    assert_eq!(status["summary"]["up"], 100);
    assert_eq!(status["summary"]["down"], 4);
    for (name, reason) in [
        ("broken-500", "http_status"),
        ("wrong-body", "body_mismatch"),
        ("hanging", "deadline_exceeded"),
        ("refused", "connect"),
    ] {
        assert_eq!(
            service_status(&status, name)["last"]["reason"],
            reason,
            "{name}"
        );
    }
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert!(status.success(), "the demo exits 0 after --exit-after");
}

/// The example config's `[[discover]]` blocks are commented out (a packaged config must not
/// go looking for targets); uncommented, they must be a valid config, so the examples cannot
/// drift from what the daemon accepts.
#[test]
fn the_example_configs_discovery_blocks_are_valid_once_uncommented() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/healthsweep.toml"
    ))
    .expect("read the example");
    let start = example
        .find("# ---- [[discover]]")
        .expect("the start marker");
    let end = example
        .find("# ---- end of [[discover]]")
        .expect("the end marker");
    let blocks: String = example[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| !l.starts_with("----"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(blocks.matches("[[discover]]").count() >= 5, "{blocks}");
    let dir = TempDir::new("example-discover");
    let token = dir.path().join("sd-token");
    std::fs::write(&token, "Bearer example\n").expect("write token");
    let config = format!("{example}\n{blocks}")
        .replace("/run/secrets/sd-token", token.to_str().expect("utf-8 path"));
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(&path, config).expect("write config");
    let (code, out, err) = run_cli(["validate", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("valid (7 services, 5 discovery sources)"),
        "{out}"
    );
}

/// The benchmark holds the speed and memory targets, so it must keep working: a small run of it
/// (its own mock fleet on loopback, a worker process) checks every service in every sweep, takes
/// a reload in a sweep, and reports its figures, the check future's size among them.
#[test]
fn a_small_benchmark_run_checks_every_service_and_reports_its_figures() {
    let (code, out, err) = run_cli_within(
        ["bench", "--services", "100", "--sweeps", "2", "--json"],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).expect("bench --json is JSON");
    let r = &reports[0];
    assert_eq!(r["services"], 100, "{r}");
    let sweeps = r["sweeps"].as_array().expect("sweeps");
    assert_eq!(sweeps.len(), 2, "{r}");
    for s in sweeps {
        assert_eq!(s["ok"], 100, "{s}");
        assert_eq!(s["not_started"], 0, "{s}");
        assert_eq!(
            s["failed"],
            serde_json::json!({}),
            "failures by reason: {s}"
        );
    }
    let reload = &r["reload"];
    assert_eq!(reload["sweep"]["ok"], 100, "{reload}");
    for key in [
        "check_future_bytes",
        "peak_rss_bytes",
        "metrics_bytes",
        "status_bytes",
    ] {
        assert!(r[key].as_u64().is_some_and(|n| n > 0), "{key}: {r}");
    }
}
