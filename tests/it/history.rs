//! History that survives restarts: the real binary with a `state_dir`, killed with SIGKILL and
//! started again; services removed and re-added by reloads; a state store that cannot work.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::common::*;

fn config(state_dir: &std::path::Path, up: &str, gone: bool) -> String {
    let mut c = daemon_section(
        "200ms",
        "150ms",
        &format!("state_dir = {:?}\n", state_dir.display().to_string()),
    );
    c.push_str(&service("up", up));
    if gone {
        c.push_str(&format!(
            "[[service]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{}/health\"\nfailure_threshold = 100\n\n",
            closed_port()
        ));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_keeps_down_since_thresholds_counters_and_events() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let state = TempDir::new("state");
    let text = config(state.path(), &up.url("/health"), true);
    let mut first = Daemon::start(&text);
    let before = first.status_after_sweeps(6).await;
    let gone = service_status(&before, "gone").clone();
    assert_eq!(gone["state"], "down", "{gone}");
    let since = gone["since"].clone();
    let failures = gone["consecutive_failures"].as_u64().expect("count");
    assert!(failures >= 5, "{gone}");
    let ok = service_status(&before, "up")["checks"]["ok"]
        .as_u64()
        .expect("count");
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());

    let second = Daemon::start(&text);
    // Before its first sweep ends, and after: the same story.
    let now = second.json("/status").await;
    let gone_now = service_status(&now, "gone");
    assert_eq!(
        gone_now["state"], "down",
        "not unknown after a restart: {gone_now}"
    );
    assert_eq!(gone_now["since"], since, "down since the first run said");
    let after = second.status_after_sweeps(1).await;
    let gone_after = service_status(&after, "gone");
    assert_eq!(gone_after["since"], since);
    assert!(
        gone_after["consecutive_failures"].as_u64().expect("count") > failures,
        "the threshold count continues: {gone_after} (was {failures})"
    );
    let up_after = service_status(&after, "up");
    assert!(
        up_after["checks"]["ok"].as_u64().expect("count") > 1,
        "counters continue (were {ok}): {up_after}"
    );
    // The events and recent results of the first run are there.
    let detail = second.json("/status/gone").await;
    let events = detail["events"].as_array().expect("events");
    let down = events
        .iter()
        .find(|e| e["to"] == "down" && e["at"] == since)
        .unwrap_or_else(|| panic!("the first run's event: {detail}"));
    // The time the daemon was not running is unknown time, then the state resumes.
    assert!(
        events
            .iter()
            .any(|e| e["from"] == "down" && e["to"] == "unknown"),
        "{detail}"
    );
    assert_eq!(events[0]["to"], "down", "resumed: {detail}");
    assert_eq!(events[0]["current"], true);
    assert_eq!(down["reason"], "connect");
    assert!(down["error"].is_string(), "{down}");
    assert!(
        detail["history"].as_array().expect("history").len() >= 5,
        "recent results restored: {detail}"
    );
    assert_eq!(
        detail["uptime"]["24h"], 0.0,
        "down all the known time: {detail}"
    );
    assert!(
        second.logs_containing("state store: restored").len() == 1,
        "the restore is logged"
    );
    // No error, no panic, in either run.
    let metrics = second.get("/metrics").await.body;
    assert!(
        metrics.contains("healthsweep_state_store_errors_total 0"),
        "{metrics}"
    );
    stop.cancel();
}

