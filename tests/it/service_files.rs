//! End to end: `services_dir`. Services from every `*.toml` file of a directory are checked
//! beside the main file's; a reload re-reads the directory; a broken file rejects the reload
//! naming that file and line; `validate` lists problems in several files.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use healthsweep::mock::MockServer;
use tokio_util::sync::CancellationToken;

async fn mock(stop: &CancellationToken) -> MockServer {
    MockServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_millis(10),
        stop.clone(),
    )
    .await
    .expect("mock server starts")
}

/// Writes `content` at `dir/name` atomically (temporary file, then rename).
fn put(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

fn names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    names
}

/// POST /-/reload; the status and the JSON answer.
async fn reload(d: &Daemon) -> (u16, serde_json::Value) {
    let r = http(d.addr, "POST", "/-/reload").await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_every_file_of_services_dir_are_checked() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let dir = TempDir::new("services-dir");
    let d_path = dir.path().join("services.d");
    put(
        dir.path(),
        "healthsweep.toml",
        &format!(
            "{}[defaults]\nexpect_body_contains = \"ok\"\n\n{}",
            daemon_section("1s", "1s", "services_dir = \"services.d\""),
            service("main", &m.url("/health"))
        ),
    );
    put(
        &d_path,
        "orders.toml",
        &format!(
            "{}{}",
            service("orders-1", &m.url("/health")),
            service("orders-2", &m.url("/fail/body"))
        ),
    );
    put(
        &d_path,
        "search.toml",
        &service("search", &m.url("/health")),
    );
    put(&d_path, "notes.txt", &service("ignored", &m.url("/health")));
    let d = Daemon::at(dir.path().join("healthsweep.toml"), dir).start();

    let status = d.status_after_sweeps(1).await;
    assert_eq!(names(&status), ["main", "orders-1", "orders-2", "search"]);
    assert_eq!(status["shard"]["fleet_services"], 4);
    for up in ["main", "orders-1", "search"] {
        assert_eq!(service_status(&status, up)["state"], "up", "{up}: {status}");
    }
    // [defaults] of the main file apply: the body is read and checked in a services file too.
    let orders_2 = service_status(&status, "orders-2");
    assert_eq!(orders_2["state"], "down");
    assert_eq!(orders_2["last"]["reason"], "body_mismatch", "{orders_2}");
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains("probe_success{target=\"search\"} 1"),
        "{metrics}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_services_dir_and_a_broken_file_keeps_the_running_config() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let dir = TempDir::new("services-reload");
    let root = dir.path().to_path_buf();
    let d_path = root.join("services.d");
    put(
        &root,
        "healthsweep.toml",
        &daemon_section(
            "1s",
            "1s",
            "services_dir = \"services.d\"\nreload_api = true",
        ),
    );
    put(&d_path, "a.toml", &service("a", &m.url("/health")));
    put(&d_path, "b.toml", &service("b", &m.url("/health")));
    let d = Daemon::at(root.join("healthsweep.toml"), dir).start();
    let status = d.status_after_sweeps(1).await;
    assert_eq!(names(&status), ["a", "b"]);

    // Added, removed and changed files take effect.
    std::fs::remove_file(d_path.join("a.toml")).expect("remove a.toml");
    put(&d_path, "b.toml", &service("b2", &m.url("/health")));
    put(&d_path, "c.toml", &service("c", &m.url("/health")));
    let (code, body) = reload(&d).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["services"], 2);
    let (status, ok) = d
        .poll_status(Duration::from_secs(10), |s| {
            s["generation"] == 2 && s["sweep"]["number"].as_u64().unwrap_or(0) >= 2
        })
        .await;
    assert!(ok, "{status}");
    assert_eq!(names(&status), ["b2", "c"]);
    assert!(!has_service(&status, "a") && !has_service(&status, "b"));
    let metrics = d.get("/metrics").await.body;
    assert!(
        !metrics.contains("target=\"a\"") && !metrics.contains("target=\"b\""),
        "{metrics}"
    );

    // A broken file rejects the whole reload, naming the file and the line.
    let broken = d_path.join("d.toml");
    put(
        &d_path,
        "d.toml",
        &format!(
            "{}[[service]]\nname = \"d\"\nurl = \"ftp://x/\"\n",
            service("fine", &m.url("/health"))
        ),
    );
    let (code, body) = reload(&d).await;
    assert_eq!(code, 422, "{body}");
    let problems = body["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{body}");
    let want = format!(
        "{}: line 7, column 7: service \"d\": url scheme \"ftp\" is not supported",
        broken.display()
    );
    assert!(
        problems[0].as_str().is_some_and(|p| p.starts_with(&want)),
        "{body}"
    );
    // The running config stays: same generation, same services, still checked.
    let status = d.json("/status").await;
    assert_eq!(status["generation"], 2);
    assert_eq!(names(&status), ["b2", "c"]);
    let error = status["config"]["last_reload_error"]
        .as_str()
        .expect("last_reload_error");
    assert!(error.contains(&broken.display().to_string()), "{error}");
    let sweep = status["sweep"]["number"].as_u64().unwrap_or(0);
    let status = d.status_after_sweeps(sweep + 1).await;
    assert_eq!(service_status(&status, "c")["state"], "up");

    // A TOML syntax error in a services file names it too, also on SIGHUP.
    put(&d_path, "d.toml", "[[service]\nname = \"d\"\n");
    d.signal("HUP");
    let logged = wait_for(Duration::from_secs(10), || async {
        d.logs_containing("config reload failed")
            .iter()
            .any(|l| l.contains("d.toml: line 1, column 11: unclosed array table"))
    })
    .await;
    assert!(logged, "{:#?}", d.logs_containing("config reload failed"));
    assert_eq!(d.json("/status").await["generation"], 2);

    // Fixed: the reload goes through.
    std::fs::remove_file(&broken).expect("remove d.toml");
    let (code, body) = reload(&d).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["generation"], 3);
    stop.cancel();
}

