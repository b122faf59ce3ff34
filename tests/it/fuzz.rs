//! Property tests over arbitrary input: the config parser and the HTTP routing return errors,
//! never panic. Three layers: arbitrary text and TOML built from the real keys into
//! `config::parse`; arbitrary methods, paths and query strings into `api::handle`; arbitrary
//! bytes at the real daemon's socket. Seeds are fixed by proptest's defaults per run; a
//! failure prints the minimal input.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use healthsweep::api::{self, Api};
use healthsweep::config::{self, Loaded};
use healthsweep::metrics::Metrics;
use healthsweep::reload::ReloadStatus;
use healthsweep::snapshot::Snapshot;
use http::{Method, Request};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Keys of every table, and some that are not keys anywhere.
const KEYS: &[&str] = &[
    "listen",
    "interval",
    "deadline",
    "max_in_flight",
    "reload_api",
    "auth",
    "tls",
    "name",
    "url",
    "group",
    "labels",
    "method",
    "headers",
    "header_files",
    "services_dir",
    "timeout",
    "expect_status",
    "expect_json",
    "expect_body_contains",
    "max_body_bytes",
    "connection",
    "resolver",
    "expect_body_regex",
    "expect_header",
    "max_latency",
    "body",
    "follow_redirects",
    "ip_family",
    "failure_threshold",
    "success_threshold",
    "ca_file",
    "client_cert",
    "client_key",
    "server_name",
    "insecure_skip_verify",
    "shard",
    "token_file",
    "protect",
    "cert_file",
    "key_file",
    "nope",
    "service",
    "daemon",
];
const TABLES: &[&str] = &[
    "",
    "[daemon]",
    "[defaults]",
    "[[service]]",
    "[daemon.auth]",
    "[daemon.tls]",
    "[service]",
    "[[daemon]]",
    "[defaults.headers]",
];

/// A TOML value of any type, rendered as TOML.
fn toml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        ".{0,40}".prop_map(|s| toml::Value::String(s).to_string()),
        prop::sample::select(vec![
            "\"5s\"",
            "\"0s\"",
            "\"2xx\"",
            "\"GET\"",
            "\"http://127.0.0.1:1/h\"",
            "\"https://[::1]:99999/\"",
            "\"http://u:p@h/\"",
            "\"/status\"",
            "\"127.0.0.1:0\"",
            "\"reload\"",
            "\"1h30m\"",
            "\"ftp://x\"",
            "\"\"",
            "\"x/y\"",
            "\"${X}\"",
            "\"$${X\"",
            "\"http://u:${HOME}@h/\"",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
    ];
    scalar.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-zA-Z_/\"-]{0,8}", inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{} = {v}", toml::Value::String(k)))
                    .collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// A document of tables holding the real keys with values of any type.
fn toml_document() -> impl Strategy<Value = String> {
    let line = (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}"));
    let table = (
        prop::sample::select(TABLES),
        prop::collection::vec(line, 0..6),
    )
        .prop_map(|(t, lines)| format!("{t}\n{}\n", lines.join("\n")));
    // Services with a name and a URL, so validation (not only parsing) is exercised.
    let service = (
        prop::sample::select(vec!["a", "b", "a", "", "x/y", "é"]),
        prop::sample::select(vec![
            "http://127.0.0.1:1/h",
            "https://example.test/",
            "http://u:p@[::1]:8/x?y",
            "ftp://x",
            "http://",
            "nonsense",
        ]),
        prop::collection::vec(
            (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
            0..4,
        ),
    )
        .prop_map(|(name, url, lines)| {
            format!(
                "[[service]]\nname = \"{name}\"\nurl = \"{url}\"\n{}\n",
                lines.join("\n")
            )
        });
    prop::collection::vec(prop_oneof![table, service], 0..6).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_config_parser_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        let _ = config::parse(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn the_config_parser_never_panics_on_toml_of_the_right_shape(doc in toml_document()) {
        match config::parse(Path::new("fuzz.toml"), &doc) {
            Ok(c) => {
                // What parses is valid: the invariants the rest of the daemon relies on.
                prop_assert!(c.daemon.deadline <= c.daemon.interval);
                let mut names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                prop_assert_eq!(names.len(), c.services.len());
            }
            Err(e) => {
                // Every error renders, and names the file.
                prop_assert!(e.to_string().contains("fuzz.toml"));
                prop_assert!(!e.lines().is_empty());
            }
        }
    }
}

/// An `Api` over a config with two services, as the server would have it.
fn api() -> Api {
    let config = config::parse(
        Path::new("fuzz.toml"),
        "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\ngroup = \"g\"\n\n[[service]]\nname = \"b c\"\nurl = \"http://127.0.0.1:1/\"\n",
    )
    .expect("valid config");
    let loaded = Loaded {
        generation: 1,
        config: Arc::new(config),
    };
    let (_snapshot_tx, snapshots) =
        tokio::sync::watch::channel(Arc::new(Snapshot::new(&loaded, SystemTime::now())));
    let (_status_tx, reload_status) = tokio::sync::watch::channel(ReloadStatus {
        successful: true,
        last_success: SystemTime::now(),
        last_error: None,
    });
    let (reload_requests, _rx) = tokio::sync::mpsc::channel(1);
    Api {
        metrics: Arc::new(Metrics::new(snapshots.clone(), reload_status.clone())),
        snapshots,
        reload_status,
        reload_requests,
        discovery: tokio::sync::watch::channel(Arc::new(Vec::new())).1,
        history: Default::default(),
        windows: Default::default(),
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"
        ])
        .prop_map(str::to_string),
        "[A-Za-z!#$%&'*+.^_`|~-]{1,12}",
    ]
}

fn path_and_query() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        prop::sample::select(vec![
            "",
            "status",
            "metrics",
            "healthz",
            "readyz",
            "-",
            "reload",
            "a",
            "b%20c",
            "%ff",
            "%00",
            "..",
            ".",
            "%2F",
            "status%2Fa",
            "%",
            "%zz",
            "service",
            "badge",
            "a.svg",
            "uptime",
            "24h.svg",
            "ui",
            "overview",
            "assets",
            "page.js",
            "maintenance",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "state", "group", "pretty", "x", "", "state[]", "q", "page", "per_page",
                ]),
                "[a-zA-Z0-9%=&+._~-]{0,10}",
            ),
            0..4
        )
        .prop_map(|kv| {
            let pairs: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", pairs.join("&"))
        }),
    ];
    (prop::collection::vec(segment, 1..5), query)
        .prop_map(|(segments, q)| format!("/{}{q}", segments.join("/")))
}

