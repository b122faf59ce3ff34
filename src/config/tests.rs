use std::path::{Path, PathBuf};

use super::*;

fn parse_str(src: &str) -> Result<Config, ConfigError> {
    parse(Path::new("test.toml"), src)
}

fn problems(src: &str) -> Vec<Problem> {
    match parse_str(src) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Every file in `testdata/invalid` is one config error. Its header says what must be reported:
/// `# error:` a substring of the message, `# line:` the line, `# service:` the service named.
#[test]
fn every_invalid_fixture_is_rejected_with_its_message_line_and_service() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("testdata/invalid exists") {
        let path = entry.expect("readable dir entry").path();
        let src = std::fs::read_to_string(&path).expect("fixture readable");
        let header = |key: &str| {
            src.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                .map(str::trim)
                .map(str::to_string)
        };
        let want_error = header("error").expect("fixture has '# error:'");
        let want_line: usize = header("line")
            .expect("fixture has '# line:'")
            .parse()
            .expect("line is a number");
        let want_service = header("service");

        let err = parse(&path, &src).expect_err(&format!("{} must be rejected", path.display()));
        let text = err.to_string();
        assert!(
            text.contains(&want_error),
            "{}: error {text:?} does not contain {want_error:?}",
            path.display()
        );
        assert!(
            text.contains(&path.display().to_string()),
            "{}: error does not name the file: {text}",
            path.display()
        );
        match &err {
            ConfigError::Parse { location, .. } => {
                assert_eq!(
                    location.map(|l| l.line),
                    Some(want_line),
                    "{}: {text}",
                    path.display()
                );
            }
            ConfigError::Invalid { problems, .. } => {
                let p = problems
                    .iter()
                    .find(|p| p.to_string().contains(&want_error))
                    .expect("the expected problem");
                assert_eq!(
                    p.location.map(|l| l.line),
                    Some(want_line),
                    "{}: {text}",
                    path.display()
                );
                assert_eq!(p.service, want_service, "{}", path.display());
            }
            ConfigError::Read { .. } => panic!("fixture could not be read"),
        }
        seen += 1;
    }
    assert!(seen >= 20, "expected the fixture table, found {seen} files");
}

#[test]
fn the_example_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/healthsweep.toml");
    let config = load(&path).expect("config/healthsweep.toml is valid");
    assert!(!config.services.is_empty());
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = parse_str("").expect("empty config is valid");
    assert_eq!(c.daemon, Daemon::default());
    assert_eq!(c.daemon.listen.to_string(), "127.0.0.1:9915");
    assert_eq!(c.daemon.interval, Duration::from_secs(15));
    assert_eq!(c.daemon.deadline, Duration::from_secs(5));
    assert!(!c.daemon.reload_api);
    assert!(c.services.is_empty());
}

