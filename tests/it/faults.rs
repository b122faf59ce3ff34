//! Faults of the environment around the real daemon: its config file vanishes, turns
//! unreadable, is caught half-written, is swapped by symlink the way Kubernetes updates a
//! ConfigMap, or is reloaded 50 times in a second. The running config must survive every bad
//! state, and a good final state must be picked up.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use tokio_util::sync::CancellationToken;

/// `POST /-/reload` and its answer: the reload is done when it returns.
async fn reload(d: &Daemon) -> HttpResponse {
    http(d.addr, "POST", "/-/reload").await
}

/// Asserts a reload was refused with `status`, mentioning `needle`, and nothing changed.
async fn assert_refused(d: &Daemon, status: u16, needle: &str, what: &str) {
    let r = reload(d).await;
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let problems = r.json()["problems"].to_string();
    assert!(problems.contains(needle), "{what}: {problems}");
    let doc = d.json("/status").await;
    assert_eq!(doc["generation"], 1, "{what}: the running config stays");
    assert_eq!(doc["config"]["last_reload_successful"], false, "{what}");
    assert!(
        has_service(&doc, "a") && has_service(&doc, "b"),
        "{what}: {doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_unreadable_or_half_written_config_keeps_the_running_one() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let good = format!(
        "{}{}{}",
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", &m.url("/health")),
        service("b", &m.url("/health")),
    );
    let d = Daemon::start(&good);
    d.status_after_sweeps(1).await;
    let path = d.config_path.clone();

    std::fs::remove_file(&path).expect("remove config");
    assert_refused(&d, 500, "cannot read config", "vanished").await;

    std::fs::create_dir(&path).expect("a directory where the file was");
    assert_refused(&d, 500, "cannot read config", "a directory").await;
    std::fs::remove_dir(&path).expect("remove directory");

    std::fs::write(&path, b"[daemon]\ninterval = \"\xff\xfe\"\n").expect("write");
    assert_refused(&d, 500, "cannot read config", "not UTF-8").await;

    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, &good).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        assert_refused(&d, 500, "Permission denied", "mode 000").await;
        std::fs::remove_file(&path).expect("remove");
    }

    // Caught between truncate and write: empty, then cut off in the middle of a line.
    std::fs::write(&path, "").expect("truncate");
    assert_refused(&d, 422, "empty", "truncated to nothing").await;
    let cut = good.len() - 20;
    std::fs::write(&path, &good[..cut]).expect("half write");
    assert_refused(&d, 422, "healthsweep.toml:", "half-written").await;

    // Probing never stopped, and a good final state is picked up at once.
    let number = d.json("/status").await["sweep"]["number"]
        .as_u64()
        .expect("number");
    d.status_after_sweeps(number + 1).await;
    d.write_config(&format!("{good}{}", service("c", &m.url("/health"))));
    let r = reload(&d).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = d.json("/status").await;
    assert_eq!(doc["generation"], 2);
    assert_eq!(doc["config"]["last_reload_successful"], true);
    assert_eq!(service_status(&doc, "a")["state"], "up", "a kept its state");
    assert_eq!(service_status(&doc, "c")["state"], "unknown");
    stop.cancel();
}

/// Points `link` at `target` atomically: a new symlink renamed over the old one, as the kubelet
/// swaps a ConfigMap volume's `..data`.
fn swap_symlink(dir: &Path, link: &str, target: &str) {
    let tmp = dir.join(format!("{link}_tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join(link)).expect("rename symlink");
}

fn write_version(dir: &Path, version: &str, config: &str) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).expect("version dir");
    std::fs::write(v.join("healthsweep.toml"), config).expect("write version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_followed_and_a_bad_or_dangling_one_is_not() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let dir = TempDir::new("configmap");
    let root = dir.path().to_path_buf();
    let base = format!(
        "{}{}{}",
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", &m.url("/health")),
        service("b", &m.url("/health")),
    );
    // The layout a ConfigMap volume has: healthsweep.toml -> ..data/healthsweep.toml,
    // ..data -> ..<timestamp> (a directory holding this version's files).
    write_version(&root, "..v1", &base);
    swap_symlink(&root, "..data", "..v1");
    std::os::unix::fs::symlink("..data/healthsweep.toml", root.join("healthsweep.toml"))
        .expect("symlink the file");
    let d = Daemon::at(root.join("healthsweep.toml"), dir).start();
    d.status_after_sweeps(1).await;

    write_version(&root, "..v2", "[daemon]\ninterval = \"soon\"\n");
    swap_symlink(&root, "..data", "..v2");
    assert_refused(&d, 422, "interval", "a bad version").await;

    // The kubelet removes old versions; a link to one that is gone dangles.
    swap_symlink(&root, "..data", "..v3-removed");
    assert_refused(&d, 500, "cannot read config", "a dangling link").await;

    write_version(
        &root,
        "..v4",
        &format!("{base}{}", service("c", &m.url("/health"))),
    );
    swap_symlink(&root, "..data", "..v4");
    let _ = std::fs::remove_dir_all(root.join("..v1"));
    let r = reload(&d).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = d.json("/status").await;
    assert_eq!(doc["generation"], 2);
    assert!(has_service(&doc, "c"), "{doc}");
    assert_eq!(service_status(&doc, "a")["state"], "up");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sighups_in_a_second_lose_nothing_and_the_last_good_file_wins() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let section = daemon_section("300ms", "300ms", "");
    let kept = format!(
        "{section}{}{}",
        service("keep-1", &m.url("/health")),
        service("keep-2", &m.url("/fail/500")),
    );
    let d = Daemon::start(&kept);
    let before = d.status_after_sweeps(3).await;
    let since = service_status(&before, "keep-1")["since"].clone();
    let successes = service_status(&before, "keep-1")["consecutive_successes"]
        .as_u64()
        .expect("count");

    // Good and bad files in turn, a SIGHUP after each write, 50 in about a second.
    for i in 0..50 {
        if i % 2 == 0 {
            d.write_config(&format!(
                "{kept}{}",
                service(&format!("extra-{i}"), &m.url("/health"))
            ));
        } else {
            d.write_config(&format!("{kept}[[service]]\nname = \"broken-{i}\"\n"));
        }
        d.signal("HUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = format!("{kept}{}", service("final", &m.url("/health")));
    d.write_config(&last);
    d.signal("HUP");

    let (doc, found) = d
        .poll_status(Duration::from_secs(10), |s| {
            has_service(s, "final") && s["config"]["last_reload_successful"] == true
        })
        .await;
    assert!(found, "the last good file was not picked up: {doc}");
    let names: Vec<_> = doc["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        names,
        ["keep-1", "keep-2", "final"],
        "nothing of the older files"
    );
    let keep1 = service_status(&doc, "keep-1");
    assert_eq!(
        keep1["since"], since,
        "state carried over every reload: {keep1}"
    );
    assert!(
        keep1["consecutive_successes"].as_u64().unwrap_or(0) >= successes,
        "{keep1}"
    );
    assert_eq!(service_status(&doc, "keep-2")["state"], "down");
    let generation = doc["generation"].as_u64().expect("generation");
    assert!(
        (2..=27).contains(&generation),
        "25 good files and the last one at most: {generation}"
    );
    // Still alive and still sweeping.
    let n = doc["sweep"]["number"].as_u64().expect("number");
    d.status_after_sweeps(n + 2).await;
    assert!(d.logs_containing("panicked").is_empty());
    stop.cancel();
}
