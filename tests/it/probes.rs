//! End to end: every probe option against real servers on loopback: TLS with certificates made
//! here (valid, expired, wrong host, unknown CA, client certificate required, HTTP/2), tcp://,
//! redirects, IPv4/IPv6, body and header conditions, latency, thresholds and counters.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Certificates, made by the test itself.

/// A certificate and its key.
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn ca(name: &str, not_after: (i32, u8, u8)) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Issued { cert, key }
}

fn leaf(names: &[&str], valid: ((i32, u8, u8), (i32, u8, u8)), issuer: &Issued) -> Issued {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.not_before = rcgen::date_time_ymd(valid.0.0, valid.0.1, valid.0.2);
    params.not_after = rcgen::date_time_ymd(valid.1.0, valid.1.1, valid.1.2);
    let key = KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("signed leaf");
    Issued { cert, key }
}

const VALID: ((i32, u8, u8), (i32, u8, u8)) = ((2024, 1, 1), (2036, 1, 1));
/// 2036-01-01T00:00:00Z and the CA's 2035-06-01T00:00:00Z, as Unix seconds.
const LEAF_NOT_AFTER: u64 = 2_082_758_400;
const CA_NOT_AFTER: u64 = 2_064_268_800;

fn write_pem(dir: &Path, name: &str, pem: String) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Servers.

/// The test HTTP service: a few routes to probe against.
async fn routes(
    req: Request<Incoming>,
    healthy: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let auth = req.headers().contains_key(http::header::AUTHORIZATION);
    let x_api_key = req.headers().contains_key("x-api-key");
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    let redirect = |status: StatusCode, to: &str| {
        let mut r = reply(status, String::new());
        r.headers_mut()
            .insert(http::header::LOCATION, to.parse().expect("location"));
        r
    };
    let r = match path.as_str() {
        "/health" => reply(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let doc = serde_json::json!({
                "method": method,
                "body": String::from_utf8_lossy(&body),
                "authorization": auth,
                "x_api_key": x_api_key,
            });
            reply(StatusCode::OK, doc.to_string())
        }
        "/headers" => {
            let mut r = reply(StatusCode::OK, r#"{"status":"ok"}"#.into());
            r.headers_mut()
                .insert("x-version", "2.4.1".parse().expect("value"));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().expect("value"),
            );
            r
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            reply(StatusCode::OK, "ok".into())
        }
        "/flip" => {
            if healthy.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "ok".into())
            } else {
                reply(StatusCode::INTERNAL_SERVER_ERROR, "down".into())
            }
        }
        "/loop" => redirect(StatusCode::FOUND, "/loop"),
        "/see-other" => redirect(StatusCode::SEE_OTHER, "/echo"),
        p if p.starts_with("/hop/") => match p["/hop/".len()..].parse::<u32>() {
            Ok(0) => reply(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            Ok(n) => redirect(StatusCode::FOUND, &format!("/hop/{}", n - 1)),
            Err(_) => reply(StatusCode::BAD_REQUEST, String::new()),
        },
        p if p.starts_with("/away/") => {
            // An absolute redirect to another origin (given as the rest of the path).
            let to = format!("http://{}/echo", &p["/away/".len()..]);
            redirect(StatusCode::FOUND, &to)
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    };
    Ok(r)
}

/// A plain HTTP/1.1 server on `addr` (port 0 for any).
async fn http_server(
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    stop: &CancellationToken,
) -> SocketAddr {
    serve_each(
        addr,
        move |s| {
            let healthy = healthy.clone();
            async move {
                let svc = service_fn(move |req| routes(req, healthy.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            }
        },
        stop,
    )
    .await
}

/// A TLS server presenting `chain`; it speaks HTTP/2 when `h2` and the client offers it, and
/// requires a client certificate signed by `client_ca` when given.
async fn tls_server(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    h2: bool,
    client_ca: Option<CertificateDer<'static>>,
    stop: &CancellationToken,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).expect("server cert");
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let serve = move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            let healthy = Arc::new(AtomicBool::new(true));
            let svc = service_fn(move |req| routes(req, healthy.clone()));
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            }
        }
    };
    serve_each(any_loopback_port(), serve, stop).await
}

