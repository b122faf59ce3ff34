//! Alerts that do not storm: dependencies (`blocked_by`, `healthsweep_target_blocked`),
//! maintenance windows, and the shipped rules end to end with the real Prometheus and
//! Alertmanager.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_dependency_blocks_its_dependents_through_the_chain() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let down = format!("http://127.0.0.1:{}/health", closed_port());
    let mut text = daemon_section("200ms", "150ms", "");
    text.push_str(&service("postgres", &down));
    text.push_str(&format!(
        "[[service]]\nname = \"cache\"\nurl = \"{}\"\ndepends_on = [\"postgres\"]\n\n",
        up.url("/health")
    ));
    text.push_str(&format!(
        "[[service]]\nname = \"api\"\nurl = \"{down}\"\ndepends_on = [\"cache\"]\n\n"
    ));
    text.push_str(&service("alone", &down));
    let d = Daemon::start(&text);
    let status = d.status_after_sweeps(2).await;
    let blocked = |name: &str| service_status(&status, name)["blocked_by"].clone();
    assert_eq!(
        blocked("api"),
        serde_json::json!(["postgres"]),
        "through cache"
    );
    assert_eq!(
        blocked("cache"),
        serde_json::json!(["postgres"]),
        "up, but blocked"
    );
    assert_eq!(blocked("postgres"), serde_json::json!([]));
    assert_eq!(
        service_status(&status, "api")["state"],
        "down",
        "still its own state"
    );
    let metrics = d.get("/metrics").await.body;
    let blocked_series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("healthsweep_target_blocked{"))
        .collect();
    assert_eq!(
        blocked_series.len(),
        2,
        "only services with dependencies: {blocked_series:?}"
    );
    assert!(
        metrics.contains("healthsweep_target_blocked{target=\"api\"} 1"),
        "{metrics}"
    );
    promtool_check_metrics(&metrics);
    let detail = d.json("/status/api").await;
    assert_eq!(detail["config"]["depends_on"], serde_json::json!(["cache"]));

    // A reload that brings a cycle is refused, naming it; the running config stays.
    d.write_config(&text.replace(
        "name = \"postgres\"\n",
        "name = \"postgres\"\ndepends_on = [\"api\"]\n",
    ));
    d.signal("HUP");
    let (status, found) = d
        .poll_status(Duration::from_secs(10), |s| {
            s["config"]["last_reload_successful"] == false
        })
        .await;
    assert!(found, "{status}");
    let error = status["config"]["last_reload_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("cycle: postgres → api → cache → postgres"),
        "{error}"
    );
    stop.cancel();
}

/// Health endpoints whose answer the test switches: `/NAME` answers 200 while NAME is up.
#[derive(Clone, Default)]
struct Switches(Arc<Mutex<HashMap<String, bool>>>);

impl Switches {
    fn set(&self, name: &str, up: bool) {
        self.0.lock().expect("lock").insert(name.to_string(), up);
    }

    async fn serve(self, stop: &CancellationToken) -> SocketAddr {
        let answer = move |path: String| {
            let up = self
                .0
                .lock()
                .expect("lock")
                .get(path.trim_start_matches('/'))
                .copied()
                .unwrap_or(true);
            if up { (200, "ok") } else { (500, "down") }
        };
        serve_http(stop, move |_method, path, _body| {
            let (status, body) = answer(path);
            (status, body.to_string())
        })
        .await
    }
}

