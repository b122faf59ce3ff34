//! Per-service `interval`: the real daemon checks a service every Nth sweep, keeps its series
//! and state between checks, says when it is next due, takes the key from a discovery
//! template, and refuses a reload whose interval is no multiple of the sweep's.

use std::time::{Duration, SystemTime};

use crate::common::*;

const SWEEP: &str = "250ms";

fn config(server: &RecordingServer, targets: &std::path::Path, rare: &str) -> String {
    format!(
        "{}{}[[service]]\nname = \"rare\"\nurl = \"{}\"\ninterval = \"{rare}\"\n\n\
         [[discover]]\nname = \"found\"\nfile = {{ paths = [\"{}\"] }}\n\
         [discover.service]\nurl = \"http://{{target}}/found\"\nname = \"found-{{target}}\"\n\
         interval = \"500ms\"\n",
        daemon_section(SWEEP, SWEEP, ""),
        service("often", &server.url("/often")),
        server.url("/rare"),
        targets.display(),
    )
}

fn seconds_since_epoch(rfc3339: &str) -> f64 {
    let t: jiff::Timestamp = rfc3339.parse().expect("RFC 3339");
    t.as_millisecond() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_its_own_interval_is_checked_every_nth_sweep_and_stays_shown_between() {
    let server = RecordingServer::start().await;
    let dir = TempDir::new("intervals");
    let targets = dir.path().join("targets.json");
    std::fs::write(
        &targets,
        format!("[{{\"targets\": [\"{}\"]}}]", server.addr),
    )
    .expect("write");
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(&path, config(&server, &targets, "1s")).expect("write config");
    let d = Daemon::at(path, dir).start();

    // 1 s of 250 ms sweeps: every 4th, after a first check at once.
    let status = d.status_after_sweeps(14).await;
    let n = status["sweep"]["number"].as_u64().expect("number");
    let often = service_status(&status, "often");
    let rare = service_status(&status, "rare");
    assert_eq!(often["checks"]["ok"].as_u64(), Some(n), "{often}");
    let rare_ok = rare["checks"]["ok"].as_u64().expect("ok count");
    let turns = (n - 1) as f64 / 4.0;
    assert!(
        (1 + turns.floor() as u64..=1 + turns.ceil() as u64).contains(&rare_ok),
        "{rare_ok} checks of rare in {n} sweeps: {rare}"
    );
    assert_eq!(rare["state"], "up");
    assert_eq!(rare["interval_seconds"], 1.0);
    assert_eq!(often["interval_seconds"], 0.25);
    // Every check the daemon reports is a request the service got, and no more.
    let requests = server.heads_for("/rare").len() as u64;
    assert!(
        requests == rare_ok || requests == rare_ok + 1,
        "{requests} requests"
    );

    // Next due: after the latest sweep, within one interval of the service.
    let started = seconds_since_epoch(status["sweep"]["started_at"].as_str().expect("started"));
    let next = seconds_since_epoch(rare["next_check_at"].as_str().expect("next_check_at"));
    assert!(
        next > started && next <= started + 1.0 + 1e-3,
        "next {next} vs sweep {started}"
    );
    let next_often = seconds_since_epoch(often["next_check_at"].as_str().expect("next"));
    assert!(
        (next_often - started - 0.25).abs() < 1e-3,
        "{next_often} {started}"
    );

    // The discovery template's interval applies to what it finds.
    let found = format!("found-{}", server.addr);
    let (status, ok) = d
        .poll_status(Duration::from_secs(10), |s| {
            has_service(s, &found) && service_status(s, &found)["state"] == "up"
        })
        .await;
    assert!(ok, "{status}");
    assert_eq!(service_status(&status, &found)["interval_seconds"], 0.5);

    // Between its checks every series of it stays, with its latest check's time.
    let mut stamps = Vec::new();
    for _ in 0..8 {
        let text = d.get("/metrics").await.body;
        let sample = |name: &str, target: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("target=\"{target}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!(sample("probe_success{", "rare"), Some(1.0), "{text}");
        assert_eq!(sample("healthsweep_target_up{", "rare"), Some(1.0));
        let stamp = sample("healthsweep_target_last_check_timestamp_seconds{", "rare")
            .expect("last check timestamp");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            now - stamp < 1.0 + 0.5,
            "{stamp} is more than an interval old"
        );
        stamps.push(stamp);
        assert_eq!(
            sample("healthsweep_target_last_check_timestamp_seconds{", "often"),
            None,
            "only for services with an interval of their own"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stamps.dedup();
    assert!(
        (2..=4).contains(&stamps.len()),
        "1.2 s of scrapes sees one to three checks: {stamps:?}"
    );

    // A reload to an interval that is no multiple of the sweep's is refused; sweeping goes on.
    d.write_config(&config(&server, &targets, "300ms"));
    d.signal("HUP");
    let (status, refused) = d
        .poll_status(Duration::from_secs(10), |s| {
            s["config"]["last_reload_successful"] == false
        })
        .await;
    assert!(refused, "{status}");
    let err = status["config"]["last_reload_error"].as_str().unwrap_or("");
    assert!(
        err.contains("must be a whole multiple of [daemon] interval (250ms): 250ms or 500ms")
            && err.contains("line"),
        "{err}"
    );
    let n = status["sweep"]["number"].as_u64().unwrap_or(0);
    let later = d.status_after_sweeps(n + 2).await;
    assert_eq!(service_status(&later, "rare")["interval_seconds"], 1.0);
}
