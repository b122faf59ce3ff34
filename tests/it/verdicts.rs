//! End to end: every verdict right under hostile input (issue 10). Each test reproduces a defect
//! found by a hostile review against the release of 802b535 and shows it gone: connections
//! shared only between checks that would open the very same one, certificates of any date,
//! clients that do not read, fleets that do not fit the deadline, panics, label names, pooled
//! connections that switched protocols, client certificates on redirects, FIFOs in the config,
//! a full connection table, credentials and secrets in output, body search, a hanging resolver,
//! self-signed CA certificates, repeated headers and URL scheme case.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::tls::*;
use crate::common::*;
use tokio_util::sync::CancellationToken;

fn table(name: &str, url: &str, extra: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n\n")
}

// ---------------------------------------------------------------------------------------------
// 1. Connections are shared only by checks that would open the very same connection.

/// Which services each pooled connection served, by the path (one per service) it was asked.
fn services_by_connection(served: &[Served]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut by = BTreeMap::<u64, BTreeSet<String>>::new();
    for s in served {
        by.entry(s.connection)
            .or_default()
            .insert(s.path.trim_start_matches('/').to_string());
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_shared_only_by_services_that_would_open_the_same_one() {
    let stop = CancellationToken::new();
    let dir = TempDir::new("pool-matrix");
    let root = ca("pool test CA", (2035, 6, 1));
    let other = ca("another CA", (2035, 6, 1));
    let server = leaf(&["127.0.0.1", "a.test", "b.test"], VALID, &root);
    let client_1 = leaf(&["client-1"], VALID, &root);
    let client_2 = leaf(&["client-2"], VALID, &root);
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());
    let bundle = write_pem(
        dir.path(),
        "bundle.pem",
        format!("{}{}", root.cert.pem(), other.cert.pem()),
    );
    let other_file = write_pem(dir.path(), "other.pem", other.cert.pem());
    let identity = |i: &Issued, n: &str| {
        let cert = write_pem(dir.path(), &format!("{n}.pem"), i.cert.pem());
        let key = write_pem(dir.path(), &format!("{n}-key.pem"), i.key.serialize_pem());
        format!("client_cert = \"{cert}\"\nclient_key = \"{key}\"")
    };
    let tls = TlsServer::start(
        vec![server.der()],
        server.key_der(),
        ClientAuth::Optional(root.der()),
        ok,
        &stop,
    )
    .await;
    let url = |name: &str| format!("https://{}/{name}", tls.addr);
    let trust = format!("ca_file = \"{ca_file}\"");
    // Pairs that differ in one connection-shaping key; `base-twin` is `base` exactly, the
    // control that shows the test sees sharing when it is allowed.
    let services = [
        ("base", trust.clone()),
        ("base-twin", trust.clone()),
        ("other-roots", format!("ca_file = \"{bundle}\"")),
        ("insecure", "insecure_skip_verify = true".to_string()),
        ("name-a", format!("{trust}\nserver_name = \"a.test\"")),
        ("name-b", format!("{trust}\nserver_name = \"b.test\"")),
        (
            "client-1",
            format!("{trust}\n{}", identity(&client_1, "c1")),
        ),
        (
            "client-2",
            format!("{trust}\n{}", identity(&client_2, "c2")),
        ),
        ("ipv4", format!("{trust}\nip_family = \"ipv4\"")),
        ("system-resolver", format!("{trust}\nresolver = \"system\"")),
        // The review's reproductions: stricter settings than a service that passes.
        ("strict-ca", format!("ca_file = \"{other_file}\"")),
        ("wrong-name", format!("{trust}\nserver_name = \"c.test\"")),
    ];
    let config = |services: &[(&str, String)]| {
        let mut c = daemon_section("1s", "1s", "max_in_flight = 1");
        for (name, extra) in services {
            c.push_str(&table(name, &url(name), extra));
        }
        c
    };
    let d = Daemon::start(&config(&services));
    let status = d.status_after_sweeps(3).await;

    for (name, _) in &services {
        let s = service_status(&status, name);
        match *name {
            "strict-ca" => {
                assert_eq!(s["last"]["reason"], "tls_unknown_issuer", "{s}");
                assert_eq!(
                    s["checks"]["ok"], 0,
                    "never passed on a lax connection: {s}"
                );
            }
            "wrong-name" => {
                assert_eq!(s["last"]["reason"], "tls_hostname_mismatch", "{s}");
                assert_eq!(
                    s["checks"]["ok"], 0,
                    "never passed on another's connection: {s}"
                );
            }
            _ => assert_eq!(s["state"], "up", "{s}"),
        }
    }
    let served = tls.served();
    let by_connection = services_by_connection(&served);
    let mut control_shared = false;
    for (connection, names) in &by_connection {
        let only_twins = names.iter().all(|n| n == "base" || n == "base-twin");
        assert!(
            names.len() == 1 || only_twins,
            "connection {connection} served {names:?}"
        );
        control_shared |= names.len() == 2;
    }
    assert!(
        control_shared,
        "identical services share a connection: {by_connection:?}"
    );
    // Each identity went to its own service; no identity went anywhere else.
    for s in &served {
        let want = match s.path.as_str() {
            "/client-1" => Some(client_1.der().to_vec()),
            "/client-2" => Some(client_2.der().to_vec()),
            _ => None,
        };
        assert_eq!(s.client_cert, want, "client certificate on {}", s.path);
        let sni = match s.path.as_str() {
            "/name-a" => Some("a.test"),
            "/name-b" => Some("b.test"),
            _ => None,
        };
        assert_eq!(s.sni.as_deref(), sni, "SNI on {}", s.path);
    }

    // A reload that makes `insecure` strict: it is refused from the next sweep on, although
    // its old connection (verified under insecure_skip_verify) is still in the pool.
    let mut stricter = services.to_vec();
    stricter[3].1 = format!("ca_file = \"{other_file}\"");
    d.write_config(&config(&stricter));
    d.signal("HUP");
    let generation = d.status_at_generation(2).await["sweep"]["number"]
        .as_u64()
        .unwrap_or(0);
    let status = d.status_after_sweeps(generation + 2).await;
    let insecure = service_status(&status, "insecure");
    assert_eq!(
        insecure["last"]["reason"], "tls_unknown_issuer",
        "{insecure}"
    );
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 2. Certificates of any date render; none takes `/status` down.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_before_1970_or_until_9999_break_nothing() {
    let stop = CancellationToken::new();
    let dir = TempDir::new("old-cert");
    let root = ca("dates CA", (2035, 6, 1));
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());
    let valid = leaf(&["127.0.0.1"], VALID, &root);
    // An unrelated certificate from the 1950s appended to a valid chain, as some servers do.
    let ancient = leaf(&["ancient.test"], ((1950, 1, 1), (1960, 1, 1)), &root);
    let forever = leaf(&["127.0.0.1"], ((2024, 1, 1), (9999, 12, 31)), &root);
    let appended = TlsServer::start(
        vec![valid.der(), root.der(), ancient.der()],
        valid.key_der(),
        ClientAuth::None,
        ok,
        &stop,
    )
    .await;
    let far = TlsServer::start(
        vec![forever.der(), root.der()],
        forever.key_der(),
        ClientAuth::None,
        ok,
        &stop,
    )
    .await;
    let trust = format!("ca_file = \"{ca_file}\"");
    let config = [
        daemon_section("1s", "1s", ""),
        table(
            "ancient-in-chain",
            &format!("https://{}/h", appended.addr),
            &trust,
        ),
        table("until-9999", &format!("https://{}/h", far.addr), &trust),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let a = service_status(&status, "ancient-in-chain");
    assert_eq!(a["state"], "up", "{a}");
    assert_eq!(
        a["last"]["tls"]["earliest_expiry_at"],
        "1960-01-01T00:00:00.000Z"
    );
    assert_eq!(
        a["last"]["tls"]["leaf_expires_at"],
        "2036-01-01T00:00:00.000Z"
    );
    let f = service_status(&status, "until-9999");
    assert_eq!(
        f["last"]["tls"]["leaf_expires_at"],
        "9999-12-31T00:00:00.000Z"
    );
    assert!(
        f["last"]["tls"]["days_left"].as_i64().unwrap_or(0) > 2_900_000,
        "{f}"
    );
    for path in [
        "/status/ancient-in-chain",
        "/status/until-9999",
        "/status?pretty",
    ] {
        let r = d.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json();
    }
    let metrics = d.get("/metrics").await.body;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("probe_ssl_earliest_cert_expiry{target=\"ancient-in-chain\""))
        .unwrap_or_else(|| panic!("no expiry series: {metrics}"));
    assert!(
        line.ends_with(" -315619200"),
        "1960-01-01 is before the epoch: {line}"
    );
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 3. Clients that never read pin little memory.

/// A client that sends `GET /metrics` and never reads, with a small receive buffer so the
/// kernel does not absorb the response for it.
async fn non_reader(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(addr).await.expect("connect");
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    s
}

/// A fleet of `n` services that fail at once (a closed port): large documents, cheap sweeps.
fn closed_fleet(n: usize, interval: &str) -> String {
    let port = closed_port();
    let mut c = daemon_section(interval, "1s", "");
    for i in 0..n {
        c.push_str(&service(
            &format!("svc-{i}"),
            &format!("http://127.0.0.1:{port}/{i}"),
        ));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_metrics_pin_little_memory() {
    const CLIENTS: usize = 256;
    let d = Daemon::start(&closed_fleet(10_000, "5s"));
    // Every service judged (on a loaded machine the first sweep may not start them all), so
    // the document has its full size.
    let (status, judged) = d
        .poll_status(Duration::from_secs(30), |s| s["summary"]["unknown"] == 0)
        .await;
    assert!(judged, "{}", status["summary"]);
    let size = d.get("/metrics").await.body.len();
    let pid = d.child.id();
    let before = min_proc_stats(pid, Duration::from_millis(500)).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS - 1 {
        clients.push(non_reader(d.addr).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = proc_stats(pid);
    drop(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = min_proc_stats(pid, Duration::from_millis(500)).await;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{} non-reading clients of a {:.1} MiB /metrics: RSS {:.1} -> {:.1} MiB held, {:.1} MiB after they left",
        CLIENTS - 1,
        mib(size as u64),
        mib(before.rss_bytes),
        mib(held.rss_bytes),
        mib(after.rss_bytes)
    );
    assert!(size > 4 << 20, "a large document: {size} bytes");
    let grew = held.rss_bytes.saturating_sub(before.rss_bytes);
    assert!(grew <= 64 << 20, "RSS grew by {:.1} MiB", mib(grew));
    let kept = after.rss_bytes.saturating_sub(before.rss_bytes);
    assert!(kept <= 64 << 20, "RSS stayed {:.1} MiB up", mib(kept));
    assert_eq!(d.get("/healthz").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// 4. A fleet that does not fit the deadline is checked in turn.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_does_not_fit_the_deadline_is_checked_in_turn() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let mut config = daemon_section("1s", "1s", "max_in_flight = 2");
    for i in 0..10 {
        config.push_str(&service(
            &format!("s{i}"),
            &m.url(&format!("/s{i}/health?delay=300")),
        ));
    }
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(6).await;
    for i in 0..10 {
        let s = service_status(&status, &format!("s{i}"));
        let ok = s["checks"]["ok"].as_u64().unwrap_or(0);
        eprintln!("s{i}: {} missed {}", s["checks"], s["missed_sweeps"]);
        assert!(ok >= 2, "s{i} was checked {ok} times in 6 sweeps: {s}");
        // A check cut short or never started is no verdict: a healthy service never shows
        // down, never flaps, and no failure is counted against it.
        assert_eq!(s["state"], "up", "{s}");
        assert_eq!(
            s["checks"].as_object().map(|c| c.len()),
            Some(1),
            "only ok: {s}"
        );
    }
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 5. A panic ends the process non-zero; durations are bounded at load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_any_task_ends_the_process_with_status_101() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let config = [
        daemon_section("1s", "1s", ""),
        service("a", &m.url("/health")),
    ]
    .concat();
    let mut d = Daemon::with_config(&config)
        .env("HEALTHSWEEP_FAULT", "sweep-panic")
        .start();
    let exit = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(exit.code(), Some(101), "{exit:?}");
    let logged = d.logs_containing("panic");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("sweeper") && l.contains("sweep-panic")),
        "the panic is logged with its task: {logged:?}"
    );

    let mut d = Daemon::with_config(&config)
        .env("HEALTHSWEEP_FAULT", "request-panic")
        .start();
    // The connection ends with the process: no response to parse.
    let ask = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(d.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), ask).await;
    let exit = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(
        exit.code(),
        Some(101),
        "a connection task's panic too: {exit:?}"
    );
    stop.cancel();
}

#[test]
fn durations_beyond_sane_bounds_are_config_errors_not_panics() {
    let dir = TempDir::new("durations");
    let cases = [
        (
            "[daemon]\ninterval = \"300000000000y\"\ndeadline = \"300000000000y\"\n",
            "interval",
        ),
        (
            "[daemon]\ninterval = \"1ns\"\ndeadline = \"1ns\"\n",
            "interval",
        ),
        (
            "[daemon]\ninterval = \"99ms\"\ndeadline = \"50ms\"\n",
            "interval",
        ),
        ("[defaults]\ntimeout = \"300000000000y\"\n", "timeout"),
        ("[defaults]\nmax_latency = \"2h\"\n", "max_latency"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &path,
            format!("{text}[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n"),
        )
        .expect("write");
        let (code, _, err) = run_cli(["validate", "--config", path.to_str().expect("utf-8")]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(
            err.contains(key) && err.contains("must be between"),
            "{text}: {err}"
        );
    }
    let path = dir.path().join("floor.toml");
    std::fs::write(
        &path,
        "[daemon]\ninterval = \"100ms\"\ndeadline = \"100ms\"\n",
    )
    .expect("write");
    let (code, _, err) = run_cli(["validate", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "the floor itself is fine: {err}");
}

// ---------------------------------------------------------------------------------------------
// 6. Label names the daemon emits are reserved.

#[test]
fn labels_named_like_the_daemons_own_or_prometheus_internals_are_refused() {
    let dir = TempDir::new("labels");
    for name in [
        "result", "reason", "target", "group", "__meta_x", "__name__",
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nlabels = {{ {name} = \"x\" }}\n"),
        )
        .expect("write");
        let (code, _, err) = run_cli(["validate", "--config", path.to_str().expect("utf-8")]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A connection that switched protocols is never reused.

/// Answers `/upgrade` with 101 and from then on speaks another protocol on that connection
/// (quiet until spoken to, so the connection looks idle and clean), anything else with a
/// keep-alive 200.
async fn upgrading_server(stop: &CancellationToken) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve_each(
        any_loopback_port(),
        |mut s: tokio::net::TcpStream| async move {
            let mut buf = Vec::new();
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    let mut chunk = [0u8; 2048];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                if head.starts_with("GET /upgrade ") {
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    // The other protocol: whatever comes is answered in kind, never HTTP.
                    let mut chunk = [0u8; 2048];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 || s.write_all(b"\x81\x02no").await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                    return;
                }
            }
        },
        stop,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_switched_protocols_is_never_reused() {
    let stop = CancellationToken::new();
    let addr = upgrading_server(&stop).await;
    let config = [
        daemon_section("1s", "1s", "max_in_flight = 1"),
        table(
            "switching",
            &format!("http://{addr}/upgrade"),
            "expect_status = [101]",
        ),
        table("plain", &format!("http://{addr}/health"), ""),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(4).await;
    let number = status["sweep"]["number"].clone();
    for name in ["switching", "plain"] {
        let s = service_status(&status, name);
        assert_eq!(s["state"], "up", "{s}");
        assert_eq!(
            s["consecutive_successes"], number,
            "passed every sweep: {s}"
        );
    }
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 8. The client certificate stays with the service's own origin.

static REDIRECT_TO: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn redirect_away(path: &str) -> Answer {
    match path {
        "/start" => (
            302,
            vec![("location", REDIRECT_TO.get().cloned().unwrap_or_default())],
            String::new(),
        ),
        _ => ok(path),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_gets_no_client_certificate() {
    let stop = CancellationToken::new();
    let dir = TempDir::new("redirect-identity");
    let root = ca("redirect CA", (2035, 6, 1));
    let server = leaf(&["127.0.0.1"], VALID, &root);
    let client = leaf(&["probe"], VALID, &root);
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());
    let cert = write_pem(dir.path(), "c.pem", client.cert.pem());
    let key = write_pem(dir.path(), "k.pem", client.key.serialize_pem());
    let elsewhere = TlsServer::start(
        vec![server.der()],
        server.key_der(),
        ClientAuth::Optional(root.der()),
        ok,
        &stop,
    )
    .await;
    REDIRECT_TO
        .set(format!("https://{}/end", elsewhere.addr))
        .expect("set once");
    let origin = TlsServer::start(
        vec![server.der()],
        server.key_der(),
        ClientAuth::Optional(root.der()),
        redirect_away,
        &stop,
    )
    .await;
    let extra = format!(
        "ca_file = \"{ca_file}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\nfollow_redirects = 1"
    );
    let config = [
        daemon_section("1s", "1s", ""),
        table("mtls", &format!("https://{}/start", origin.addr), &extra),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let s = service_status(&status, "mtls");
    assert_eq!(s["state"], "up", "{s}");
    assert_eq!(s["last"]["redirects"], 1);
    let at_origin = origin.served();
    assert!(!at_origin.is_empty());
    assert!(
        at_origin
            .iter()
            .all(|r| r.client_cert.as_deref() == Some(&client.der()[..])),
        "the service's own origin gets its identity"
    );
    let away = elsewhere.served();
    assert!(!away.is_empty());
    assert!(
        away.iter().all(|r| r.client_cert.is_none()),
        "another origin gets no client certificate: {away:?}"
    );
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 9. A FIFO (or anything not a regular file) where the config names a file is refused at once.

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_place_of_any_file_is_refused_at_once_and_never_wedges_a_reload() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let f = fifo.display().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-of-enough-length\n").expect("token");
    let t = token.display().to_string();
    let svc = "[[service]]\nname = \"a\"\nurl = \"https://127.0.0.1:1/\"\n";
    let cases = [
        format!("[daemon.auth]\ntoken_file = \"{f}\"\n{svc}"),
        format!("{svc}ca_file = \"{f}\"\n"),
        format!("{svc}client_cert = \"{f}\"\nclient_key = \"{f}\"\n"),
        format!("{svc}header_files = {{ Authorization = \"{f}\" }}\n"),
        format!("[daemon.tls]\ncert_file = \"{f}\"\nkey_file = \"{f}\"\n{svc}"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let (code, _, err) = run_cli_within(
            ["validate", "--config", path.to_str().expect("utf-8")],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(2), "{text}: exit {code:?}: {err}");
        assert!(
            err.contains("not a regular file") && err.contains("FIFO"),
            "{text}: {err}"
        );
    }
    let (code, _, err) = run_cli_within(["validate", "--config", &f], Duration::from_secs(10));
    assert_eq!(code, Some(2), "the config itself a FIFO: {err}");
    assert!(err.contains("FIFO"), "{err}");

    // The running daemon: a reload that meets a FIFO fails at once, and once the file is fixed
    // the next reload succeeds.
    let good = format!(
        "[daemon.auth]\ntoken_file = \"{t}\"\n{}",
        service("a", "http://127.0.0.1:1/")
    );
    let d = Daemon::start(&good);
    d.status_after_sweeps(1).await;
    d.write_config(&good.replace(&t, &f));
    d.signal("HUP");
    let (status, refused) = d
        .poll_status(Duration::from_secs(5), |s| {
            s["config"]["last_reload_successful"] == false
        })
        .await;
    assert!(refused, "{status}");
    assert!(
        status["config"]["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("FIFO")),
        "{status}"
    );
    d.write_config(&good);
    d.signal("HUP");
    d.status_at_generation(2).await;
}

// ---------------------------------------------------------------------------------------------
// 10. With every connection slot taken, /healthz and /readyz are still answered.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_slot_held_by_clients_that_do_not_read_healthz_is_still_answered() {
    let d = Daemon::start(&closed_fleet(3000, "2s"));
    d.status_after_sweeps(1).await;
    let mut clients = Vec::new();
    for _ in 0..256 {
        clients.push(non_reader(d.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Before probe slots, the first answer waited for a non-reader to count as stalled (its
    // /metrics response filling the socket buffers, rendered piece by piece on the nice-19
    // render thread for all 256): 4.4–6.9 s on a busy machine. A probe slot answers at once.
    for path in ["/healthz", "/readyz", "/healthz"] {
        let r = tokio::time::timeout(Duration::from_secs(5), d.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path} answered within 5 s"));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    drop(clients);
}

/// A client that sends the head of a `POST /-/maintenance` with a body it never sends: its
/// connection is busy (the handler waits up to 10 s for the body) without being stalled.
/// Returns once the daemon's `100 Continue` shows the handler is running.
async fn busy_holder(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "POST /-/maintenance HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !got.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).await.expect("read");
            assert!(n > 0, "closed before 100 Continue");
            got.push(byte[0]);
        }
    })
    .await
    .expect("100 Continue within 10 s");
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// A request without `Connection: close`: `raw` reads to the end, so it returns only if the
/// daemon closes the connection after answering.
async fn get_kept_alive(addr: std::net::SocketAddr, path: &str) -> HttpResponse {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_slot_busy_serving_probes_are_answered_and_the_rest_told_to_retry() {
    let config = [
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", "http://127.0.0.1:1/"),
    ]
    .concat();
    let d = Daemon::start(&config);
    d.status_after_sweeps(1).await;
    let mut holders = Vec::new();
    for _ in 0..256 {
        holders.push(busy_holder(d.addr).await);
    }
    // Each holder saw its 100 Continue: all 256 handlers are running, no slot is idle.
    let refused = get_kept_alive(d.addr, "/status").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("connection"), Some("close"));
    let error = refused.json()["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("/healthz") && error.contains("256"),
        "{error}"
    );
    // Probe slots that never send a request give way to the next probe.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            tokio::net::TcpStream::connect(d.addr)
                .await
                .expect("connect"),
        );
    }
    for path in ["/healthz", "/readyz"] {
        // Answered and closed (one request per probe slot), though the client asked to keep it.
        let r = tokio::time::timeout(Duration::from_secs(5), get_kept_alive(d.addr, path))
            .await
            .unwrap_or_else(|_| panic!("{path} answered within 5 s"));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("connection"), Some("close"));
    }
    // The holders' requests were served all along, not evicted: each still gets its answer
    // (400, the body never came in full) once it gives up sending.
    let mut first = holders.swap_remove(0);
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        first.write_all(b"{}").await.expect("send");
        first.shutdown().await.expect("shut down the sending side");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), first.read_to_end(&mut answer))
            .await
            .expect("an answer within 15 s")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    drop((holders, silent));
    // Their slots free as the daemon sees each close.
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = d.get("/status").await;
        if r.status == 200 || tokio::time::Instant::now() >= end {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        r.status, 200,
        "a regular slot again once the holders left: {}",
        r.body
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A user name alone (a token) in a URL is redacted too.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_as_the_url_user_name_is_redacted_everywhere_it_is_shown() {
    let server = RecordingServer::start().await;
    let url = format!("http://s3cr3t-T0KEN@{}/health", server.addr);
    let config = [daemon_section("1s", "1s", ""), service("tok", &url)].concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let s = service_status(&status, "tok");
    assert_eq!(s["url"], format!("http://REDACTED@{}/health", server.addr));
    let path = d.config_path.to_str().expect("utf-8").to_string();
    let (_, out, err) = run_cli(["check", "--config", &path, "--format", "json"]);
    let (_, table, _) = run_cli(["check", "--config", &path]);
    for (what, text) in [
        ("/status", d.get("/status").await.body),
        ("/status/tok", d.get("/status/tok").await.body),
        ("/metrics", d.get("/metrics").await.body),
        ("check --format json", out + &err),
        ("check", table),
        ("logs", d.logs.lock().expect("logs").join("\n")),
    ] {
        assert!(
            !text.contains("s3cr3t-T0KEN"),
            "{what} shows the token: {text}"
        );
    }
    let head = server.heads_for("/health").pop().expect("a request");
    assert!(head_header(&head, "authorization").is_some_and(|v| v.starts_with("Basic ")));
}

// ---------------------------------------------------------------------------------------------
// 12. A value of the wrong type is not echoed in errors.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_the_wrong_type_is_named_by_key_and_line_never_echoed() {
    let good = [
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", "http://127.0.0.1:1/"),
    ]
    .concat();
    let d = Daemon::start(&good);
    d.status_after_sweeps(1).await;
    d.write_config(&format!(
        "{good}headers = \"Authorization: Bearer SUPERSECRET-VALUE\"\n"
    ));
    let r = raw(
        d.addr,
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("headers") && r.body.contains("invalid type"),
        "{}",
        r.body
    );
    let status = d.get("/status").await.body;
    let path = d.config_path.to_str().expect("utf-8").to_string();
    let (code, _, err) = run_cli(["validate", "--config", &path]);
    assert_eq!(code, Some(2));
    for (what, text) in [
        ("reload API", r.body),
        ("/status", status),
        ("validate", err),
        ("logs", d.logs.lock().expect("logs").join("\n")),
    ] {
        assert!(
            !text.contains("SUPERSECRET"),
            "{what} echoes the value: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 14. Body search is linear: a hostile body cannot pin a worker.

fn huge_body(path: &str) -> Answer {
    match path {
        "/huge" => (200, Vec::new(), "a".repeat(16 << 20)),
        _ => ok(path),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worst_case_body_search_ends_with_a_verdict_not_a_stuck_worker() {
    let stop = CancellationToken::new();
    let addr = plain_server(huge_body, &stop).await;
    let needle = format!("{}b", "a".repeat(20_000));
    let config = [
        daemon_section("2s", "2s", ""),
        table(
            "worst-case",
            &format!("http://{addr}/huge"),
            &format!(
                "max_body_bytes = {}\nexpect_body_contains = \"{needle}\"",
                32 << 20
            ),
        ),
        table("beside-it", &format!("http://{addr}/health"), ""),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let s = service_status(&status, "worst-case");
    assert_eq!(s["last"]["reason"], "body_mismatch", "{s}");
    let beside = service_status(&status, "beside-it");
    assert_eq!(beside["state"], "up", "{beside}");
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 15. A hanging DNS server cannot delay /metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_dns_server_cannot_delay_metrics() {
    if !needs(&[Tool::Root]) {
        return;
    }
    // A DNS server that reads every query and answers none, on a loopback address of its own:
    // the daemon's private /etc/resolv.conf names it (port 53: resolv.conf cannot name another).
    let dns = std::net::UdpSocket::bind("127.0.0.153:53")
        .expect("bind 127.0.0.153:53 (the tests run as root, as on the CI machines)");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while dns.recv_from(&mut buf).is_ok() {}
    });
    let dir = TempDir::new("hanging-dns");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.153\n").expect("resolv.conf");
    let mut config = daemon_section("1s", "1s", "");
    for i in 0..1000 {
        config.push_str(&table(
            &format!("h{i}"),
            &format!("http://h{i}.hang.test/health"),
            "resolver = \"system\"",
        ));
    }
    let resolv = resolv.display().to_string();
    let d = Daemon::with_config(&config)
        .with_file_over(std::path::Path::new(&resolv), "/etc/resolv.conf")
        .start();
    d.status_after_sweeps(2).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = tokio::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), d.get("/metrics"))
            .await
            .expect("/metrics within 5 s");
        assert_eq!(r.status, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("slowest /metrics while 1,000 lookups hang: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

// ---------------------------------------------------------------------------------------------
// 16. A self-signed CA:TRUE certificate, as `openssl req -x509` makes, trusted as ca_file.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_named_as_ca_file_is_accepted_and_still_checked() {
    if !needs(&[Tool::Openssl]) {
        return;
    }
    use rustls::pki_types::pem::PemObject;
    let stop = CancellationToken::new();
    let dir = TempDir::new("openssl-x509");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (ok_, said) = run_tool(
        std::process::Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            key.to_str().expect("utf-8"),
            "-out",
            cert.to_str().expect("utf-8"),
        ]),
        "apt-get install openssl",
    );
    assert!(ok_, "{said}");
    let text = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-text",
            "-in",
            cert.to_str().expect("utf-8"),
        ])
        .output()
        .expect("openssl x509");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "made the way openssl makes them by default"
    );
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    let tls = TlsServer::start(chain, key_der, ClientAuth::None, ok, &stop).await;
    let trust = format!("ca_file = \"{}\"", cert.display());
    let config = [
        daemon_section("1s", "1s", ""),
        table("self-signed", &format!("https://{}/h", tls.addr), &trust),
        table(
            "self-signed-wrong-name",
            &format!("https://{}/h", tls.addr),
            &format!("{trust}\nserver_name = \"other.test\""),
        ),
        table(
            "self-signed-untrusted",
            &format!("https://{}/h", tls.addr),
            "",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let s = service_status(&status, "self-signed");
    assert_eq!(s["state"], "up", "{s}");
    let s = service_status(&status, "self-signed-wrong-name");
    assert_eq!(s["last"]["reason"], "tls_hostname_mismatch", "{s}");
    let s = service_status(&status, "self-signed-untrusted");
    assert_eq!(s["last"]["reason"], "tls_unknown_issuer", "{s}");
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 17. Every value of a repeated header counts.

fn cookies(path: &str) -> Answer {
    let (first, second) = if path == "/ba" {
        ("b=2", "a=1")
    } else {
        ("a=1", "b=2")
    };
    (
        200,
        vec![
            ("set-cookie", first.to_string()),
            ("set-cookie", second.to_string()),
        ],
        "ok".to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_header_matches_on_any_value_whatever_its_order_unless_all_are_asked() {
    let stop = CancellationToken::new();
    let addr = plain_server(cookies, &stop).await;
    let any_b = "expect_header = { \"Set-Cookie\" = { regex = \"^b=\" } }";
    let all_b = "expect_header = { \"Set-Cookie\" = { regex = \"^b=\", match = \"all\" } }";
    let all_eq = "expect_header = { \"Set-Cookie\" = { regex = \"=\", match = \"all\" } }";
    let exact = "expect_header = { \"Set-Cookie\" = \"b=2\" }";
    let config = [
        daemon_section("1s", "1s", ""),
        table("any-ab", &format!("http://{addr}/ab"), any_b),
        table("any-ba", &format!("http://{addr}/ba"), any_b),
        table("exact-ab", &format!("http://{addr}/ab"), exact),
        table("all-b", &format!("http://{addr}/ab"), all_b),
        table("all-eq", &format!("http://{addr}/ab"), all_eq),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    for name in ["any-ab", "any-ba", "exact-ab", "all-eq"] {
        let s = service_status(&status, name);
        assert_eq!(s["state"], "up", "{name}: {s}");
    }
    let s = service_status(&status, "all-b");
    assert_eq!(s["last"]["reason"], "header_mismatch", "{s}");
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// 18. URL schemes are case-insensitive everywhere.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_in_any_case_takes_tls_settings() {
    let stop = CancellationToken::new();
    let root = ca("case CA", (2035, 6, 1));
    let server = leaf(&["127.0.0.1"], VALID, &root);
    let tls = TlsServer::start(
        vec![server.der()],
        server.key_der(),
        ClientAuth::None,
        ok,
        &stop,
    )
    .await;
    let dir = TempDir::new("scheme-case");
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());
    let config = [
        daemon_section("1s", "1s", ""),
        table(
            "mixed-insecure",
            &format!("HtTpS://{}/h", tls.addr),
            "insecure_skip_verify = true",
        ),
        table(
            "upper-ca",
            &format!("HTTPS://{}/h", tls.addr),
            &format!("ca_file = \"{ca_file}\""),
        ),
        table(
            "tcp-upper",
            &format!("TCP://{}", tls.addr),
            "tls = true\ninsecure_skip_verify = true",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    for name in ["mixed-insecure", "upper-ca", "tcp-upper"] {
        assert_eq!(
            service_status(&status, name)["state"],
            "up",
            "{name}: {status}"
        );
    }
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// Found by the review pass of our own (each listed in the closing note).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_system_ca_certificates_https_is_unknown_issuer_and_nothing_panics() {
    let stop = CancellationToken::new();
    let root = ca("no-roots CA", (2035, 6, 1));
    let server = leaf(&["127.0.0.1"], VALID, &root);
    let tls = TlsServer::start(
        vec![server.der()],
        server.key_der(),
        ClientAuth::None,
        ok,
        &stop,
    )
    .await;
    REDIRECT_TO_TLS
        .set(format!("https://{}/h", tls.addr))
        .expect("set once");
    let plain = plain_server(redirect_to_tls, &stop).await;
    let empty = TempDir::new("no-system-roots");
    let config = [
        daemon_section("1s", "1s", ""),
        table("https", &format!("https://{}/h", tls.addr), ""),
        table(
            "redirected",
            &format!("http://{plain}/start"),
            "follow_redirects = 1",
        ),
    ]
    .concat();
    let empty_dir = empty.path().display().to_string();
    let mut d = Daemon::with_config(&config)
        .env("SSL_CERT_FILE", &format!("{empty_dir}/none.pem"))
        .env("SSL_CERT_DIR", &empty_dir)
        .start();
    let status = d.status_after_sweeps(2).await;
    for name in ["https", "redirected"] {
        let s = service_status(&status, name);
        assert_eq!(s["last"]["reason"], "tls_unknown_issuer", "{s}");
    }
    assert!(
        d.wait_exit(Duration::from_millis(100)).is_none(),
        "still running"
    );
    stop.cancel();
}

static REDIRECT_TO_TLS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn redirect_to_tls(path: &str) -> Answer {
    match path {
        "/start" => (
            302,
            vec![(
                "location",
                REDIRECT_TO_TLS.get().cloned().unwrap_or_default(),
            )],
            String::new(),
        ),
        _ => ok(path),
    }
}

/// A server whose body never comes in full: the head says 10 bytes, 3 come, then nothing.
async fn short_body_server(stop: &CancellationToken) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve_each(
        any_loopback_port(),
        |mut s: tokio::net::TcpStream| async move {
            let mut buf = [0u8; 2048];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        },
        stop,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_left_unread_after_a_passing_status_never_turns_the_pass_into_a_timeout() {
    let stop = CancellationToken::new();
    let addr = short_body_server(&stop).await;
    let config = [
        daemon_section("1s", "1s", ""),
        table(
            "status-only",
            &format!("http://{addr}/health"),
            "timeout = \"500ms\"\nmax_latency = \"200ms\"",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let s = service_status(&status, "status-only");
    assert_eq!(s["state"], "up", "the verdict is in with the status: {s}");
    assert!(
        s["last"]["duration_seconds"].as_f64().unwrap_or(9.0) < 0.2,
        "{s}"
    );
    stop.cancel();
}

fn cookie_value(_path: &str) -> Answer {
    (
        200,
        vec![("set-cookie", "session=SESSION-SECRET-123".to_string())],
        "ok".to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_credential_header_is_described_by_length_not_shown() {
    let stop = CancellationToken::new();
    let addr = plain_server(cookie_value, &stop).await;
    let config = [
        daemon_section("1s", "1s", ""),
        table(
            "cookie",
            &format!("http://{addr}/h"),
            "expect_header = { \"Set-Cookie\" = { regex = \"^other=\" } }",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let s = service_status(&status, "cookie");
    assert_eq!(s["last"]["reason"], "header_mismatch", "{s}");
    assert!(
        s["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("bytes, not shown")),
        "{s}"
    );
    for text in [
        d.get("/status").await.body,
        d.logs.lock().expect("logs").join("\n"),
    ] {
        assert!(!text.contains("SESSION-SECRET"), "{text}");
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reload_requests_is_coalesced_and_never_locks_out_healthz() {
    let config = [
        daemon_section("1s", "1s", "reload_api = true"),
        service("a", "http://127.0.0.1:1/"),
    ]
    .concat();
    let d = Daemon::start(&config);
    d.status_after_sweeps(1).await;
    let addr = d.addr;
    let flood: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                raw(
                    addr,
                    b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                )
                .await
                .status
            })
        })
        .collect();
    let health = tokio::time::timeout(Duration::from_secs(5), d.get("/healthz"))
        .await
        .expect("/healthz answered during the flood");
    assert_eq!(health.status, 200);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for f in flood {
        *statuses.entry(f.await.expect("task")).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let generation = d.json("/status").await["generation"].as_u64().unwrap_or(0);
    eprintln!("200 reload requests: {statuses:?}; generation {generation}");
    assert!(
        generation > 1 && generation < 100,
        "coalesced: generation {generation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_never_stalls_the_sweeps() {
    // 3,000 services that fail at once log 3,000 warnings a sweep: far more than a pipe holds.
    let dir = TempDir::new("stderr-full");
    let config = dir.path().join("healthsweep.toml");
    std::fs::write(&config, closed_fleet(3000, "1s")).expect("write");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(bin())
        .args([
            "--log-level",
            "debug",
            "run",
            "--listen",
            &listen,
            "--config",
        ])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped()) // and never read
        .spawn()
        .expect("start");
    let addr: std::net::SocketAddr = listen.parse().expect("addr");
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), async {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => Some(http(addr, "GET", "/status").await),
                Err(_) => None,
            }
        })
        .await
            && let Some(r) = r
            && r.status == 200
        {
            seen = r.json()["sweep"]["number"].as_u64().unwrap_or(0);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen >= 4,
        "sweeps went on with stderr full: got to sweep {seen}"
    );
}