fn validate(config: &Path) -> (Option<i32>, String, String) {
    run_cli([Path::new("validate"), Path::new("--config"), config])
}

#[test]
fn validate_lists_problems_in_every_file_and_counts_services_per_file() {
    let dir = TempDir::new("services-validate");
    let root = dir.path();
    let main = root.join("healthsweep.toml");
    let d = root.join("teams");
    put(
        root,
        "healthsweep.toml",
        &format!(
            "[daemon]\ninterval = \"5s\"\ndeadline = \"6s\"\nservices_dir = \"teams\"\n\n{}",
            service("main", "http://127.0.0.1:1/health")
        ),
    );
    put(
        &d,
        "a.toml",
        &format!(
            "{}[[service]]\nname = \"bad-url\"\nurl = \"gopher://x\"\n",
            service("a", "http://127.0.0.1:2/health")
        ),
    );
    put(&d, "b.toml", "[defaults]\ntimeout = \"1s\"\n");
    put(&d, "c.toml", &service("main", "http://127.0.0.1:3/health"));

    let (code, out, err) = validate(&main);
    assert_eq!(code, Some(2), "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 4, "{err}");
    let expected = [
        format!(
            "error: {}: line 3, column 12: deadline (6s) must not be longer than interval (5s)",
            main.display()
        ),
        format!(
            "error: {}: line 7, column 7: service \"bad-url\": url scheme \"gopher\"",
            d.join("a.toml").display()
        ),
        format!(
            "error: {}: line 1, column 2: unknown field `defaults`",
            d.join("b.toml").display()
        ),
        format!(
            "error: {}: line 2, column 8: service \"main\": duplicate service name (first defined in {} at line 6)",
            d.join("c.toml").display(),
            main.display()
        ),
    ];
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "{line}\nwanted {want}");
    }

    // Fixed, it reports how many services came from which file.
    put(
        root,
        "healthsweep.toml",
        &format!(
            "[daemon]\nservices_dir = \"teams\"\n\n{}",
            service("main", "http://127.0.0.1:1/health")
        ),
    );
    put(&d, "a.toml", &service("a", "http://127.0.0.1:2/health"));
    std::fs::remove_file(d.join("b.toml")).expect("remove");
    put(
        &d,
        "c.toml",
        &format!(
            "{}{}",
            service("c1", "http://127.0.0.1:3/health"),
            service("c2", "http://127.0.0.1:4/health")
        ),
    );
    let (code, out, err) = validate(&main);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!(
            "{}: valid (4 services from 3 files)\n  1 service in {}\n  1 service in {}\n  2 services in {}\n",
            main.display(),
            main.display(),
            d.join("a.toml").display(),
            d.join("c.toml").display()
        )
    );
}
