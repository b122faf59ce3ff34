//! End to end: services from where fleets are described (issue 12). file_sd files changed
//! every way config management changes them, an http_sd endpoint that fails every way one can,
//! a real DNS server (unbound) whose zone changes, and a real Prometheus reading the same
//! file_sd file and http_sd endpoint, agreeing on the targets.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::common::unbound::Unbound;
use crate::common::*;

/// The services of `/status` that a source found: name -> (url, state).
fn discovered(status: &serde_json::Value, source: &str) -> BTreeSet<String> {
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter(|s| s["source"] == source)
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Polls `/status` until `source` has found exactly `want`; returns the document.
async fn until_found(d: &Daemon, source: &str, want: &[&str]) -> serde_json::Value {
    let want = names(want);
    let (status, found) = d
        .poll_status(Duration::from_secs(10), |s| discovered(s, source) == want)
        .await;
    assert!(
        found,
        "{source} should have found {want:?}, has {:?}: {}",
        discovered(&status, source),
        status["discovery"]
    );
    status
}

fn source<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["discovery"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no source {name}: {status}"))
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn group(targets: &[String], labels: &str) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "{{\"targets\": [{}], \"labels\": {{{labels}}}}}",
        t.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_files_are_followed_through_every_way_they_change() {
    let stop = CancellationToken::new();
    let mut mocks = Vec::new();
    for _ in 0..5 {
        mocks.push(mock(&stop).await.addr.to_string());
    }
    let dir = TempDir::new("file-sd");
    let targets = dir.path().join("targets");
    std::fs::create_dir_all(&targets).expect("dir");
    let a = targets.join("a.json");
    let t = |i: usize| mocks[i].clone();
    std::fs::write(&a, format!("[{}]", group(&[t(1), t(2)], "\"team\": \"a\""))).expect("write");
    let config = format!(
        "{}[[discover]]\nname = \"files\"\nrefresh = \"1h\"\nfile = {{ paths = [\"{}\", \"{}\"] }}\n\
         [discover.service]\nname = \"{{target}}\"\nurl = \"http://{{target}}/health\"\n",
        daemon_section("500ms", "500ms", ""),
        targets.join("*.json").display(),
        targets.join("*.yml").display(),
    );
    let d = Daemon::start(&config);
    let status = until_found(&d, "files", &[&t(1), &t(2)]).await;
    assert_eq!(source(&status, "files")["last_refresh_successful"], true);
    let s1 = service_status(&status, &t(1));
    assert_eq!(s1["labels"]["team"], "a");
    // Let the first services be checked a few times: their counts must survive every change.
    let status = d.status_after_sweeps(3).await;
    let checked = service_status(&status, &t(1))["checks"]["ok"]
        .as_u64()
        .unwrap_or(0);
    assert!(checked >= 2, "{status}");

    // An atomic rename over the file (config management): one target more.
    write_atomically(
        &a,
        &format!("[{}]", group(&[t(1), t(2), t(3)], "\"team\": \"a\"")),
    );
    until_found(&d, "files", &[&t(1), &t(2), &t(3)]).await;
    // Written in place (truncate, then write): one target fewer.
    std::fs::write(&a, format!("[{}]", group(&[t(1), t(3)], "\"team\": \"a\""))).expect("write");
    let status = until_found(&d, "files", &[&t(1), &t(3)]).await;
    let now = service_status(&status, &t(1))["checks"]["ok"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        now >= checked,
        "t1 kept its counts through the changes: {now} < {checked}"
    );
    // A new file matching the glob, in YAML.
    let b = targets.join("b.yml");
    std::fs::write(
        &b,
        format!("- targets: ['{}']\n  labels:\n    team: b\n", t(4)),
    )
    .expect("write");
    let status = until_found(&d, "files", &[&t(1), &t(3), &t(4)]).await;
    assert_eq!(service_status(&status, &t(4))["labels"]["team"], "b");
    // Half-written: the file's last good targets stay, and the error says which file.
    std::fs::write(&b, "- targets: ['").expect("write");
    let (status, failed) = d
        .poll_status(Duration::from_secs(10), |s| {
            source(s, "files")["last_refresh_successful"] == false
        })
        .await;
    assert!(failed, "{}", status["discovery"]);
    assert!(
        source(&status, "files")["error"]
            .as_str()
            .is_some_and(|e| e.contains("b.yml")),
        "{}",
        status["discovery"]
    );
    assert_eq!(discovered(&status, "files"), names(&[&t(1), &t(3), &t(4)]));
    // Deleted: its targets go, and leave no series.
    std::fs::remove_file(&b).expect("remove");
    until_found(&d, "files", &[&t(1), &t(3)]).await;
    let metrics = d.get("/metrics").await.body;
    assert!(
        !metrics.contains(&format!("target=\"{}\"", t(4))),
        "no series left for t4"
    );
    assert!(metrics.contains("healthsweep_discovery_targets{source=\"files\"} 2"));
    stop.cancel();
}

/// How the test's http_sd endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sd {
    Good,
    Status500,
    WrongType,
    BadJson,
    Hang,
    /// A 200 whose body never ends.
    Endless,
}

/// An http_sd endpoint: answers `mode`'s way; its list is `body`; keeps the requests' heads.
struct SdServer {
    addr: SocketAddr,
    mode: Arc<Mutex<Sd>>,
    body: Arc<Mutex<String>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl SdServer {
    async fn start(body: String, stop: &CancellationToken) -> SdServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mode = Arc::new(Mutex::new(Sd::Good));
        let body = Arc::new(Mutex::new(body));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (m, b, h) = (mode.clone(), body.clone(), heads.clone());
        let addr = serve_each(
            any_loopback_port(),
            move |mut s: tokio::net::TcpStream| {
                let (m, b, h) = (m.clone(), b.clone(), h.clone());
                async move {
                    let mut buf = vec![0u8; 8192];
                    let Ok(n) = s.read(&mut buf).await else { return };
                    h.lock().expect("lock").push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let mode = *m.lock().expect("lock");
                    let body = b.lock().expect("lock").clone();
                    let (status, ctype, body) = match mode {
                        Sd::Good => ("200 OK", "application/json", body),
                        Sd::Status500 => ("500 Internal Server Error", "application/json", "[]".into()),
                        Sd::WrongType => ("200 OK", "text/html", "<html>".into()),
                        Sd::BadJson => ("200 OK", "application/json", "[{\"targets\": [".into()),
                        Sd::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Sd::Endless => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[";
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("{},", group(&["10.0.0.1:80".to_string()], "")).repeat(1000);
                            while s.write_all(chunk.as_bytes()).await.is_ok() {}
                            return;
                        }
                    };
                    let r = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(r.as_bytes()).await;
                }
            },
            stop,
        )
        .await;
        SdServer {
            addr,
            mode,
            body,
            heads,
        }
    }

    fn set(&self, mode: Sd) {
        *self.mode.lock().expect("lock") = mode;
    }
}

/// Targets and labels are whatever the file says: label values that need escaping keep
/// `/metrics` valid, names Prometheus would refuse are dropped, and targets no service can be
/// made of (a '/' or a control character in the name, a name too long) are left out, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_and_labels_leave_metrics_valid_and_are_counted() {
    if !needs(&[Tool::Promtool]) {
        return;
    }
    let stop = CancellationToken::new();
    let target = mock(&stop).await.addr.to_string();
    let dir = TempDir::new("file-sd-hostile");
    let file = dir.path().join("t.json");
    let long = format!("{}:80", "h".repeat(5000));
    let groups = serde_json::json!([
        {
            "targets": [target, format!("{target}/x"), "bell\u{7}:1", long],
            "labels": {
                "team": "a\"b\\c\nd }",
                "bad-name": "x",
                "job": "reserved",
                "__meta_kubernetes_pod": "dropped quietly"
            }
        }
    ]);
    std::fs::write(&file, groups.to_string()).expect("write");
    let config = format!(
        "{}[[discover]]\nname = \"files\"\nfile = {{ paths = [\"{}\"] }}\n",
        daemon_section("500ms", "500ms", ""),
        file.display()
    );
    let d = Daemon::start(&config);
    let status = until_found(&d, "files", &[&target]).await;
    let status = if service_status(&status, &target)["state"] == "up" {
        status
    } else {
        d.status_after_sweeps(2).await
    };
    let svc = service_status(&status, &target);
    assert_eq!(svc["labels"]["team"], "a\"b\\c\nd }", "{svc}");
    assert_eq!(svc["labels"].as_object().map(|l| l.len()), Some(1), "{svc}");
    let files = source(&status, "files");
    assert_eq!(files["targets_rejected"], 3, "{files}");
    assert_eq!(files["labels_dropped"], 2, "{files}");
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains(r#"team="a\"b\\c\nd }""#),
        "the value escaped as the exposition format says"
    );
    promtool_check_metrics(&metrics);
    assert!(d.logs_containing("panicked").is_empty());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_sd_endpoint_that_fails_any_way_keeps_the_last_good_list_and_says_why() {
    let stop = CancellationToken::new();
    let mut mocks = Vec::new();
    for _ in 0..3 {
        mocks.push(mock(&stop).await.addr.to_string());
    }
    let list = |n: usize| format!("[{}]", group(&mocks[..n], "\"env\": \"prod\""));
    let sd = SdServer::start(list(2), &stop).await;
    let config = format!(
        "{}[[discover]]\nname = \"sd\"\nrefresh = \"1s\"\nhttp = {{ url = \"http://{}/targets\", timeout = \"500ms\", max_body_bytes = 1048576 }}\n",
        daemon_section("1s", "1s", ""),
        sd.addr
    );
    let d = Daemon::start(&config);
    let two: Vec<&str> = mocks[..2].iter().map(String::as_str).collect();
    until_found(&d, "sd", &two).await;
    let head = sd.heads.lock().expect("lock")[0].clone();
    assert!(
        head_header(&head, "x-prometheus-refresh-interval-seconds") == Some("1"),
        "{head}"
    );
    for (mode, says) in [
        (Sd::Status500, "status 500"),
        (Sd::WrongType, "text/html"),
        (Sd::BadJson, "not target groups"),
        (Sd::Hang, "timed out"),
        (Sd::Endless, "body_too_large"),
    ] {
        sd.set(mode);
        let (status, failed) = d
            .poll_status(Duration::from_secs(10), |s| {
                source(s, "sd")["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(says))
            })
            .await;
        assert!(failed, "{mode:?}: {}", status["discovery"]);
        assert_eq!(source(&status, "sd")["last_refresh_successful"], false);
        assert_eq!(
            discovered(&status, "sd"),
            names(&two),
            "{mode:?} keeps the last good list"
        );
    }
    // Good again, with a list of three.
    *sd.body.lock().expect("lock") = list(3);
    sd.set(Sd::Good);
    let three: Vec<&str> = mocks.iter().map(String::as_str).collect();
    let status = until_found(&d, "sd", &three).await;
    assert_eq!(source(&status, "sd")["last_refresh_successful"], true);
    assert!(
        source(&status, "sd")["refresh_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 4
    );
    // A reload whose source fails at once keeps the last good list.
    sd.set(Sd::Status500);
    d.signal("HUP");
    let status = d.status_at_generation(2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = d.json("/status").await;
    assert_eq!(
        discovered(&after, "sd"),
        names(&three),
        "{}",
        status["discovery"]
    );
    stop.cancel();
}

/// An http_sd request carries credentials (in its URL and a header from the environment):
/// they reach the server and never `/status`, `/metrics` or the log, whatever fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_sd_sources_credentials_reach_its_server_and_nothing_else() {
    let stop = CancellationToken::new();
    let target = mock(&stop).await.addr.to_string();
    let sd = SdServer::start(
        format!("[{}]", group(std::slice::from_ref(&target), "")),
        &stop,
    )
    .await;
    let config = format!(
        "{}[[discover]]\nname = \"sd\"\nrefresh = \"1s\"\n\
         http = {{ url = \"http://sd-user:url-s3cret@{}/targets\", timeout = \"500ms\", headers = {{ X-Token = \"${{SD_TOKEN}}\" }} }}\n\
         [[discover]]\nname = \"gone\"\nrefresh = \"1s\"\n\
         http = {{ url = \"http://sd-user:url-s3cret@127.0.0.1:{}/targets\", headers = {{ X-Token = \"${{SD_TOKEN}}\" }} }}\n",
        daemon_section("1s", "1s", ""),
        sd.addr,
        closed_port()
    );
    let d = Daemon::with_config(&config)
        .env("SD_TOKEN", "hdr-s3cret")
        .start();
    until_found(&d, "sd", &[&target]).await;
    let head = sd.heads.lock().expect("lock")[0].clone();
    assert_eq!(head_header(&head, "x-token"), Some("hdr-s3cret"), "{head}");
    assert!(
        head_header(&head, "authorization").is_some_and(|a| a.starts_with("Basic ")),
        "{head}"
    );
    let mut seen = Vec::new();
    for (mode, says) in [
        (Sd::Status500, "status 500"),
        (Sd::BadJson, "not target groups"),
        (Sd::Hang, "timed out"),
    ] {
        sd.set(mode);
        let (status, failed) = d
            .poll_status(Duration::from_secs(10), |s| {
                source(s, "sd")["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(says))
            })
            .await;
        assert!(failed, "{mode:?}: {}", status["discovery"]);
        seen.push(status.to_string());
        seen.push(d.get("/metrics").await.body);
        sd.set(Sd::Good);
        let (status, good) = d
            .poll_status(Duration::from_secs(10), |s| {
                source(s, "sd")["last_refresh_successful"] == true
            })
            .await;
        assert!(good, "{}", status["discovery"]);
    }
    let status = d.json("/status").await;
    assert!(
        source(&status, "gone")["error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{}",
        status["discovery"]
    );
    seen.push(status.to_string());
    for text in &seen {
        assert!(!text.contains("s3cret"), "a secret shown: {text}");
    }
    assert!(
        d.logs_containing("s3cret").is_empty(),
        "{:?}",
        d.logs_containing("s3cret")
    );
    assert!(!d.logs_containing("discovery refresh failed").is_empty());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_service_wins_its_name_and_validate_discover_lists_what_would_be_checked() {
    let dir = TempDir::new("sd-validate");
    let file = dir.path().join("t.json");
    std::fs::write(
        &file,
        r#"[{"targets": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], "labels": {"__meta_x": "y", "bad-label": "z"}}]"#,
    )
    .expect("write");
    let config = dir.path().join("healthsweep.toml");
    std::fs::write(
        &config,
        format!(
            "[[service]]\nname = \"127.0.0.1:1\"\nurl = \"http://127.0.0.1:1/static\"\n\
             [[discover]]\nname = \"f\"\nfile = {{ paths = [\"{}\"] }}\n",
            file.display()
        ),
    )
    .expect("write");
    let path = config.to_str().expect("utf-8");
    let (code, out, _) = run_cli(["validate", "--config", path]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 discovery source"), "{out}");
    let (code, out, err) = run_cli(["validate", "--config", path, "--discover"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("source f (file): 2 services (ok)"), "{out}");
    assert!(
        out.contains("127.0.0.1:2  http://127.0.0.1:2/health"),
        "{out}"
    );
    assert!(
        out.contains("exists already"),
        "the duplicate is named: {out}"
    );
    let d = Daemon::at(config, dir).start();
    let status = until_found(&d, "f", &["127.0.0.1:2", "127.0.0.1:3"]).await;
    assert_eq!(
        service_status(&status, "127.0.0.1:1")["url"],
        "http://127.0.0.1:1/static"
    );
    let f = source(&status, "f");
    assert_eq!(
        (
            f["duplicates_skipped"].as_u64(),
            f["labels_dropped"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // Logged once, not every composition.
    assert_eq!(d.logs_containing("exists already").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_dns_server_s_srv_and_a_records_become_services_and_follow_its_zone() {
    if !needs(&[Tool::Unbound]) {
        return;
    }
    let dns = Unbound::start(&[
        "_http._tcp.orders.svc.test. 1 IN SRV 0 0 18081 localhost.",
        "_http._tcp.orders.svc.test. 1 IN SRV 0 0 18082 localhost.",
        "web.svc.test. 1 IN A 127.0.0.11",
        "web.svc.test. 1 IN A 127.0.0.12",
        // RFC 2782: a target of \".\" means the service is decidedly not there.
        "_http._tcp.gone.svc.test. 1 IN SRV 0 0 0 .",
    ])
    .await;
    let config = format!(
        "{}[[discover]]\nname = \"orders\"\nrefresh = \"1s\"\n\
         dns = {{ names = [\"_http._tcp.orders.svc.test\", \"_http._tcp.gone.svc.test\"], server = \"{1}\" }}\n\
         [[discover]]\nname = \"web\"\nrefresh = \"1s\"\n\
         dns = {{ names = [\"web.svc.test\", \"broken.svc.test\"], type = \"A\", port = 8080, server = \"{1}\" }}\n\
         [discover.service]\nname = \"web-{{host}}\"\n",
        daemon_section("1s", "1s", ""),
        dns.addr
    );
    let d = Daemon::start(&config);
    let status = until_found(&d, "orders", &["localhost:18081", "localhost:18082"]).await;
    let orders = source(&status, "orders");
    assert_eq!(
        orders["targets_rejected"], 0,
        "the \".\" target is no target: {orders}"
    );
    assert_eq!(orders["last_refresh_successful"], true, "{orders}");
    assert_eq!(
        service_status(&status, "localhost:18081")["url"],
        "http://localhost:18081/health"
    );
    let status = until_found(&d, "web", &["web-127.0.0.11", "web-127.0.0.12"]).await;
    // The refused name fails every refresh: the source says so, the others stand.
    let web = source(&status, "web");
    assert!(
        web["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.svc.test")),
        "{web}"
    );
    // The zone changes: a record added, one removed, the A name made NXDOMAIN.
    dns.reload(&[
        "_http._tcp.orders.svc.test. 1 IN SRV 0 0 18082 localhost.",
        "_http._tcp.orders.svc.test. 1 IN SRV 0 0 18083 localhost.",
    ]);
    until_found(&d, "orders", &["localhost:18082", "localhost:18083"]).await;
    until_found(&d, "web", &[]).await;
    // The server gone: queries time out, the last good targets stay.
    drop(dns);
    let (status, failed) = d
        .poll_status(Duration::from_secs(15), |s| {
            source(s, "orders")["last_refresh_successful"] == false
        })
        .await;
    assert!(failed, "{}", status["discovery"]);
    assert_eq!(
        discovered(&status, "orders"),
        names(&["localhost:18082", "localhost:18083"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reading_the_same_file_sd_and_http_sd_agrees_on_the_targets() {
    if !needs(&[Tool::Prometheus]) {
        return;
    }
    let stop = CancellationToken::new();
    let dir = TempDir::new("prom-sd");
    let file = dir.path().join("targets.json");
    std::fs::write(
        &file,
        r#"[{"targets": ["127.0.0.1:18101", "127.0.0.1:18102"], "labels": {"env": "prod"}},
            {"targets": ["127.0.0.1:18103"], "labels": {"env": "dev", "__meta_x": "1"}}]"#,
    )
    .expect("write");
    let sd = SdServer::start(
        r#"[{"targets": ["127.0.0.1:18201", "127.0.0.1:18202"], "labels": {"team": "a"}}]"#.into(),
        &stop,
    )
    .await;
    let prometheus_yml = format!(
        "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: files\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n  - job_name: http\n    http_sd_configs:\n      - url: 'http://{}/targets'\n        refresh_interval: 1s\n",
        file.display(),
        sd.addr
    );
    let prom = crate::prometheus::Prometheus::with_config(&prometheus_yml, &[]).await;
    let config = format!(
        "{}[[discover]]\nname = \"files\"\nfile = {{ paths = [\"{}\"] }}\n\
         [[discover]]\nname = \"http\"\nrefresh = \"1s\"\nhttp = {{ url = \"http://{}/targets\" }}\n",
        daemon_section("1s", "1s", ""),
        file.display(),
        sd.addr
    );
    let d = Daemon::start(&config);
    let ours = until_found(
        &d,
        "files",
        &["127.0.0.1:18101", "127.0.0.1:18102", "127.0.0.1:18103"],
    )
    .await;
    let ours_http = until_found(&d, "http", &["127.0.0.1:18201", "127.0.0.1:18202"]).await;
    // Prometheus' view: /api/v1/targets, by job (= our source), the address and the labels.
    let theirs_of = |v: serde_json::Value| -> BTreeSet<(String, String)> {
        v["data"]["activeTargets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t["labels"]["job"].as_str().unwrap_or("").to_string(),
                            t["discoveredLabels"]["__address__"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut theirs = theirs_of(prom.api("/api/v1/targets").await);
    while theirs.len() < 5 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        theirs = theirs_of(prom.api("/api/v1/targets").await);
    }
    let mut mine = BTreeSet::new();
    for (doc, job) in [(&ours, "files"), (&ours_http, "http")] {
        for name in discovered(doc, job) {
            mine.insert((job.to_string(), name));
        }
    }
    assert_eq!(
        mine, theirs,
        "healthsweep and Prometheus see the same targets"
    );
    // And the same labels for one of them.
    let s = service_status(&ours, "127.0.0.1:18103");
    assert_eq!(s["labels"]["env"], "dev");
    assert!(s["labels"].get("__meta_x").is_none());
    stop.cancel();
}
