//! The Prometheus side of operating healthsweep, tested with the real tools: `promtool` checks
//! and unit-tests the alert rules; a real Prometheus scrapes the real daemon with the shipped
//! scrape config and evaluates the shipped alerts; and every metric the Grafana dashboard and
//! the alerts use must be one the daemon really exposes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Metrics the dashboard and alerts use that only some kinds of service have (this test's small
/// fleet is plain HTTP), each with the test that shows the daemon exposing it. Everything else
/// must be in this test's real `/metrics` output.
const CONDITIONAL_METRICS: &[(&str, &str)] = &[
    (
        "probe_ssl_earliest_cert_expiry",
        "TLS services only; tests/probes.rs tls_failures_have_reasons_that_tell_the_cause_and_expiry_is_reported",
    ),
    (
        "healthsweep_target_blocked",
        "services with depends_on only; tests/alerting.rs a_down_dependency_blocks_its_dependents_through_the_chain",
    ),
    (
        "healthsweep_target_maintenance",
        "services a maintenance window names only; tests/alerting.rs",
    ),
];

/// Series Prometheus makes itself for every target.
const PROMETHEUS_METRICS: &[&str] = &["up"];

pub(crate) fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let (ok, said) = run_tool(
        Command::new("promtool").args(args).current_dir(dir),
        "apt-get install prometheus (.ci/run does)",
    );
    assert!(ok, "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !needs(&[Tool::Promtool]) {
        return;
    }
    let dir = deploy("prometheus");
    let said = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 8 rules found"), "{said}");
    let said = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn the_scrape_config_passes_promtool_check() {
    if !needs(&[Tool::Promtool]) {
        return;
    }
    let said = promtool(
        &["check", "config", "prometheus.yml"],
        &deploy("prometheus"),
    );
    assert!(said.contains("SUCCESS: 1 rule files found"), "{said}");
}

/// The alert rules as Prometheus loads them: every rule's name and expression.
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("read alerts");
    let doc: Value = serde_norway::from_str(&text).expect("alerts.yml is YAML");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().expect("an alert name").to_string();
            (name, r["expr"].as_str().expect("an expr").to_string())
        })
        .collect()
}

/// Every PromQL expression in the dashboard: panel targets, variable queries, annotations.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/healthsweep.json")).expect("read dashboard");
    let doc: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a target expr").to_string());
        }
    }
    for var in doc["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = var["query"]["query"].as_str() {
            // label_values(SELECTOR, label): the selector is the PromQL part.
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _)| selector)
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            exprs.push(selector.to_string());
        }
    }
    for annotation in doc["annotations"]["list"].as_array().expect("annotations") {
        if let Some(expr) = annotation["expr"].as_str() {
            exprs.push(expr.to_string());
        }
    }
    exprs
}