/// A discovery source's services are not in the config when the daemon starts: they resume
/// what the last run stored when the source finds them again, as the config file's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_service_resumes_its_state_after_a_restart() {
    let stop = CancellationToken::new();
    let state = TempDir::new("state-sd");
    let dead = format!("127.0.0.1:{}", closed_port());
    let targets = state.path().join("targets.json");
    let listed = format!("[{{\"targets\": [\"{dead}\"]}}]");
    std::fs::write(&targets, &listed).expect("write");
    let lists_dead = |s: &serde_json::Value| {
        s["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v["name"] == dead.as_str()))
    };
    let text = format!(
        "{}[[discover]]\nname = \"files\"\nrefresh = \"1h\"\nfile = {{ paths = [{:?}] }}\n\
         [discover.service]\nname = \"{{target}}\"\nurl = \"http://{{target}}/health\"\nfailure_threshold = 100\n",
        daemon_section(
            "200ms",
            "150ms",
            &format!("state_dir = {:?}\n", state.path().display().to_string()),
        ),
        targets.display().to_string(),
    );
    let mut first = Daemon::start(&text);
    let (before, found) = first
        .poll_status(Duration::from_secs(10), |s| {
            s["services"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|v| v["consecutive_failures"].as_u64().unwrap_or(0) >= 5)
            })
        })
        .await;
    assert!(found, "{before}");
    let was = service_status(&before, &dead).clone();
    assert_eq!(was["state"], "down", "{was}");
    // Let the store take the latest rows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());

    let second = Daemon::start(&text);
    let (after, found) = second
        .poll_status(Duration::from_secs(10), lists_dead)
        .await;
    assert!(found, "found again: {after}");
    let now = service_status(&after, &dead);
    assert_eq!(now["state"], "down", "not unknown after a restart: {now}");
    assert_eq!(now["since"], was["since"], "down since the first run said");
    assert!(
        now["consecutive_failures"].as_u64().unwrap_or(0)
            >= was["consecutive_failures"].as_u64().unwrap_or(u64::MAX),
        "the threshold count continues: {now} (was {was})"
    );
    drop(second);

    // A start whose source does not find it (yet): a few sweeps, and stopped again. What the
    // store kept of it must survive that too.
    std::fs::write(&targets, "[]").expect("write");
    let mut third = Daemon::start(&text);
    third.status_after_sweeps(5).await;
    third.signal("TERM");
    assert!(third.wait_exit(Duration::from_secs(5)).is_some());
    std::fs::write(&targets, &listed).expect("write");
    let fourth = Daemon::start(&text);
    let (again, found) = fourth
        .poll_status(Duration::from_secs(10), lists_dead)
        .await;
    assert!(found, "found again: {again}");
    let resumed = service_status(&again, &dead);
    assert_eq!(resumed["state"], "down", "{resumed}");
    assert_eq!(
        resumed["since"], was["since"],
        "a start in between forgot nothing"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_removed_by_a_reload_gets_its_history_back_when_it_returns() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let state = TempDir::new("state");
    let with = config(state.path(), &up.url("/health"), true);
    let d = Daemon::start(&with);
    let before = d.status_after_sweeps(2).await;
    let since = service_status(&before, "gone")["since"].clone();
    d.write_config(&config(state.path(), &up.url("/health"), false));
    d.signal("HUP");
    let without = d.status_at_generation(2).await;
    assert!(!has_service(&without, "gone"));
    assert_eq!(d.get("/status/gone").await.status, 404);
    d.write_config(&with);
    d.signal("HUP");
    d.status_at_generation(3).await;
    let detail = d.json("/status/gone").await;
    let events = detail["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["to"] == "down" && e["at"] == since),
        "its old events: {detail}"
    );
    assert!(
        events.iter().any(|e| e["to"] == "unknown"),
        "the time it was gone is unknown time, not downtime: {detail}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_work_is_counted_and_sweeping_goes_on() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    // state_dir is a file: nothing can be created in it.
    let dir = TempDir::new("state");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").expect("write");
    let d = Daemon::start(&config(&not_a_dir, &up.url("/health"), false));
    let status = d.status_after_sweeps(2).await;
    assert_eq!(service_status(&status, "up")["state"], "up");
    let metrics = d.get("/metrics").await.body;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("healthsweep_state_store_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the counter: {metrics}"));
    assert!(errors >= 1.0, "{metrics}");
    assert!(!d.logs_containing("going on with memory only").is_empty());
    // The history still works, in memory.
    let detail = d.json("/status/up").await;
    assert!(!detail["history"].as_array().expect("history").is_empty());

    // A corrupt database is moved aside, byte for byte, and a fresh one started.
    let state = TempDir::new("state");
    let garbage = vec![0x42u8; 10_000];
    std::fs::write(state.path().join("state.db"), &garbage).expect("write");
    let d = Daemon::start(&config(state.path(), &up.url("/health"), false));
    d.status_after_sweeps(2).await;
    let aside: Vec<_> = std::fs::read_dir(state.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "moved aside, not deleted");
    assert_eq!(std::fs::read(aside[0].path()).expect("read"), garbage);
    assert!(!d.logs_containing("moved aside").is_empty());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_no_secret_and_only_its_user_reads_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let root = TempDir::new("state");
    let state = root.path().join("made-by-the-daemon");
    let url = up
        .url("/health")
        .replace("http://", "http://probe:url-pass-4f9a@");
    let mut text = daemon_section(
        "200ms",
        "150ms",
        &format!("state_dir = {:?}\n", state.display().to_string()),
    );
    text.push_str(&format!(
        "[[service]]\nname = \"api\"\nurl = \"{url}\"\nheaders = {{ \"X-Api-Key\" = \"header-pass-77c1\" }}\n\n"
    ));
    text.push_str(&format!(
        "[[service]]\nname = \"down\"\nurl = \"http://probe:url-pass-4f9a@127.0.0.1:{}/\"\n",
        closed_port()
    ));
    let mut d = Daemon::start(&text);
    d.status_after_sweeps(45).await;
    // A clean stop writes every row once more.
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "the directory it made");
    let mut bytes = Vec::new();
    for e in std::fs::read_dir(&state)
        .expect("dir")
        .filter_map(Result::ok)
    {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        bytes.extend(std::fs::read(e.path()).expect("read"));
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("api"), "the store was written");
    for secret in ["url-pass-4f9a", "header-pass-77c1"] {
        assert!(!text.contains(secret), "{secret} is in the state store");
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_state_directory_is_the_default() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let state = TempDir::new("state");
    let text = format!(
        "{}{}",
        daemon_section("200ms", "150ms", ""),
        service("api", &up.url("/health"))
    );
    let d = Daemon::with_config(&text)
        .env("STATE_DIRECTORY", &state.path().display().to_string())
        .start();
    d.status_after_sweeps(2).await;
    assert!(
        wait_for(Duration::from_secs(5), || async {
            state.path().join("state.db").exists()
        })
        .await,
        "state.db in $STATE_DIRECTORY"
    );
    stop.cancel();
}
