//! End to end: the real `healthsweep run` binary against real HTTP servers on loopback.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

const LATENCY: Duration = Duration::from_millis(50);

async fn mock(shutdown: &CancellationToken) -> MockServer {
    MockServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        LATENCY,
        shutdown.clone(),
    )
    .await
    .expect("mock server starts")
}

/// One daemon, one of each kind of service: checked in one sweep, asserted one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_service_gets_its_state_and_reason() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let refused = closed_port();
    let config = format!(
        "{}[defaults]\nexpect_json = {{ \"/status\" = \"ok\" }}\n\n{}{}{}{}{}",
        daemon_section("2s", "1s", ""),
        service("healthy", &m.url("/health")),
        service("error-500", &m.url("/fail/500")),
        service("wrong-body", &m.url("/fail/body")),
        service("hangs", &m.url("/hang")),
        service("refused", &format!("http://127.0.0.1:{refused}/health")),
    );
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;

    let healthy = service_status(&status, "healthy");
    assert_eq!(healthy["state"], "up", "{healthy}");
    assert_eq!(healthy["last"]["ok"], true);
    assert_eq!(healthy["last"]["http_status"], 200);
    assert_eq!(healthy["last"]["reason"], serde_json::Value::Null);

    let e500 = service_status(&status, "error-500");
    assert_eq!(e500["state"], "down");
    assert_eq!(e500["last"]["reason"], "http_status");
    assert_eq!(e500["last"]["http_status"], 500);

    let body = service_status(&status, "wrong-body");
    assert_eq!(body["state"], "down");
    assert_eq!(body["last"]["reason"], "body_mismatch");
    assert!(
        body["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("degraded")),
        "{body}"
    );

    let refused = service_status(&status, "refused");
    assert_eq!(refused["last"]["reason"], "connect");

    // The hanging service is cut off by the 1 s deadline; the sweep still ends on time and the
    // other services were unaffected (their latency is the mock's, not the deadline).
    let hangs = service_status(&status, "hangs");
    assert_eq!(hangs["state"], "down");
    assert_eq!(hangs["last"]["reason"], "deadline_exceeded");
    let sweep = &status["sweep"];
    let took = sweep["duration_seconds"].as_f64().expect("duration");
    assert!(
        (1.0..1.2).contains(&took),
        "sweep took {took} s with a 1 s deadline"
    );
    assert_eq!(sweep["deadline_exceeded"], 1);
    assert_eq!(sweep["checks"], 5);
    let healthy_took = healthy["last"]["duration_seconds"]
        .as_f64()
        .expect("duration");
    assert!(healthy_took < 0.5, "healthy check took {healthy_took} s");

    assert_eq!(status["summary"]["up"], 1);
    assert_eq!(status["summary"]["down"], 4);
    assert_eq!(status["summary"]["unknown"], 0);
    assert_eq!(status["generation"], 1);
    assert!(
        status["sweep"]["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "RFC 3339 UTC: {status}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_carry_blackbox_names() {
    if !needs(&[Tool::Promtool]) {
        return;
    }
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let config = format!(
        "{}{}{}",
        daemon_section("1s", "1s", ""),
        "[[service]]\nname = \"labelled\"\nurl = \"".to_string()
            + &m.url("/health")
            + "\"\ngroup = \"orders\"\nlabels = { team = \"checkout\" }\n\n",
        service("broken", &m.url("/fail/500")),
    );
    let d = Daemon::start(&config);
    d.status_after_sweeps(1).await;
    let r = d.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    let body = r.body;
    for line in [
        r#"probe_success{target="labelled",group="orders",team="checkout"} 1"#,
        r#"probe_success{target="broken"} 0"#,
        r#"probe_http_status_code{target="broken"} 500"#,
        r#"healthsweep_probe_failure_reason{target="broken",reason="http_status"} 1"#,
        r#"healthsweep_target_consecutive_failures{target="broken"} "#,
        r#"healthsweep_targets{state="up"} 1"#,
        r#"healthsweep_targets{state="down"} 1"#,
        "healthsweep_config_last_reload_successful 1",
        "healthsweep_build_info{",
        "healthsweep_sweeps_total ",
        "healthsweep_checks_deadline_exceeded_total 0",
        "healthsweep_last_sweep_duration_seconds ",
        "healthsweep_last_sweep_timestamp_seconds ",
        "healthsweep_config_last_reload_success_timestamp_seconds ",
        "probe_duration_seconds{target=\"labelled\"",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.contains(line), "/metrics lacks {line:?}:\n{body}");
    }
    assert!(
        !body.contains(r#"healthsweep_probe_failure_reason{target="labelled""#),
        "a passing target has no failure reason series"
    );
    promtool_check_metrics(&body);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_services_and_leaves_no_stale_series() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let before = format!(
        "{}{}{}",
        daemon_section("1s", "1s", ""),
        service("kept", &m.url("/fail/500")),
        service("removed", &m.url("/health")),
    );
    let d = Daemon::start(&before);
    let status = d.status_after_sweeps(2).await;
    assert_eq!(service_status(&status, "kept")["consecutive_failures"], 2);

    // An interval far away, so the reloaded config's new service stays unknown while we look.
    let after = format!(
        "{}{}{}",
        daemon_section("1h", "1s", ""),
        service("kept", &m.url("/fail/500")),
        service("added", &m.url("/health")),
    );
    d.write_config(&after);
    d.signal("HUP");
    let status = d.status_at_generation(2).await;

    assert!(!has_service(&status, "removed"), "{status}");
    let added = service_status(&status, "added");
    assert_eq!(added["state"], "unknown");
    assert_eq!(added["last"], serde_json::Value::Null);
    let kept = service_status(&status, "kept");
    assert_eq!(kept["state"], "down", "kept services keep their state");
    assert!(
        kept["consecutive_failures"].as_u64().unwrap_or(0) >= 2,
        "{kept}"
    );

    let metrics = d.get("/metrics").await.body;
    assert!(
        !metrics.contains(r#"target="removed""#),
        "stale series:\n{metrics}"
    );
    assert!(metrics.contains(r#"probe_success{target="kept"} 0"#));
    assert!(
        !metrics.contains(r#"probe_success{target="added""#),
        "an unknown service has no probe result yet"
    );
    assert!(metrics.contains(r#"healthsweep_targets{state="unknown"} 1"#));
    assert!(metrics.contains("healthsweep_config_generation 2"));
    assert!(metrics.contains("healthsweep_sweep_interval_seconds 3600"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_running_config_and_says_why() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let good = format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("svc", &m.url("/health"))
    );
    let d = Daemon::start(&good);
    d.status_after_sweeps(1).await;

    d.write_config(&format!(
        "{}{}[[service]]\nname = \"x\"\nurl = \"ftp://nope\"\n",
        good,
        service("other", &m.url("/health"))
    ));
    d.signal("HUP");
    let failed = wait_for(Duration::from_secs(10), || async {
        d.get("/metrics")
            .await
            .body
            .contains("healthsweep_config_last_reload_successful 0")
    })
    .await;
    assert!(failed, "reload failure not recorded in metrics");

    let status = d.json("/status").await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["config"]["last_reload_successful"], false);
    let err = status["config"]["last_reload_error"].as_str().unwrap_or("");
    assert!(err.contains("ftp") && err.contains("line"), "{err}");
    assert!(
        !has_service(&status, "other"),
        "nothing of the bad file was applied"
    );
    // Probing goes on with the old config.
    let number = status["sweep"]["number"].as_u64().unwrap_or(0);
    let later = d.status_after_sweeps(number + 1).await;
    assert_eq!(service_status(&later, "svc")["state"], "up");
    assert!(
        !d.logs_containing("config reload failed").is_empty(),
        "the failure is logged"
    );

    // A good file afterwards is picked up, and the metric recovers.
    d.write_config(&format!("{}{}", good, service("other", &m.url("/health"))));
    d.signal("HUP");
    d.status_at_generation(2).await;
    assert!(
        d.get("/metrics")
            .await
            .body
            .contains("healthsweep_config_last_reload_successful 1")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_api_is_off_unless_enabled_and_answers_with_the_outcome() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let off = format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("a", &m.url("/health"))
    );
    let d = Daemon::start(&off);
    let r = http(d.addr, "POST", "/-/reload").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("reload_api"))
    );

    let on = format!(
        "{}{}",
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", &m.url("/health"))
    );
    d.write_config(&on);
    d.signal("HUP");
    d.status_at_generation(2).await;
    let r = http(d.addr, "POST", "/-/reload").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["generation"], 3);

    d.write_config("[daemon]\nreload_api = true\ninterval = \"soon\"\n");
    let r = http(d.addr, "POST", "/-/reload").await;
    assert_eq!(r.status, 422, "{}", r.body);
    let problems = r.json()["problems"].to_string();
    assert!(
        problems.contains("interval") && problems.contains("line 3"),
        "{problems}"
    );
    assert_eq!(d.json("/status").await["generation"], 3);

    let r = d.get("/-/reload").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_promptly_even_mid_sweep() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    // A service that reads the request and never answers, counting the requests it saw.
    let stop = CancellationToken::new();
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    let addr = serve_each(
        any_loopback_port(),
        move |mut s: tokio::net::TcpStream| {
            let seen = seen.clone();
            async move {
                let mut buf = [0u8; 1024];
                if s.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                // Hold the connection open until the daemon goes.
                let _ = s.read(&mut buf).await;
            }
        },
        &stop,
    )
    .await;
    // A sweep that would hang for 10 s is in flight when SIGTERM arrives.
    let config = format!(
        "{}{}",
        daemon_section("10s", "10s", ""),
        service("hangs", &format!("http://{addr}/hang"))
    );
    let mut d = Daemon::start(&config);
    let in_flight = wait_for(Duration::from_secs(10), || {
        let n = asked.load(Ordering::SeqCst);
        async move { n > 0 }
    })
    .await;
    assert!(in_flight, "the check's request arrived");
    let sent = Instant::now();
    d.signal("TERM");
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s");
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?} to exit");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_sweep() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let config = format!(
        "{}{}",
        daemon_section("2s", "2s", ""),
        service("hangs", &m.url("/hang"))
    );
    let d = Daemon::start(&config);
    let r = d.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(d.get("/healthz").await.status, 200);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            d.get("/readyz").await.status == 200
        })
        .await
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_404_405_and_400() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let config = format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        "[[service]]\nname = \"in-orders\"\nurl = \"".to_string()
            + &m.url("/health")
            + "\"\ngroup = \"orders\"\n\n"
            + &service("elsewhere", &m.url("/fail/500"))
    );
    let d = Daemon::start(&config);
    d.status_after_sweeps(1).await;

    let r = d.get("/status/no-such-service").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-service"))
    );

    let r = d.get("/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());

    let r = http(d.addr, "DELETE", "/status").await;
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());

    let r = d.get("/status?state=sideways").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());

    let one = d.json("/status/in-orders").await;
    assert_eq!(one["name"], "in-orders");
    assert_eq!(one["group"], "orders");
    let down = d.json("/status?state=down").await;
    let names: Vec<_> = down["services"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec!["elsewhere"]);
    let orders = d.json("/status?group=orders").await;
    assert_eq!(orders["services"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        orders["summary"]["total"], 2,
        "the summary counts the whole fleet"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_are_redacted_in_status() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let url = format!("http://probe:canary-s3cret@{}/health", m.addr);
    let d = Daemon::start(&format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("auth", &url)
    ));
    let status = d.status_after_sweeps(1).await;
    let shown = service_status(&status, "auth")["url"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(shown, format!("http://REDACTED@{}/health", m.addr));
    assert!(!status.to_string().contains("canary-s3cret"));
    assert!(!d.get("/metrics").await.body.contains("canary-s3cret"));
    stop.cancel();
}

#[test]
fn a_taken_listen_port_is_a_clear_error_and_exit_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = TempDir::new("port");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[daemon]\nlisten = \"{addr}\"\n")).expect("write");
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