/// The metric names a PromQL expression reads: identifiers left once strings, label
/// matchers, ranges, grouping lists, functions, keywords and Grafana variables are set aside.
fn metric_names(expr: &str) -> BTreeSet<String> {
    /// Operators, modifiers and aggregations (which may be followed by `by (...)` rather
    /// than their parenthesis).
    #[rustfmt::skip]
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
        "group_left", "group_right", "inf", "nan", "sum", "min", "max", "avg", "group",
        "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, end: char| {
        chars[from..]
            .iter()
            .position(|&c| c == end)
            .map_or(chars.len(), |p| from + p + 1)
    };
    let next_non_space = |from: usize| (from..chars.len()).find(|&j| !chars[j].is_whitespace());
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_to(i + 1, c),
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '$' => {
                // Grafana variables: $name, ${name}, $__rate_interval.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_to(i, '}');
                } else {
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let before_paren = next_non_space(i).filter(|&j| chars[j] == '(');
                if GROUPING.contains(&word.as_str()) {
                    if let Some(j) = before_paren {
                        i = skip_to(j + 1, ')');
                    }
                } else if before_paren.is_none() && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            // Numbers (and exponents such as 1e3) are not names.
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql_and_nothing_else_is() {
    let names = |e| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"sum by (state) (healthsweep_targets{job="healthsweep", state=~"up|down"})"#),
        ["healthsweep_targets"]
    );
    assert_eq!(
        names("time() - a_seconds{job=\"x\"} > 3 * b_seconds unless on (job, instance) c"),
        ["a_seconds", "b_seconds", "c"]
    );
    assert_eq!(
        names("increase(x_total[$__rate_interval]) * 60 and y offset 5m or vector(1e3)"),
        ["x_total", "y"]
    );
    assert_eq!(
        names(r#"count_values("code", z{target=~"$target"}) - bool ${v} group_left (a) w"#),
        ["w", "z"]
    );
}

/// Metric names in a text exposition (its `# TYPE` lines).
fn exposed(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Two healthy services and two down ones (a 500 and a refused port).
async fn small_fleet(stop: &CancellationToken) -> String {
    let m = mock(stop).await;
    format!(
        "{}{}{}{}{}",
        daemon_section("1s", "1s", ""),
        service("orders-api", &m.url("/health")),
        service("search", &m.url("/search/health")),
        service("payments-api", &m.url("/fail/500")),
        service(
            "ledger",
            &format!("http://127.0.0.1:{}/health", closed_port())
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_one_the_daemon_exposes() {
    let stop = CancellationToken::new();
    let d = Daemon::start(&small_fleet(&stop).await);
    d.status_after_sweeps(1).await;
    let metrics = exposed(&d.get("/metrics").await.body);
    assert!(metrics.contains("probe_success"), "{metrics:?}");

    let mut used: BTreeSet<String> = BTreeSet::new();
    for (_, expr) in alert_rules() {
        used.extend(metric_names(&expr));
    }
    for expr in dashboard_exprs() {
        used.extend(metric_names(&expr));
    }
    // The extraction found the metrics at the heart of both, so it is not vacuous.
    for core in [
        "probe_success",
        "probe_duration_seconds",
        "healthsweep_probe_failure_reason",
        "healthsweep_last_sweep_duration_seconds",
        "healthsweep_sweep_deadline_seconds",
        "healthsweep_config_last_reload_successful",
    ] {
        assert!(used.contains(core), "{core} not found in {used:?}");
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|m| !metrics.contains(*m))
        .filter(|m| !PROMETHEUS_METRICS.contains(&m.as_str()))
        .filter(|m| !CONDITIONAL_METRICS.iter().any(|(p, _)| p == m))
        .collect();
    assert!(
        unknown.is_empty(),
        "used but not exposed: {unknown:?}; exposed: {metrics:?}"
    );
    stop.cancel();
}

/// A real Prometheus on loopback, killed on drop.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the shipped `prometheus.yml` and `alerts.yml`, pointed at
    /// `target` and sped up to scrape and evaluate every second.
    async fn start(target: SocketAddr) -> Prometheus {
        let shipped =
            std::fs::read_to_string(deploy("prometheus/prometheus.yml")).expect("read config");
        let config = replace_once(&shipped, "- localhost:9915", &format!("- {target}"));
        let config = replace_once(&config, "scrape_interval: 15s", "scrape_interval: 1s");
        let config = replace_once(
            &config,
            "evaluation_interval: 15s",
            "evaluation_interval: 1s",
        );
        let config = replace_once(&config, "scrape_timeout: 10s", "scrape_timeout: 1s");
        let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts");
        Prometheus::with_config(&config, &[("alerts.yml", &alerts)]).await
    }

    /// Starts Prometheus on `config` (its `prometheus.yml`), with `files` beside it.
    pub(crate) async fn with_config(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write file");
        }
        // A port nothing listens on now; if another process takes it first, Prometheus exits
        // and the wait below says so.
        let addr = SocketAddr::from(([127, 0, 0, 1], closed_port()));
        let mut child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prometheus is installed (.ci/run installs it)");
        // Ready, or exited (a port taken meanwhile, a bad config): either ends the wait.
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut ready = false;
        while !ready && tokio::time::Instant::now() < end {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            // Not listening yet is the usual answer at first; `get` expects a listener.
            ready = tokio::net::TcpStream::connect(addr).await.is_ok()
                && tokio::time::timeout(Duration::from_secs(2), get(addr, "/-/ready"))
                    .await
                    .is_ok_and(|r| r.status == 200);
            if !ready {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !ready || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("prometheus output");
            panic!(
                "prometheus did not become ready on {addr}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Its API's answer at `path` (JSON).
    pub(crate) async fn api(&self, path: &str) -> Value {
        get(self.addr, path).await.json()
    }

    /// An instant query; panics unless Prometheus answers `success`.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let r = get(self.addr, &format!("/api/v1/query?query={q}")).await;
        let v = r.json();
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().expect("a vector").clone()
    }

    /// The loaded alerting rules by name: (state, firing-or-pending alerts).
    async fn rules(&self) -> Vec<Value> {
        let v = get(self.addr, "/api/v1/rules?type=alert").await.json();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").clone())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the shipped prometheus.yml has exactly one {from:?}"
    );
    text.replace(from, to)
}

/// GET over HTTP/1.0, so Prometheus (Go) answers with a plain body, never chunked.
async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    raw(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
}

fn targets(result: &[Value]) -> BTreeSet<(String, String)> {
    result
        .iter()
        .map(|s| {
            (
                s["metric"]["target"].as_str().unwrap_or("").to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_probe_success_and_evaluates_the_alerts_for_a_down_service() {
    if !needs(&[Tool::Prometheus, Tool::Promtool]) {
        return;
    }
    let stop = CancellationToken::new();
    let d = Daemon::start(&small_fleet(&stop).await);
    d.status_after_sweeps(1).await;
    let prom = Prometheus::start(d.addr).await;

    // Two scrapes of the daemon (each scrape writes one `up` sample).
    let scraped = wait_for(Duration::from_secs(20), || async {
        prom.query(r#"count_over_time(up{job="healthsweep"}[1m]) >= 2"#)
            .await
            .len()
            == 1
    })
    .await;
    assert!(scraped, "no two scrapes within 20 s");
    let up = prom.query(r#"up{job="healthsweep"}"#).await;
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    let probes = prom.query(r#"probe_success{job="healthsweep"}"#).await;
    assert_eq!(
        targets(&probes),
        set(&[
            ("ledger", "0"),
            ("orders-api", "1"),
            ("payments-api", "0"),
            ("search", "1"),
        ]),
        "{probes:?}"
    );

    // The shipped alert expressions, evaluated by Prometheus on the scraped data: the down
    // services and nothing else. (Their `for:` is minutes, so the alert itself is pending.)
    let rules = alert_rules();
    let expr = |name: &str| {
        rules
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    let down = prom.query(&expr("HealthsweepServiceDown")).await;
    assert_eq!(
        targets(&down),
        set(&[("ledger", "0"), ("payments-api", "0")]),
        "{down:?}"
    );
    for quiet in [
        "HealthsweepSweepStale",
        "HealthsweepSweepDeadlineExceeded",
        "HealthsweepConfigReloadFailed",
        "HealthsweepCertificateExpiringSoon",
        "HealthsweepDown",
        "HealthsweepAbsent",
        "HealthsweepShardsMisconfigured",
    ] {
        let result = prom.query(&expr(quiet)).await;
        assert!(result.is_empty(), "{quiet} matches: {result:?}");
    }

    // Prometheus' own rule evaluation agrees: ServiceDown pending for exactly the down
    // services, every other alert inactive.
    let pending = wait_for(Duration::from_secs(15), || async {
        prom.rules()
            .await
            .iter()
            .any(|r| r["name"] == "HealthsweepServiceDown" && r["state"] == "pending")
    })
    .await;
    assert!(
        pending,
        "HealthsweepServiceDown never pending: {:?}",
        prom.rules().await
    );
    let rules_now = prom.rules().await;
    assert_eq!(rules_now.len(), rules.len(), "{rules_now:?}");
    for rule in &rules_now {
        if rule["name"] == "HealthsweepServiceDown" {
            let alerting: BTreeSet<&str> = rule["alerts"]
                .as_array()
                .expect("alerts")
                .iter()
                .map(|a| a["labels"]["target"].as_str().expect("a target"))
                .collect();
            assert_eq!(alerting, BTreeSet::from(["ledger", "payments-api"]));
        } else {
            assert_eq!(rule["state"], "inactive", "{rule}");
        }
    }

    // Every dashboard query is valid PromQL to this Prometheus (Grafana's variables filled in).
    for expr in dashboard_exprs() {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$target", ".*");
        prom.query(&promql).await;
    }
    stop.cancel();
}

/// `/metrics` gzipped when asked, as Prometheus asks: streamed (chunked), valid gzip, the same
/// families as the plain text, and promtool accepts what it decodes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gzipped_when_the_scraper_asks() {
    use std::io::Read as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stop = CancellationToken::new();
    let d = Daemon::start(&small_fleet(&stop).await);
    d.status_after_sweeps(1).await;
    let mut s = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(
        head.contains("transfer-encoding: chunked"),
        "streamed: {head}"
    );
    // De-chunk.
    let mut body = &raw[split + 4..];
    let mut zipped = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..line_end]).expect("hex").trim(),
            16,
        )
        .expect("a size");
        body = &body[line_end + 2..];
        if size == 0 {
            break;
        }
        zipped.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    assert!(text.contains("probe_success{"), "{text}");
    assert!(zipped.len() * 3 < text.len(), "compressed");
    let plain = d.get("/metrics").await;
    assert!(
        plain.header("content-encoding").is_none(),
        "plain unless asked"
    );
    promtool_check_metrics(&text);
    stop.cancel();
}