/// A TCP listener that accepts and closes at once (open port, no TLS, no HTTP).
async fn bare_listener(stop: &CancellationToken) -> SocketAddr {
    serve_each(any_loopback_port(), |s| async move { drop(s) }, stop).await
}

fn table(name: &str, url: &str, extra: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n\n")
}

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_have_reasons_that_tell_the_cause_and_expiry_is_reported() {
    let stop = CancellationToken::new();
    let dir = TempDir::new("tls-probe");
    let root = ca("healthsweep test CA", (2035, 6, 1));
    let other_root = ca("someone else's CA", (2035, 6, 1));
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());

    let valid = leaf(&["localhost", "127.0.0.1"], VALID, &root);
    let expired = leaf(&["127.0.0.1"], ((2020, 1, 1), (2021, 1, 1)), &root);
    let wrong_host = leaf(&["other.example"], VALID, &root);
    let unknown = leaf(&["127.0.0.1"], VALID, &other_root);
    let client = leaf(&["probe.client"], VALID, &root);
    let client_cert = write_pem(dir.path(), "client.pem", client.cert.pem());
    let client_key = write_pem(dir.path(), "client-key.pem", client.key.serialize_pem());

    let good = tls_server(
        vec![valid.der(), root.der()],
        valid.key_der(),
        false,
        None,
        &stop,
    )
    .await;
    let h2 = tls_server(vec![valid.der()], valid.key_der(), true, None, &stop).await;
    let old = tls_server(vec![expired.der()], expired.key_der(), false, None, &stop).await;
    let misnamed = tls_server(
        vec![wrong_host.der()],
        wrong_host.key_der(),
        false,
        None,
        &stop,
    )
    .await;
    let stranger = tls_server(vec![unknown.der()], unknown.key_der(), false, None, &stop).await;
    let mtls = tls_server(
        vec![valid.der()],
        valid.key_der(),
        false,
        Some(root.der()),
        &stop,
    )
    .await;

    let trust = format!("ca_file = \"{ca_file}\"");
    let client_auth =
        format!("{trust}\nclient_cert = \"{client_cert}\"\nclient_key = \"{client_key}\"");
    let config = [
        daemon_section("2s", "2s", ""),
        table("valid", &format!("https://{good}/health"), &trust),
        table("h2", &format!("https://{h2}/health"), &trust),
        table("expired", &format!("https://{old}/health"), &trust),
        table("wrong-host", &format!("https://{misnamed}/health"), &trust),
        table(
            "sni-override",
            &format!("https://{misnamed}/health"),
            &format!("{trust}\nserver_name = \"other.example\""),
        ),
        table("unknown-ca", &format!("https://{stranger}/health"), ""),
        table(
            "unknown-ca-insecure",
            &format!("https://{stranger}/health"),
            "insecure_skip_verify = true",
        ),
        table(
            "mtls-without-cert",
            &format!("https://{mtls}/health"),
            &trust,
        ),
        table(
            "mtls-with-cert",
            &format!("https://{mtls}/health"),
            &client_auth,
        ),
        table(
            "tcp-tls",
            &format!("tcp://{good}"),
            &format!("tls = true\n{trust}"),
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let reason = |name: &str| service_status(&status, name)["last"]["reason"].clone();

    let v = service_status(&status, "valid");
    assert_eq!(v["state"], "up", "{v}");
    assert_eq!(v["last"]["http_version"], "1.1");
    let tls = &v["last"]["tls"];
    assert!(
        tls["leaf_expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2036-01-01T00:00:00")),
        "{tls}"
    );
    assert!(
        tls["earliest_expiry_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2035-06-01")),
        "the CA in the chain expires first: {tls}"
    );
    assert!(tls["days_left"].as_i64().is_some_and(|d| d > 3000), "{tls}");

    assert_eq!(service_status(&status, "h2")["state"], "up");
    assert_eq!(service_status(&status, "h2")["last"]["http_version"], "2");
    assert_eq!(reason("expired"), "tls_cert_expired");
    assert_eq!(reason("wrong-host"), "tls_hostname_mismatch");
    assert_eq!(service_status(&status, "sni-override")["state"], "up");
    assert_eq!(reason("unknown-ca"), "tls_unknown_issuer");
    let insecure = service_status(&status, "unknown-ca-insecure");
    assert_eq!(insecure["state"], "up", "{insecure}");
    assert!(
        insecure["last"]["tls"]["leaf_expires_at"].is_string(),
        "expiry is read even unverified"
    );
    assert_eq!(reason("mtls-without-cert"), "tls_handshake");
    assert_eq!(service_status(&status, "mtls-with-cert")["state"], "up");
    let tcp = service_status(&status, "tcp-tls");
    assert_eq!(tcp["state"], "up", "{tcp}");
    assert!(tcp["last"]["tls"]["leaf_expires_at"].is_string());

    let metrics = d.get("/metrics").await.body;
    assert_eq!(
        metric_line(
            &metrics,
            r#"probe_ssl_earliest_cert_expiry{target="valid"}"#
        ),
        Some(
            format!(r#"probe_ssl_earliest_cert_expiry{{target="valid"}} {CA_NOT_AFTER}"#).as_str()
        )
    );
    assert_eq!(
        metric_line(&metrics, r#"probe_ssl_earliest_cert_expiry{target="h2"}"#),
        Some(format!(r#"probe_ssl_earliest_cert_expiry{{target="h2"}} {LEAF_NOT_AFTER}"#).as_str())
    );
    assert!(
        metrics.contains(r#"probe_http_version{target="h2"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"probe_http_version{target="valid"} 1.1"#));
    assert!(metrics.contains(
        r#"healthsweep_probe_failure_reason{target="expired",reason="tls_cert_expired"} 1"#
    ));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_pass_on_an_open_port_and_fail_on_a_closed_one_or_a_missing_handshake() {
    let stop = CancellationToken::new();
    let open = bare_listener(&stop).await;
    let closed = closed_port();
    let config = [
        daemon_section("2s", "2s", ""),
        table("open", &format!("tcp://{open}"), ""),
        table("closed", &format!("tcp://127.0.0.1:{closed}"), ""),
        table("no-tls-there", &format!("tcp://{open}"), "tls = true"),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let open = service_status(&status, "open");
    assert_eq!(open["state"], "up", "{open}");
    assert_eq!(open["last"]["http_status"], serde_json::Value::Null);
    assert_eq!(
        service_status(&status, "closed")["last"]["reason"],
        "connect"
    );
    assert_eq!(
        service_status(&status, "no-tls-there")["last"]["reason"],
        "tls_handshake"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_up_to_the_limit_and_keep_credentials_at_home() {
    let stop = CancellationToken::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let a = http_server("127.0.0.1:0".parse().expect("addr"), healthy.clone(), &stop).await;
    let b = http_server("127.0.0.1:0".parse().expect("addr"), healthy, &stop).await;
    let config = [
        daemon_section("2s", "2s", ""),
        table("two-hops", &format!("http://{a}/hop/2"), "follow_redirects = 3"),
        table("not-followed", &format!("http://{a}/hop/1"), ""),
        table("loop", &format!("http://{a}/loop"), "follow_redirects = 5"),
        table(
            "post-see-other",
            &format!("http://{a}/see-other"),
            "method = \"POST\"\nbody = \"ping\"\nfollow_redirects = 1\nexpect_json = { \"/method\" = \"GET\", \"/body\" = \"\" }",
        ),
        table(
            "cross-origin",
            &format!("http://user:secret@{a}/away/{b}"),
            "follow_redirects = 1\nheaders = { \"X-Api-Key\" = \"k\" }\nexpect_json = { \"/authorization\" = false, \"/x_api_key\" = false }",
        ),
        table(
            "same-origin-auth",
            &format!("http://user:secret@{a}/echo"),
            "headers = { \"X-Api-Key\" = \"k\" }\nexpect_json = { \"/authorization\" = true, \"/x_api_key\" = true }",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let hops = service_status(&status, "two-hops");
    assert_eq!(hops["state"], "up", "{hops}");
    assert_eq!(hops["last"]["redirects"], 2);
    let not = service_status(&status, "not-followed");
    assert_eq!(not["last"]["reason"], "http_status");
    assert_eq!(not["last"]["http_status"], 302);
    let lp = service_status(&status, "loop");
    assert_eq!(lp["last"]["reason"], "too_many_redirects", "{lp}");
    assert_eq!(lp["last"]["redirects"], 5);
    let see_other = service_status(&status, "post-see-other");
    assert_eq!(
        see_other["state"], "up",
        "303 turns the POST into a GET without body: {see_other}"
    );
    let cross = service_status(&status, "cross-origin");
    assert_eq!(
        cross["state"], "up",
        "no Authorization sent to another origin: {cross}"
    );
    assert_eq!(service_status(&status, "same-origin-auth")["state"], "up");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_header_and_latency_conditions_and_request_bodies_are_checked() {
    let stop = CancellationToken::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let s = http_server("127.0.0.1:0".parse().expect("addr"), healthy, &stop).await;
    let config = [
        daemon_section("2s", "2s", ""),
        table("regex-ok", &format!("http://{s}/health"), r#"expect_body_regex = '"status":\s*"ok"'"#),
        table("regex-bad", &format!("http://{s}/health"), r#"expect_body_regex = '"status":\s*"green"'"#),
        table("contains-ok", &format!("http://{s}/health"), r#"expect_body_contains = '"ok"'"#),
        table("contains-bad", &format!("http://{s}/health"), r#"expect_body_contains = "green""#),
        table(
            "headers-ok",
            &format!("http://{s}/headers"),
            r#"expect_header = { "Content-Type" = "application/json", "X-Version" = { regex = '^2\.' } }"#,
        ),
        table("header-wrong", &format!("http://{s}/headers"), r#"expect_header = { "X-Version" = { regex = '^3\.' } }"#),
        table("header-missing", &format!("http://{s}/health"), r#"expect_header = { "X-Version" = "2.4.1" }"#),
        table("slow", &format!("http://{s}/slow"), r#"max_latency = "50ms""#),
        table("fast", &format!("http://{s}/health"), r#"max_latency = "1s""#),
        table(
            "post",
            &format!("http://{s}/echo"),
            "method = \"POST\"\nbody = '{\"probe\":1}'\nexpect_json = { \"/method\" = \"POST\", \"/body\" = '{\"probe\":1}' }",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(1).await;
    let state = |n: &str| service_status(&status, n)["state"].clone();
    let reason = |n: &str| service_status(&status, n)["last"]["reason"].clone();
    assert_eq!(state("regex-ok"), "up");
    assert_eq!(reason("regex-bad"), "body_mismatch");
    assert_eq!(state("contains-ok"), "up");
    assert_eq!(reason("contains-bad"), "body_mismatch");
    assert_eq!(
        state("headers-ok"),
        "up",
        "{}",
        service_status(&status, "headers-ok")
    );
    assert_eq!(reason("header-wrong"), "header_mismatch");
    assert!(
        service_status(&status, "header-missing")["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no x-version header")),
        "{}",
        service_status(&status, "header-missing")
    );
    let slow = service_status(&status, "slow");
    assert_eq!(slow["state"], "degraded", "{slow}");
    assert_eq!(slow["last"]["ok"], true);
    assert_eq!(slow["last"]["degraded"], true);
    assert_eq!(state("fast"), "up");
    assert_eq!(state("post"), "up", "{}", service_status(&status, "post"));
    assert_eq!(status["summary"]["degraded"], 1);

    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains(r#"healthsweep_target_degraded{target="slow"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"healthsweep_target_degraded{target="fast"} 0"#));
    assert!(metrics.contains(r#"probe_success{target="slow"} 1"#));
    assert!(metrics.contains(r#"healthsweep_targets{state="degraded"} 1"#));
    stop.cancel();
}

/// Polls `/status/{name}` until `cond` holds (bounded), returning the document.
async fn until(
    d: &Daemon,
    name: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (status, ok) = d
        .poll_status(Duration::from_secs(15), |s| {
            s["services"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .is_some_and(&cond)
        })
        .await;
    assert!(ok, "{name}: never {what}: {status}");
    service_status(&status, name).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_keep_a_single_flap_from_changing_the_state() {
    let stop = CancellationToken::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let s = http_server("127.0.0.1:0".parse().expect("addr"), healthy.clone(), &stop).await;
    let config = [
        daemon_section("500ms", "400ms", ""),
        table(
            "flappy",
            &format!("http://{s}/flip"),
            "failure_threshold = 2\nsuccess_threshold = 2",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    until(&d, "flappy", "up", |s| s["state"] == "up").await;

    healthy.store(false, Ordering::SeqCst);
    let one = until(&d, "flappy", "failed once", |s| {
        s["consecutive_failures"] == 1
    })
    .await;
    assert_eq!(one["state"], "up", "one failure is not enough: {one}");
    assert_eq!(
        one["last"]["ok"], false,
        "the raw result is shown beside the state"
    );
    let two = until(&d, "flappy", "failed twice", |s| {
        s["consecutive_failures"] == 2
    })
    .await;
    assert_eq!(two["state"], "down", "{two}");

    healthy.store(true, Ordering::SeqCst);
    let one = until(&d, "flappy", "passed once", |s| {
        s["consecutive_successes"] == 1
    })
    .await;
    assert_eq!(one["state"], "down", "one success is not enough: {one}");
    let two = until(&d, "flappy", "passed twice", |s| {
        s["consecutive_successes"] == 2
    })
    .await;
    assert_eq!(two["state"], "up", "{two}");
    stop.cancel();
}

fn counter(metrics: &str, target: &str, result: &str) -> u64 {
    let prefix = format!(r#"healthsweep_checks_total{{target="{target}",result="{result}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counters_survive_a_reload_for_unchanged_services() {
    let stop = CancellationToken::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let s = http_server("127.0.0.1:0".parse().expect("addr"), healthy, &stop).await;
    let closed = closed_port();
    let before = [
        daemon_section("500ms", "400ms", ""),
        table("kept", &format!("http://{s}/health"), ""),
        table("refused", &format!("http://127.0.0.1:{closed}/health"), ""),
    ]
    .concat();
    let d = Daemon::start(&before);
    d.status_after_sweeps(3).await;
    let metrics = d.get("/metrics").await.body;
    let kept_ok = counter(&metrics, "kept", "ok");
    let refused = counter(&metrics, "refused", "connect");
    assert!(kept_ok >= 3 && refused >= 3, "{metrics}");

    d.write_config(
        &[
            before.as_str(),
            &table("added", &format!("http://{s}/health"), ""),
        ]
        .concat(),
    );
    d.signal("HUP");
    let reloaded = d.status_at_generation(2).await;
    let number = reloaded["sweep"]["number"].as_u64().unwrap_or(0);
    d.status_after_sweeps(number + 1).await;
    let metrics = d.get("/metrics").await.body;
    assert!(
        counter(&metrics, "kept", "ok") > kept_ok,
        "not reset by the reload:\n{metrics}"
    );
    assert!(counter(&metrics, "refused", "connect") > refused);
    assert!(counter(&metrics, "added", "ok") <= 2);
    let status = d.json("/status/kept").await;
    assert!(
        status["checks"]["ok"].as_u64().unwrap_or(0) > kept_ok,
        "{status}"
    );
    stop.cancel();
}

/// IPv4 and IPv6: a name with both addresses whose service listens on IPv6 only. Needs a
/// private /etc/hosts, so the daemon runs in a mount namespace of its own (root and unshare,
/// as on the CI machines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_family_picks_the_addresses_tried_and_any_tries_each_until_one_connects() {
    if !needs(&[Tool::Root]) {
        return;
    }
    let stop = CancellationToken::new();
    let healthy = Arc::new(AtomicBool::new(true));
    let v6 = http_server("[::1]:0".parse().expect("addr"), healthy, &stop).await;
    let port = v6.port();
    let dir = TempDir::new("hosts");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 dual.test\n::1 dual.test\n",
    )
    .expect("hosts");
    let config = [
        daemon_section("2s", "2s", ""),
        table("any", &format!("http://dual.test:{port}/health"), ""),
        table(
            "ipv6",
            &format!("http://dual.test:{port}/health"),
            "ip_family = \"ipv6\"",
        ),
        table(
            "ipv4",
            &format!("http://dual.test:{port}/health"),
            "ip_family = \"ipv4\"",
        ),
        table(
            "ipv4-system-resolver",
            &format!("http://dual.test:{port}/health"),
            "ip_family = \"ipv4\"\nresolver = \"system\"",
        ),
        table(
            "ipv6-system-resolver",
            &format!("http://dual.test:{port}/health"),
            "ip_family = \"ipv6\"\nresolver = \"system\"",
        ),
        table(
            "literal",
            &format!("http://[::1]:{port}/health"),
            "ip_family = \"ipv6\"",
        ),
    ]
    .concat();
    let hosts = hosts.display().to_string();
    let d = Daemon::with_config(&config)
        .with_file_over(std::path::Path::new(&hosts), "/etc/hosts")
        .start();
    let status = d.status_after_sweeps(1).await;
    let any = service_status(&status, "any");
    assert_eq!(any["state"], "up", "IPv4 refused, IPv6 tried next: {any}");
    assert_eq!(service_status(&status, "ipv6")["state"], "up");
    assert_eq!(service_status(&status, "ipv4")["last"]["reason"], "connect");
    assert_eq!(
        service_status(&status, "ipv4-system-resolver")["last"]["reason"],
        "connect"
    );
    assert_eq!(
        service_status(&status, "ipv6-system-resolver")["state"],
        "up"
    );
    assert_eq!(service_status(&status, "literal")["state"], "up");
    stop.cancel();
}

/// HTTPS services whose server chose HTTP/2 share one connection, as gRPC checks do: after
/// the first sweep every check of the twenty runs as a stream on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_services_on_an_h2_server_share_one_connection() {
    let stop = CancellationToken::new();
    let dir = TempDir::new("h2-shared");
    let root = ca("healthsweep test CA", (2035, 6, 1));
    let ca_file = write_pem(dir.path(), "ca.pem", root.cert.pem());
    let valid = leaf(&["localhost", "127.0.0.1"], VALID, &root);
    let h2 = tls_server(vec![valid.der()], valid.key_der(), true, None, &stop).await;
    let mut config = daemon_section("1s", "1s", "");
    for i in 0..20 {
        config.push_str(&table(
            &format!("s{i}"),
            &format!("https://{h2}/health"),
            &format!("ca_file = \"{ca_file}\""),
        ));
    }
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(3).await;
    assert_eq!(status["summary"]["up"], 20, "{}", status["summary"]);
    for i in 0..20 {
        let s = service_status(&status, &format!("s{i}"));
        assert_eq!(s["last"]["http_version"], "2", "{s}");
        assert_eq!(s["last"]["reused_connection"], true, "{s}");
    }
    assert_eq!(
        status["sweep"]["idle_connections"], 1,
        "{}",
        status["sweep"]
    );
    stop.cancel();
}
