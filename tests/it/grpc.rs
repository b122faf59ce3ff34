//! End to end: `grpc://` and `grpcs://` health checks against the reference gRPC health server
//! (grpcio-health-checking, from PyPI), its status switched during the test, a named service
//! registered late, a server without the health service, a server that never answers, and TLS
//! with certificates made here (a private CA, an unknown CA, a client certificate required).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::common::tls::{VALID, ca, leaf, write_pem};
use crate::common::*;

/// grpcio's health server (`tests/it/fixtures/grpc_health_server.py`), until dropped.
struct GrpcServer {
    child: Child,
    stdin: ChildStdin,
    answers: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl GrpcServer {
    fn start(args: &[&str]) -> GrpcServer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/fixtures/grpc_health_server.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            // grpcio logs every failed handshake (the tests make several on purpose).
            .env("GRPC_VERBOSITY", "ERROR")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let mut answers = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        answers.read_line(&mut line).expect("the port line");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("a port: {line:?}"));
        GrpcServer {
            child,
            stdin,
            answers,
            port,
        }
    }

    /// Sets `service`'s status (`-`: the server as a whole).
    fn set(&mut self, service: &str, status: &str) {
        writeln!(self.stdin, "{service} {status}").expect("command");
        let mut ok = String::new();
        self.answers.read_line(&mut ok).expect("answer");
        assert_eq!(ok.trim(), "ok");
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_service(name: &str, url: &str, keys: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nurl = \"{url}\"\ntimeout = \"1s\"\n{keys}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_reference_server_and_share_its_connection() {
    if !needs(&[Tool::GrpcPython, Tool::Promtool]) {
        return;
    }
    let mut health = GrpcServer::start(&["health"]);
    let bare = GrpcServer::start(&["bare"]);
    // Accepts connections and never says a word.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let h = format!("grpc://127.0.0.1:{}", health.port);
    let config = [
        daemon_section("1s", "1s", ""),
        grpc_service("whole", &h, ""),
        grpc_service(
            "whole-too",
            &h,
            "headers = { authorization = \"Bearer t\" }",
        ),
        grpc_service("ledger", &h, "grpc_service = \"ledger.v1.Ledger\""),
        grpc_service("bare", &format!("grpc://127.0.0.1:{}", bare.port), ""),
        grpc_service(
            "hang",
            &format!("grpc://{}", hang.local_addr().expect("addr")),
            "",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let get = |s: &serde_json::Value, n: &str| service_status(s, n).clone();
    for up in ["whole", "whole-too"] {
        assert_eq!(get(&status, up)["state"], "up", "{}", get(&status, up));
        assert_eq!(
            get(&status, up)["last"]["grpc"]["serving_status"],
            "SERVING"
        );
        assert_eq!(
            get(&status, up)["last"]["reused_connection"],
            true,
            "one connection"
        );
    }
    assert_eq!(
        get(&status, "ledger")["last"]["reason"],
        "grpc_service_unknown"
    );
    assert_eq!(get(&status, "ledger")["last"]["grpc"]["status_code"], 5);
    assert_eq!(get(&status, "bare")["last"]["reason"], "grpc_unimplemented");
    assert_eq!(get(&status, "bare")["last"]["grpc"]["status_code"], 12);
    assert!(
        matches!(
            get(&status, "hang")["last"]["reason"].as_str(),
            Some("timeout" | "deadline_exceeded")
        ),
        "{}",
        get(&status, "hang")
    );

    // The server's statuses change; the verdicts follow.
    health.set("ledger.v1.Ledger", "SERVING");
    health.set("-", "NOT_SERVING");
    let (status, changed) = d
        .poll_status(Duration::from_secs(10), |s| {
            service_status(s, "ledger")["state"] == "up"
                && service_status(s, "whole")["state"] == "down"
        })
        .await;
    assert!(changed, "{status}");
    assert_eq!(get(&status, "whole")["last"]["reason"], "grpc_not_serving");
    assert_eq!(
        get(&status, "whole")["last"]["grpc"]["serving_status"],
        "NOT_SERVING"
    );
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains(
            "probe_grpc_healthcheck_response{target=\"whole\",serving_status=\"NOT_SERVING\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "probe_grpc_healthcheck_response{target=\"whole\",serving_status=\"SERVING\"} 0"
    ));
    assert!(metrics.contains("probe_grpc_status_code{target=\"bare\"} 12"));
    assert!(metrics.contains("probe_grpc_ssl{target=\"ledger\"} 0"));
    promtool_check_metrics(&metrics);
    health.set("-", "SERVING");
    let (status, back) = d
        .poll_status(Duration::from_secs(10), |s| {
            service_status(s, "whole")["state"] == "up"
        })
        .await;
    assert!(back, "{status}");
    // Four services on two servers that answer: two HTTP/2 connections, and at most one more
    // to the hanging server (each unanswered one is dropped, and the next check opens another).
    let kept = status["sweep"]["idle_connections"].as_u64().unwrap_or(99);
    assert!((2..=3).contains(&kept), "{}", status["sweep"]);
    drop(hang);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_checks_verify_the_server_and_present_a_client_certificate() {
    if !needs(&[Tool::GrpcPython]) {
        return;
    }
    let dir = TempDir::new("grpcs");
    let authority = ca("test CA", (2036, 1, 1));
    let server = leaf(&["localhost"], VALID, &authority);
    let client = leaf(&["probe"], VALID, &authority);
    let ca_file = write_pem(dir.path(), "ca.pem", authority.cert.pem());
    let cert = write_pem(dir.path(), "server.pem", server.cert.pem());
    let key = write_pem(dir.path(), "server-key.pem", server.key.serialize_pem());
    let client_cert = write_pem(dir.path(), "client.pem", client.cert.pem());
    let client_key = write_pem(dir.path(), "client-key.pem", client.key.serialize_pem());
    let tls = GrpcServer::start(&["health", &cert, &key]);
    let mtls = GrpcServer::start(&["health", &cert, &key, &ca_file]);
    let at = |s: &GrpcServer| format!("grpcs://localhost:{}", s.port);
    let config = [
        daemon_section("1s", "1s", ""),
        grpc_service("private-ca", &at(&tls), &format!("ca_file = \"{ca_file}\"")),
        grpc_service("unknown-ca", &at(&tls), ""),
        grpc_service(
            "mtls",
            &at(&mtls),
            &format!(
                "ca_file = \"{ca_file}\"\nclient_cert = \"{client_cert}\"\nclient_key = \"{client_key}\""
            ),
        ),
        grpc_service("mtls-anonymous", &at(&mtls), &format!("ca_file = \"{ca_file}\"")),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let get = |n: &str| service_status(&status, n).clone();
    assert_eq!(get("private-ca")["state"], "up", "{}", get("private-ca"));
    assert!(
        get("private-ca")["last"]["tls"]["days_left"]
            .as_i64()
            .is_some()
    );
    assert_eq!(get("unknown-ca")["last"]["reason"], "tls_unknown_issuer");
    assert_eq!(get("mtls")["state"], "up", "{}", get("mtls"));
    assert_eq!(
        get("mtls-anonymous")["state"],
        "down",
        "{}",
        get("mtls-anonymous")
    );
    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains("probe_grpc_ssl{target=\"mtls\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("probe_ssl_earliest_cert_expiry{target=\"private-ca\"}"));
}

/// A second server implementation (hyper's HTTP/2 server in the mock fleet, as the benchmark
/// uses): fifty services on one endpoint, every check on one shared connection at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_grpc_services_on_one_endpoint_share_one_connection() {
    let stop = tokio_util::sync::CancellationToken::new();
    let server = healthsweep::mock::MockServer::start_grpc(
        "127.0.0.1:0".parse().expect("addr"),
        Duration::from_millis(200),
        stop.clone(),
    )
    .await
    .expect("mock gRPC server");
    let mut config = daemon_section("1s", "1s", "");
    for i in 0..50 {
        config.push_str(&grpc_service(
            &format!("s{i}"),
            &format!("grpc://{}", server.addr),
            &format!("grpc_service = \"svc.{i}\""),
        ));
    }
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    assert_eq!(status["summary"]["up"], 50, "{}", status["summary"]);
    assert_eq!(
        status["sweep"]["idle_connections"], 1,
        "{}",
        status["sweep"]
    );
    assert_eq!(
        status["sweep"]["connections_reused"], 50,
        "{}",
        status["sweep"]
    );
    // Fifty answers of 200 ms each, concurrently on one connection: one 200 ms sweep.
    let took = status["sweep"]["duration_seconds"].as_f64().unwrap_or(9.0);
    assert!(took < 0.9, "{took} s: the streams did not run at once");
    stop.cancel();
}

/// A server that sends GOAWAY on every connection after its first requests (draining, or
/// being restarted): checks that had not started on the going connection go to a new one,
/// and none fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_costs_no_check_its_verdict() {
    let stop = tokio_util::sync::CancellationToken::new();
    let server = healthsweep::mock::MockServer::start_grpc_closing(
        "127.0.0.1:0".parse().expect("addr"),
        Duration::from_millis(50),
        Some(5),
        stop.clone(),
    )
    .await
    .expect("mock gRPC server");
    let mut config = daemon_section("500ms", "500ms", "");
    for i in 0..20 {
        config.push_str(&grpc_service(
            &format!("s{i}"),
            &format!("grpc://{}", server.addr),
            "",
        ));
    }
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(4).await;
    for i in 0..20 {
        let s = service_status(&status, &format!("s{i}"));
        assert_eq!(
            s["checks"]["ok"].as_u64(),
            s["checks"]
                .as_object()
                .map(|c| c.values().filter_map(|v| v.as_u64()).sum()),
            "{s}"
        );
        assert_eq!(s["state"], "up", "{s}");
    }
    stop.cancel();
}

/// tonic-health, in-process: tonic's own implementation of the health service, whose
/// statuses change and whose named service is registered and then cleared (NOT_FOUND again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_health_server_s_statuses_are_followed() {
    use tonic_health::ServingStatus;
    let stop = tokio_util::sync::CancellationToken::new();
    let (mut reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ledger.v1.Ledger", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let addr = listener.local_addr().expect("addr");
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                until.cancelled(),
            )
            .await;
    });
    let url = format!("grpc://{addr}");
    let config = [
        daemon_section("1s", "1s", ""),
        grpc_service("server", &url, ""),
        grpc_service("ledger", &url, "grpc_service = \"ledger.v1.Ledger\""),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    assert_eq!(service_status(&status, "server")["state"], "up", "{status}");
    assert_eq!(
        service_status(&status, "ledger")["last"]["reason"],
        "grpc_not_serving"
    );
    reporter
        .set_service_status("ledger.v1.Ledger", ServingStatus::Serving)
        .await;
    let (status, up) = d
        .poll_status(Duration::from_secs(10), |s| {
            service_status(s, "ledger")["state"] == "up"
        })
        .await;
    assert!(up, "{status}");
    reporter.clear_service_status("ledger.v1.Ledger").await;
    let (status, gone) = d
        .poll_status(Duration::from_secs(10), |s| {
            service_status(s, "ledger")["last"]["reason"] == "grpc_service_unknown"
        })
        .await;
    assert!(gone, "{status}");
    stop.cancel();
}

/// A "gRPC server" whose answer never ends: read up to 64 KiB, then `body_too_large`, at
/// once rather than at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_grpc_answer_is_cut_at_its_cap() {
    struct Endless;
    impl hyper::body::Body for Endless {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>>
        {
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(
                vec![0u8; 16 * 1024],
            )))))
        }
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = |s: tokio::net::TcpStream| async move {
        let svc = hyper::service::service_fn(|_req| async {
            let mut r = http::Response::new(Endless);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, std::convert::Infallible>(r)
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    };
    let addr = serve_each(any_loopback_port(), serve, &stop).await;
    let config = [
        daemon_section("2s", "2s", ""),
        grpc_service("endless", &format!("grpc://{addr}"), ""),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let s = service_status(&status, "endless");
    assert_eq!(s["last"]["reason"], "body_too_large", "{s}");
    let took = s["last"]["duration_seconds"].as_f64().unwrap_or(9.0);
    assert!(took < 0.9, "cut at the cap, not at the timeout: {took} s");
    stop.cancel();
}