/// A hyper HTTP/1.1 server on a free loopback port: `handle(method, path, body)` answers.
async fn serve_http<F>(stop: &CancellationToken, handle: F) -> SocketAddr
where
    F: Fn(String, String, Vec<u8>) -> (u16, String) + Send + Sync + Clone + 'static,
{
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = stop.clone();
    tokio::spawn(async move {
        while let Some(stream) = healthsweep::mock::next_connection(&listener, &stop).await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let handle = handle.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let (status, text) = handle(method, path, body);
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(text),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One notification: when it came, and its alerts' (status, target).
type Notification = (Instant, Vec<(String, String)>);

/// What the webhook received.
#[derive(Clone, Default)]
struct Webhook(Arc<Mutex<Vec<Notification>>>);

impl Webhook {
    async fn serve(&self, stop: &CancellationToken) -> SocketAddr {
        let got = self.0.clone();
        serve_http(stop, move |_m, _p, body| {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let alerts = doc["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            (
                                x["status"].as_str().unwrap_or("").to_string(),
                                x["labels"]["target"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.lock().expect("lock").push((Instant::now(), alerts));
            (200, String::new())
        })
        .await
    }

    /// Notifications that carried `target` with `status`, and when each came.
    fn times(&self, status: &str, target: &str) -> Vec<Instant> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, a)| a.iter().any(|(s, t)| s == status && t == target))
            .map(|(at, _)| *at)
            .collect()
    }

    async fn wait(&self, status: &str, target: &str, within: Duration) -> bool {
        wait_for(within, || async { !self.times(status, target).is_empty() }).await
    }

    fn all(&self) -> String {
        format!(
            "{:?}",
            self.0
                .lock()
                .expect("lock")
                .iter()
                .map(|(_, a)| a)
                .collect::<Vec<_>>()
        )
    }
}

/// The Debian `prometheus-alertmanager` on a free loopback port with `config`, killed on drop.
struct Alertmanager {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Alertmanager {
    async fn start(config: &str) -> Alertmanager {
        let dir = TempDir::new("alertmanager");
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, config).expect("write");
        let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
        let mut child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // No cluster: a single instance, and no port of its own for gossip.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("prometheus-alertmanager is installed (.ci/run installs it)");
        let ready = wait_for(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && tokio::time::timeout(Duration::from_secs(2), http(addr, "GET", "/-/ready"))
                    .await
                    .is_ok_and(|r| r.status == 200)
        })
        .await;
        if !ready || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "alertmanager did not become ready:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Alertmanager {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_and_alertmanager_one_page_per_root_cause_and_none_in_maintenance() {
    if !needs(&[Tool::Prometheus, Tool::Alertmanager]) {
        return;
    }
    use crate::prometheus::{Prometheus, deploy, replace_once};
    let stop = CancellationToken::new();
    let switches = Switches::default();
    switches.set("patched", false);
    let health = switches.clone().serve(&stop).await;
    let webhook = Webhook::default();
    let hook = webhook.serve(&stop).await;

    // A window in the config, in force now and ending about 20 s from now.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("now")
        .as_secs();
    let start = (now / 60) * 60 - 60;
    let ends = now + 20;
    let mut config = daemon_section("500ms", "400ms", "reload_api = true\n");
    config.push_str(&format!(
        "[[maintenance]]\nname = \"patching\"\ntargets = {{ names = [\"patched\"] }}\nstart = \"{:02}:{:02}\"\nduration = \"{}s\"\n\n",
        start / 3600 % 24,
        start / 60 % 60,
        ends - start
    ));
    let url = |n: &str| format!("http://{health}/{n}");
    for name in ["billing", "postgres", "patched", "upgrading"] {
        config.push_str(&service(name, &url(name)));
    }
    for i in 1..=5 {
        config.push_str(&format!(
            "[[service]]\nname = \"dep{i}\"\nurl = \"{}\"\ndepends_on = [\"postgres\"]\n\n",
            url(&format!("dep{i}"))
        ));
    }
    let d = Daemon::start(&config);
    d.status_after_sweeps(2).await;

    // The shipped files, with short timings and the test's addresses.
    let mut am = std::fs::read_to_string(deploy("alertmanager/alertmanager.yml")).expect("read");
    am = replace_once(&am, "group_wait: 30s", "group_wait: 1s");
    am = replace_once(&am, "group_interval: 5m", "group_interval: 2s");
    am = replace_once(
        &am,
        "http://127.0.0.1:5001/alerts",
        &format!("http://{hook}/alerts"),
    );
    let am = Alertmanager::start(&am).await;
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml"))
        .expect("rules")
        .replace("for: 5m", "for: 2s")
        .replace("for: 10m", "for: 2s");
    let prometheus = Prometheus::with_config(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n\
             scrape_configs:\n  - job_name: healthsweep\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{}']\n",
            am.addr, d.addr
        ),
        &[("alerts.yml", &rules)],
    )
    .await;

    // 3b: an ad-hoc window for "upgrading", opened through the API before it goes down.
    let body = r#"{"targets": {"names": ["upgrading"]}, "duration": "10m", "reason": "v2"}"#;
    let r = raw(
        d.addr,
        format!(
            "POST /-/maintenance HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().expect("an id").to_string();

    // 1, 2, 3b: billing goes down; postgres goes down with its 5 dependents; upgrading too.
    for name in [
        "billing",
        "postgres",
        "upgrading",
        "dep1",
        "dep2",
        "dep3",
        "dep4",
        "dep5",
    ] {
        switches.set(name, false);
    }
    let within = Duration::from_secs(40);
    assert!(
        webhook.wait("firing", "billing", within).await,
        "billing pages: {}",
        webhook.all()
    );
    assert!(
        webhook.wait("firing", "postgres", within).await,
        "postgres pages: {}",
        webhook.all()
    );
    let status = d.json("/status").await;
    assert_eq!(
        service_status(&status, "dep3")["blocked_by"],
        serde_json::json!(["postgres"])
    );
    assert_eq!(
        service_status(&status, "upgrading")["maintenance"]["id"],
        id.as_str()
    );
    assert_eq!(
        service_status(&status, "patched")["maintenance"]["name"],
        "patching"
    );
    // Long enough for anything else to have fired too (for: 2s, evaluation every 1 s).
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 1: the recovery arrives.
    switches.set("billing", true);
    assert!(
        webhook.wait("resolved", "billing", within).await,
        "resolution: {}",
        webhook.all()
    );

    // 3b: the window ends early with upgrading still down: it pages then.
    let r = raw(
        d.addr,
        format!("DELETE /-/maintenance/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ended = Instant::now();
    assert!(
        webhook.wait("firing", "upgrading", within).await,
        "after its window: {}",
        webhook.all()
    );
    assert!(webhook.times("firing", "upgrading")[0] > ended);

    // 3a: the config's window ends with patched still down: it pages then, not before.
    assert!(
        webhook.wait("firing", "patched", within).await,
        "after its window: {}",
        webhook.all()
    );
    let paged = webhook.times("firing", "patched")[0];
    let window_end = SystemTime::UNIX_EPOCH + Duration::from_secs(ends);
    assert!(
        SystemTime::now() - paged.elapsed() >= window_end,
        "patched paged before its window ended"
    );

    // Exactly one page each, none for the blocked dependents.
    for target in ["billing", "postgres", "upgrading", "patched"] {
        assert_eq!(
            webhook.times("firing", target).len(),
            1,
            "{target}: {}",
            webhook.all()
        );
    }
    for i in 1..=5 {
        assert!(
            webhook.times("firing", &format!("dep{i}")).is_empty(),
            "dep{i}: {}",
            webhook.all()
        );
    }
    drop(prometheus);
    stop.cancel();
}

#[test]
fn the_shipped_alertmanager_config_passes_amtool() {
    if !needs(&[Tool::Alertmanager]) {
        return;
    }
    let (ok, said) = run_tool(
        std::process::Command::new("amtool")
            .arg("check-config")
            .arg(crate::prometheus::deploy("alertmanager/alertmanager.yml")),
        "apt-get install prometheus-alertmanager",
    );
    assert!(ok, "{said}");
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> HttpResponse {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_api_is_strict_guarded_and_its_windows_survive_a_restart() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let state = TempDir::new("state");
    let base = |extra: &str| {
        format!(
            "{}{}[[maintenance]]\nname = \"nightly\"\ntargets = {{ groups = [\"batch\"] }}\nstart = \"03:00\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"\n\n",
            daemon_section(
                "200ms",
                "150ms",
                &format!(
                    "state_dir = {:?}\n{extra}",
                    state.path().display().to_string()
                )
            ),
            service("api", &up.url("/health")),
        )
    };
    // Off unless reload is on, as reload.
    let d = Daemon::start(&base(""));
    let r = post(d.addr, "/-/maintenance", "{}").await;
    assert_eq!(r.status, 403, "{}", r.body);
    drop(d);

    let text = base("reload_api = true\n");
    let mut d = Daemon::start(&text);
    for (body, want) in [
        ("not json", "must be JSON"),
        (
            r#"{"targets": {}, "duration": "5m"}"#,
            "would cover nothing",
        ),
        (
            r#"{"targets": {"names": ["api"]}, "duration": "forever"}"#,
            "must be a duration from",
        ),
        (
            r#"{"targets": {"names": ["api"]}, "duration": "8d"}"#,
            "must be a duration from",
        ),
        (
            r#"{"targets": {"names": ["api"]}, "duration": "5m", "start": "soon"}"#,
            "not an RFC 3339",
        ),
        (
            r#"{"targets": {"names": ["api"]}, "duration": "5m", "colour": "red"}"#,
            "unknown field",
        ),
    ] {
        let r = post(d.addr, "/-/maintenance", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(want), "{body}: {}", r.body);
    }
    let huge = format!(
        r#"{{"targets": {{"names": ["api"]}}, "duration": "5m", "reason": "{}"}}"#,
        "x".repeat(100_000)
    );
    assert_eq!(post(d.addr, "/-/maintenance", &huge).await.status, 413);
    let r = post(
        d.addr,
        "/-/maintenance",
        r#"{"targets": {"names": ["api"]}, "duration": "1h", "reason": "db upgrade"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_string();
    let status = d.status_after_sweeps(1).await;
    assert_eq!(
        service_status(&status, "api")["maintenance"]["reason"],
        "db upgrade"
    );
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains("healthsweep_target_maintenance{target=\"api\"} 1"),
        "{metrics}"
    );
    let del = |addr: SocketAddr, path: String| async move {
        raw(
            addr,
            format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    };
    assert_eq!(del(d.addr, "/-/maintenance/nope".into()).await.status, 404);
    assert_eq!(
        del(d.addr, "/-/maintenance/nightly".into()).await.status,
        409,
        "scheduled: in the config"
    );

    // kill -9 and back: the window is still there (stored within a second of opening it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.signal("KILL");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    let d = Daemon::start(&text);
    let list = d.json("/-/maintenance").await;
    let windows = list["windows"].as_array().expect("windows");
    assert!(
        windows
            .iter()
            .any(|w| w["id"] == id.as_str() && w["active"] == true),
        "{list}"
    );
    assert!(
        windows
            .iter()
            .any(|w| w["name"] == "nightly" && w["kind"] == "scheduled"),
        "the next nightly window: {list}"
    );
    assert_eq!(
        del(d.addr, format!("/-/maintenance/{id}")).await.status,
        200
    );
    let after = d.json("/-/maintenance").await;
    assert!(
        !after["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .any(|w| w["id"] == id.as_str())
    );
    stop.cancel();
}
