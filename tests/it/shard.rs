//! Scale-out: several real `healthsweep run --shard I/N` replicas over one config, each checking
//! its share of a loopback fleet, together checking every service exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

/// The fleet of the issue: 300 services.
const FLEET: usize = 300;
/// Mock ports the fleet is spread over (each service has its own path).
const PORTS: usize = 4;

fn fleet_config(mocks: &[MockServer]) -> String {
    let mut config = daemon_section("1s", "1s", "");
    for i in 0..FLEET {
        let m = &mocks[i % mocks.len()];
        config.push_str(&service(
            &format!("svc-{i:03}"),
            &m.url(&format!("/svc-{i:03}/health")),
        ));
    }
    config
}

/// Starts `count` replicas, waits for each one's first sweep, and returns which replica checked
/// each service (a service checked by several appears once per replica).
async fn owners(config: &str, count: u32) -> BTreeMap<String, Vec<u32>> {
    let replicas: Vec<Daemon> = (0..count)
        .map(|i| {
            Daemon::with_config(config)
                .run_args(&["--shard", &format!("{i}/{count}")])
                .start()
        })
        .collect();
    let mut owners: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, d) in replicas.iter().enumerate() {
        let status = d.status_after_sweeps(1).await;
        assert_eq!(status["shard"]["index"], i, "{}", status["shard"]);
        assert_eq!(status["shard"]["count"], count);
        assert_eq!(status["shard"]["fleet_services"], FLEET);
        let services = status["services"].as_array().expect("services");
        for s in services {
            assert_eq!(s["state"], "up", "replica {i}/{count} checked {s}");
            let name = s["name"].as_str().expect("a name").to_string();
            owners.entry(name).or_default().push(i as u32);
        }
        let metrics = d.get("/metrics").await.body;
        let info = format!("healthsweep_shard_info{{index=\"{i}\",count=\"{count}\"}} 1");
        assert!(metrics.contains(&info), "no {info} in:\n{metrics}");
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_check_every_service_exactly_once_and_a_fourth_takes_about_a_quarter() {
    let stop = CancellationToken::new();
    let mut mocks = Vec::with_capacity(PORTS);
    for _ in 0..PORTS {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        mocks.push(
            MockServer::start(any, Duration::from_millis(5), stop.clone())
                .await
                .expect("mock server starts"),
        );
    }
    let config = fleet_config(&mocks);
    let all: BTreeSet<String> = (0..FLEET).map(|i| format!("svc-{i:03}")).collect();

    let three = owners(&config, 3).await;
    let four = owners(&config, 4).await;
    for (n, owners) in [(3, &three), (4, &four)] {
        assert_eq!(
            owners.keys().cloned().collect::<BTreeSet<_>>(),
            all,
            "{n} replicas together check every service"
        );
        let twice: Vec<_> = owners.iter().filter(|(_, o)| o.len() != 1).collect();
        assert!(
            twice.is_empty(),
            "{n} replicas: checked more than once: {twice:?}"
        );
        let mut sizes = vec![0; n];
        for o in owners.values() {
            sizes[o[0] as usize] += 1;
        }
        assert!(
            sizes.iter().all(|&s| s > 0),
            "{n} replicas: every replica has a share: {sizes:?}"
        );
    }

    // Rendezvous hashing: going 3 -> 4 moves services only onto the new replica, and about
    // 1/4 of them. For a uniform hash the number moved is Binomial(300, 1/4): mean 75,
    // standard deviation 7.5; 3 standard deviations either side is the tolerance. (The names
    // are fixed, so the count itself is deterministic; the bound says the hash is fit.)
    let moved: Vec<&String> = all.iter().filter(|s| three[*s] != four[*s]).collect();
    for s in &moved {
        assert_eq!(four[*s], [3], "{s} moved between old replicas");
    }
    let ideal = FLEET / 4;
    assert!(
        moved.len().abs_diff(ideal) <= 22,
        "{} of {FLEET} moved going from 3 to 4 replicas; ideal {ideal}",
        moved.len()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_shard_wins_over_the_config_and_bad_shards_are_refused() {
    let dir = TempDir::new("shard-cli");
    let path = dir.path().join("healthsweep.toml");
    let config = format!(
        "{}{}{}",
        daemon_section("1s", "1s", "shard = \"0/2\""),
        service("a", "http://127.0.0.1:1/health"),
        service("b", "http://127.0.0.1:1/health"),
    );
    std::fs::write(&path, &config).expect("write config");

    // validate names the shard from the file.
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run validate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("valid (2 services; shard 0/2 checks "),
        "{said}"
    );

    // An index out of range is a usage error (exit 2), before anything starts.
    let out = std::process::Command::new(bin())
        .args(["run", "--shard", "3/3", "--config"])
        .arg(&path)
        .output()
        .expect("run healthsweep");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("numbered 0 to 2"), "{said}");

    let d = Daemon::with_config(&config)
        .run_args(&["--shard", "0/1"])
        .start();
    let status = d.json("/status").await;
    assert_eq!(status["shard"]["count"], 1, "{status}");
    assert_eq!(status["summary"]["total"], 2, "0/1 is the whole fleet");
}