#[test]
fn loading_an_empty_file_is_refused_as_a_truncated_write() {
    let dir = std::env::temp_dir().join(format!("healthsweep-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("empty.toml");
    for blank in ["", "\n  \n", "# only a comment\n\n"] {
        std::fs::write(&path, blank).expect("write");
        let err = load(&path).expect_err("an empty file is refused");
        assert!(err.to_string().contains("empty"), "{err}");
    }
    std::fs::write(&path, "[daemon]\n").expect("write");
    assert!(load(&path).is_ok(), "a file with a table is not blank");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn defaults_apply_unless_a_service_overrides_them() {
    let c = parse_str(
        r#"
        [daemon]
        deadline = "3s"
        [defaults]
        timeout = "2s"
        expect_status = ["2xx", 304]
        headers = { "X-Probe" = "healthsweep", "X-Team" = "all" }
        [[service]]
        name = "a"
        url = "http://127.0.0.1:8000/health"
        [[service]]
        name = "b"
        url = "https://example.test/h?x=1"
        timeout = "1s"
        expect_status = [200]
        headers = { "X-Team" = "b" }
        method = "head"
        "#,
    )
    .expect("valid");
    let a = &c.services[0];
    assert_eq!(a.timeout, Duration::from_secs(2));
    assert_eq!(
        a.expect.status,
        vec![StatusMatcher::Class(2), StatusMatcher::Code(304)]
    );
    assert_eq!(a.method, Method::GET);
    assert_eq!(a.header("x-team").expect("header set"), "all");
    assert_eq!(a.target.port, 8000);
    assert_eq!(a.target.ip, Some("127.0.0.1".parse().expect("ip")));
    assert_eq!(a.target.authority, "127.0.0.1:8000");
    let b = &c.services[1];
    assert_eq!(b.timeout, Duration::from_secs(1));
    assert_eq!(b.expect.status, vec![StatusMatcher::Code(200)]);
    assert_eq!(b.method, Method::HEAD);
    assert_eq!(b.header("x-team").expect("header set"), "b");
    assert_eq!(b.header("x-probe").expect("header set"), "healthsweep");
    assert!(b.target.tls);
    assert_eq!(b.target.port, 443);
    assert_eq!(b.target.ip, None);
    assert_eq!(b.target.authority, "example.test");
    assert_eq!(b.target.path_and_query, "/h?x=1");
}

#[test]
fn timeout_defaults_to_the_deadline() {
    let c = parse_str(
        r#"
        [daemon]
        deadline = "3s"
        [[service]]
        name = "a"
        url = "http://127.0.0.1:8000/health"
        "#,
    )
    .expect("valid");
    assert_eq!(c.services[0].timeout, Duration::from_secs(3));
}

#[test]
fn all_problems_are_reported_at_once() {
    let p = problems(
        r#"
        [daemon]
        interval = "nope"
        [[service]]
        name = "a"
        url = "ftp://x"
        [[service]]
        name = "a"
        url = "http://127.0.0.1/"
        labels = { job = "x" }
        "#,
    );
    assert_eq!(p.len(), 4, "{p:#?}");
}

#[test]
fn url_credentials_become_basic_auth_and_are_redacted_for_display() {
    let c = parse_str(
        r#"
        [[service]]
        name = "a"
        url = "http://probe:s3cr%40t@127.0.0.1:8000/health"
        "#,
    )
    .expect("valid");
    let s = &c.services[0];
    // base64("probe:s3cr@t")
    assert_eq!(
        s.header("authorization").expect("header set"),
        "Basic cHJvYmU6czNjckB0"
    );
    let shown = s.redacted_url();
    assert_eq!(shown, "http://probe:REDACTED@127.0.0.1:8000/health");
    assert!(!shown.contains("s3cr"));
}

#[test]
fn secret_values_are_never_echoed_in_errors() {
    let err = parse_str(
        "[[service]]\nname = \"a\"\nurl = \"http://u:canary-secret@\"\nheaders = { Authorization = \"canary-secret\\u0001\" }\n",
    )
    .expect_err("invalid");
    assert!(!err.to_string().contains("canary-secret"), "{err}");
}

#[test]
fn expect_json_values_keep_their_types() {
    let c = parse_str(
        r#"
        [[service]]
        name = "a"
        url = "http://127.0.0.1/"
        expect_json = { "/status" = "ok", "/checks/db" = true, "/version" = 3, "" = { status = "ok" } }
        "#,
    )
    .expect("valid");
    let j = &c.services[0].expect.json;
    assert!(j.contains(&("/status".into(), serde_json::json!("ok"))));
    assert!(j.contains(&("/checks/db".into(), serde_json::json!(true))));
    assert!(j.contains(&("/version".into(), serde_json::json!(3))));
    assert!(j.contains(&("".into(), serde_json::json!({"status": "ok"}))));
}

#[test]
fn status_matchers_accept_codes_classes_and_numeric_strings() {
    assert_eq!(parse_status_text("2xx"), Some(StatusMatcher::Class(2)));
    assert_eq!(parse_status_text("204"), Some(StatusMatcher::Code(204)));
    assert_eq!(parse_status_text("6xx"), None);
    assert_eq!(parse_status_text("abc"), None);
    assert!(StatusMatcher::Class(2).matches(204));
    assert!(!StatusMatcher::Class(2).matches(301));
}

#[test]
fn label_names_follow_prometheus_rules() {
    assert!(is_label_name("team"));
    assert!(is_label_name("_x1"));
    assert!(!is_label_name("1x"));
    assert!(!is_label_name("__x"));
    assert!(!is_label_name("a-b"));
    assert!(!is_label_name(""));
}

#[test]
fn same_target_means_same_name_url_and_method() {
    let c = parse_str(
        r#"
        [[service]]
        name = "a"
        url = "http://127.0.0.1/"
        [[service]]
        name = "b"
        url = "http://127.0.0.1/"
        "#,
    )
    .expect("valid");
    let d = parse_str(
        r#"
        [[service]]
        name = "a"
        url = "http://127.0.0.1/"
        timeout = "1s"
        [[service]]
        name = "b"
        url = "http://127.0.0.2/"
        "#,
    )
    .expect("valid");
    assert!(c.services[0].same_target(&d.services[0]));
    assert!(!c.services[1].same_target(&d.services[1]));
}

fn fleet(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1/\"\n"))
        .collect()
}

#[test]
fn a_shard_keeps_only_its_services_and_remembers_the_fleet_size() {
    let src = format!("[daemon]\nshard = \"1/3\"\n{}", fleet(60));
    let c = parse_str(&src).expect("valid");
    let shard = Shard::new(1, 3).expect("valid shard");
    assert_eq!(c.daemon.shard, shard);
    assert_eq!(c.fleet_size, 60);
    assert!(!c.services.is_empty() && c.services.len() < 60);
    assert!(c.services.iter().all(|s| shard.owns(&s.name)));
    // File order is kept.
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort_by_key(|n| n[4..].parse::<u32>().expect("numbered"));
    assert_eq!(order, sorted);
}

#[test]
fn the_command_line_shard_wins_over_the_file() {
    let src = format!("[daemon]\nshard = \"1/3\"\n{}", fleet(30));
    let cli = Shard::new(0, 2).expect("valid shard");
    let c = parse_with(Path::new("t.toml"), &src, Overrides { shard: Some(cli) }).expect("valid");
    assert_eq!(c.daemon.shard, cli);
    assert!(c.services.iter().all(|s| cli.owns(&s.name)));
    let whole = parse_str(&fleet(30)).expect("valid");
    assert_eq!(whole.daemon.shard, Shard::WHOLE);
    assert_eq!(whole.services.len(), 30);
}

/// Every replica must reject the same bad file, so problems in services of other shards count.
#[test]
fn every_shard_rejects_a_problem_in_any_service() {
    let src = format!(
        "{}[[service]]\nname = \"svc-3\"\nurl = \"http://127.0.0.1/\"\n[[service]]\nname = \"odd\"\nurl = \"ftp://x/\"\n",
        fleet(10)
    );
    for index in 0..4 {
        let shard = Shard::new(index, 4).expect("valid shard");
        let err = parse_with(Path::new("t.toml"), &src, Overrides { shard: Some(shard) })
            .expect_err("invalid everywhere");
        let text = err.to_string();
        assert!(text.contains("duplicate service name"), "{shard}: {text}");
        assert!(text.contains("scheme \"ftp\""), "{shard}: {text}");
    }
}

#[test]
fn probe_options_have_safe_defaults_and_parse() {
    let c = parse_str(
        r#"
        [defaults]
        failure_threshold = 3
        [[service]]
        name = "plain"
        url = "http://127.0.0.1:8000/health"
        [[service]]
        name = "tuned"
        url = "https://10.0.0.1/health"
        follow_redirects = 2
        ip_family = "ipv4"
        max_latency = "250ms"
        success_threshold = 2
        body = "ping"
        method = "POST"
        expect_body_regex = "ok"
        expect_header = { "Content-Type" = "application/json" }
        [[service]]
        name = "db"
        url = "tcp://127.0.0.1:5432"
        "#,
    )
    .expect("valid");
    let plain = &c.services[0];
    assert_eq!(plain.kind, ProbeKind::Http);
    assert_eq!(plain.follow_redirects, 0);
    assert_eq!(plain.ip_family, IpFamily::Any);
    assert_eq!(plain.max_latency, None);
    assert_eq!((plain.failure_threshold, plain.success_threshold), (3, 1));
    assert!(plain.tls.is_none() && plain.body.is_none());
    let tuned = &c.services[1];
    assert_eq!(tuned.follow_redirects, 2);
    assert_eq!(tuned.ip_family, IpFamily::V4);
    assert_eq!(tuned.max_latency, Some(Duration::from_millis(250)));
    assert_eq!(tuned.success_threshold, 2);
    assert_eq!(tuned.body.as_deref(), Some(&b"ping"[..]));
    assert!(tuned.expect.needs_body());
    assert_eq!(tuned.expect.headers.len(), 1);
    let db = &c.services[2];
    assert_eq!(db.kind, ProbeKind::Tcp);
    assert_eq!(db.target.port, 5432);
    assert_eq!(db.target.ip, Some("127.0.0.1".parse().expect("ip")));
    assert!(!db.target.tls);
}

#[test]
fn services_with_the_same_tls_settings_share_one_client() {
    let dir = std::env::temp_dir().join(format!("healthsweep-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("cert");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("write");
    let c = parse_str(&format!(
        r#"
        [defaults]
        ca_file = "{0}"
        [[service]]
        name = "a"
        url = "https://a.test/health"
        [[service]]
        name = "b"
        url = "https://b.test/health"
        [[service]]
        name = "c"
        url = "https://c.test/health"
        insecure_skip_verify = true
        [[service]]
        name = "plain"
        url = "http://d.test/health"
        "#,
        ca_file.display()
    ))
    .expect("valid");
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b, c_, plain) = (
        &c.services[0],
        &c.services[1],
        &c.services[2],
        &c.services[3],
    );
    let (a, b) = (a.tls.as_ref().expect("own"), b.tls.as_ref().expect("own"));
    assert!(Arc::ptr_eq(a, b), "one client for identical settings");
    let c_ = c_.tls.as_ref().expect("own");
    assert!(c_.insecure_skip_verify && !Arc::ptr_eq(a, c_));
    assert!(
        plain.tls.is_none(),
        "inherited TLS settings do not apply to http://"
    );
    assert_eq!(
        a.config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