#[test]
fn routing_answers_every_method_path_and_query_with_json_and_never_a_5xx() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = api();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 1024,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&(method(), path_and_query()), |(method, uri)| {
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                return Ok(());
            };
            let Ok(req) = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
            else {
                return Ok(());
            };
            let path = req.uri().path().to_string();
            let r = rt.block_on(api::handle(&api, req));
            let status = r.status().as_u16();
            prop_assert!(
                [200, 400, 403, 404, 405, 503].contains(&status),
                "{method} {uri}: {status}"
            );
            let is_metrics = path == "/metrics" && status == 200;
            let content_type = r
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            // Pages, their assets and badges (a badge even for an unknown service, so a wiki
            // page is not broken) are not JSON; every other answer and error is.
            let is_page = status == 200
                && ["/service/", "/assets/", "/badge/"]
                    .iter()
                    .any(|p| path.starts_with(p));
            let is_badge = path.starts_with("/badge/") && content_type == "image/svg+xml";
            if is_page || is_badge {
                prop_assert!(
                    [
                        "text/html; charset=utf-8",
                        "text/javascript; charset=utf-8",
                        "text/css; charset=utf-8",
                        "image/svg+xml"
                    ]
                    .contains(&content_type.as_str()),
                    "{} {}: {}",
                    method,
                    uri,
                    content_type
                );
            } else if !is_metrics {
                prop_assert_eq!(content_type, "application/json", "{} {}", method, uri);
                let body = rt.block_on(http_body_util::BodyExt::collect(r.into_body()));
                let bytes = body.expect("a Full body cannot fail").to_bytes();
                let doc: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("{method} {uri}: not JSON: {e}")))?;
                // /readyz answers 503 before the first sweep with its own documented shape.
                if status >= 400 && path != "/readyz" {
                    prop_assert!(doc["error"].is_string(), "{} {}: {}", method, uri, doc);
                }
            }
            Ok(())
        })
        .expect("routing property holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_at_the_socket_get_a_4xx_or_a_close_and_the_daemon_lives_on() {
    let d = Daemon::start(&format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("a", &format!("http://127.0.0.1:{}/", closed_port()))
    ));
    let addr = d.addr;
    let inputs = tokio::task::spawn_blocking(|| {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: 200,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        let strategy = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            (
                method(),
                path_and_query(),
                prop::collection::vec("[ -~]{0,40}", 0..5)
            )
                .prop_map(|(m, p, headers)| format!(
                    "{m} {p} HTTP/1.1\r\n{}\r\n",
                    headers.join("\r\n")
                )
                .into_bytes()),
        ];
        (0..200)
            .map(|_| strategy.new_tree(&mut runner).expect("generate").current())
            .collect::<Vec<Vec<u8>>>()
    })
    .await
    .expect("generate inputs");
    for input in inputs {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(&input).await;
        // Terminate whatever head it was, so the server need not wait for its timeout.
        let _ = s.write_all(b"\r\n\r\n").await;
        // And end the stream: the server answers what it has, then closes.
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
        if buf.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer to {input:?}: {text}"));
        assert!(status < 500, "{status} for {input:?}: {text}");
    }
    assert_eq!(d.get("/healthz").await.status, 200, "still serving");
    assert!(d.logs_containing("panicked").is_empty());
}
