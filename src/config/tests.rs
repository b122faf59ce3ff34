use std::path::{Path, PathBuf};

use base64::Engine as _;

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
    assert_eq!(shown, "http://REDACTED@127.0.0.1:8000/health");
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

// ---------------------------------------------------------------------------------------------
// Secrets: `${NAME}` from the environment, `header_files`.

/// Parses `src` as `test.toml` with `vars` as the whole environment.
fn parse_env(src: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    parse_at_env(Path::new("test.toml"), src, vars)
}

fn parse_at_env(path: &Path, src: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| std::ffi::OsString::from(v))
    };
    parse_whole(path, src, &env)
}

fn problems_env(src: &str, vars: &[(&str, &str)]) -> Vec<Problem> {
    match parse_env(src, vars) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn header_values_and_url_passwords_take_variables_from_the_environment() {
    let c = parse_env(
        r#"
        [defaults]
        headers = { "X-Team" = "team-${TEAM}", "X-Literal" = "cost: $$5 or $5" }
        [[service]]
        name = "a"
        url = "http://probe:${PROBE_PASSWORD}@127.0.0.1:8000/health"
        headers = { Authorization = "Bearer ${API_TOKEN}" }
        "#,
        &[
            ("TEAM", "blue"),
            ("API_TOKEN", "tok-123"),
            ("PROBE_PASSWORD", "p@ss:word/%"),
        ],
    )
    .expect("valid");
    let s = &c.services[0];
    assert_eq!(s.header("x-team").expect("set"), "team-blue");
    assert_eq!(s.header("x-literal").expect("set"), "cost: $5 or $5");
    let auth = s.header("authorization").expect("set");
    assert_eq!(auth, "Bearer tok-123", "a header wins over URL credentials");
    assert!(auth.is_sensitive());
    assert!(s.header("x-team").expect("set").is_sensitive());
    assert_eq!(s.redacted_url(), "http://REDACTED@127.0.0.1:8000/health");
    assert!(!format!("{:?}", s.headers).contains("tok-123"));

    let c = parse_env(
        "[[service]]\nname = \"a\"\nurl = \"http://probe:${PROBE_PASSWORD}@127.0.0.1:8000/health\"\n",
        &[("PROBE_PASSWORD", "p@ss:word/%")],
    )
    .expect("valid");
    let s = &c.services[0];
    let basic = base64::engine::general_purpose::STANDARD.encode("probe:p@ss:word/%");
    let auth = s.header("authorization").expect("basic auth");
    assert_eq!(auth, format!("Basic {basic}").as_str());
    assert!(auth.is_sensitive());
    assert_eq!(s.redacted_url(), "http://REDACTED@127.0.0.1:8000/health");
    assert_eq!(s.target.port, 8000);
    assert_eq!(s.target.path_and_query, "/health");
}

#[test]
fn a_missing_variable_is_a_problem_naming_it_the_service_and_the_line() {
    let p = problems_env(
        "[defaults]\nheaders = { \"X-Team\" = \"${TEAM}\" }\n\n[[service]]\nname = \"a\"\nurl = \"http://u:${PROBE_PASSWORD}@127.0.0.1/\"\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\nheaders = { Authorization = \"Bearer ${API_TOKEN}\" }\n",
        &[("API_TOKEN", "")],
    );
    assert_eq!(p.len(), 3, "{p:#?}");
    assert_eq!(p[0].service, None);
    assert_eq!(p[0].location.map(|l| l.line), Some(2));
    assert_eq!(
        p[0].message,
        "header \"X-Team\": environment variable TEAM is not set"
    );
    assert_eq!(p[1].service.as_deref(), Some("a"));
    assert_eq!(p[1].location.map(|l| l.line), Some(6));
    assert_eq!(
        p[1].message,
        "url password: environment variable PROBE_PASSWORD is not set"
    );
    assert_eq!(p[2].service.as_deref(), Some("b"));
    assert_eq!(p[2].location.map(|l| l.line), Some(10));
    assert_eq!(
        p[2].message,
        "header \"Authorization\": environment variable API_TOKEN is empty"
    );
}

#[test]
fn a_reference_outside_header_values_and_url_passwords_is_an_error_or_plain_text() {
    let p = problems_env(
        "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/${HEALTH_PATH}\"\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1:${PORT}/\"\n",
        &[("HEALTH_PATH", "health"), ("PORT", "80")],
    );
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].message.contains("only expanded in the password") && p[0].message.contains("path"),
        "{}",
        p[0].message
    );
    assert!(
        p[1].message.starts_with("url is not a valid URL")
            && p[1].message.contains("only expanded in the password"),
        "{}",
        p[1].message
    );
    // Elsewhere in the file `${...}` is just text.
    let c = parse_env(
        "[[service]]\nname = \"a-${X}\"\nurl = \"http://127.0.0.1/\"\nexpect_body_contains = \"${X}\"\n",
        &[("X", "v")],
    )
    .expect("valid");
    assert_eq!(c.services[0].name, "a-${X}");
    assert_eq!(c.services[0].expect.body_contains.as_deref(), Some("${X}"));
}

#[test]
fn an_expanded_value_that_is_not_valid_in_a_header_is_reported_without_it() {
    let p = problems_env(
        "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nheaders = { \"X-Key\" = \"${KEY}\" }\n",
        &[("KEY", "CANARY\r\nInjected: yes")],
    );
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].message.contains("\"X-Key\""), "{}", p[0].message);
    assert!(!p[0].message.contains("CANARY"), "{}", p[0].message);
}

/// A config file `healthsweep.toml` in a fresh directory, with `files` beside it.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, files: &[(&str, &str)]) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "healthsweep-config-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let s = Scratch(dir);
        for (name, content) in files {
            s.write(name, content);
        }
        s
    }

    fn write(&self, name: &str, content: &str) {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn config(&self) -> PathBuf {
        self.0.join("healthsweep.toml")
    }

    fn load(&self) -> Result<Config, ConfigError> {
        load(&self.config())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn header_files_are_read_relative_to_the_config_and_merged_like_headers() {
    let s = Scratch::new(
        "header-files",
        &[
            (
                "healthsweep.toml",
                r#"
                [defaults]
                headers = { "X-Probe" = "healthsweep" }
                header_files = { Authorization = "secrets/default-token", "X-Key" = "/ABS/key" }
                [[service]]
                name = "defaults-only"
                url = "http://127.0.0.1/"
                [[service]]
                name = "own-file"
                url = "http://127.0.0.1/"
                header_files = { Authorization = "secrets/own-token" }
                [[service]]
                name = "own-inline"
                url = "http://127.0.0.1/"
                headers = { Authorization = "Bearer inline", "X-Probe" = "own" }
                "#,
            ),
            ("secrets/default-token", "Bearer default\n"),
            ("secrets/own-token", "Bearer own\r\n"),
            ("abs/key", "key-1"),
        ],
    );
    let abs = s.0.join("abs/key");
    let config = std::fs::read_to_string(s.config())
        .expect("read")
        .replace("/ABS/key", abs.to_str().expect("utf-8 path"));
    s.write("healthsweep.toml", &config);
    let c = s.load().expect("valid");
    let [a, b, d] = &c.services[..] else {
        panic!("three services")
    };
    assert_eq!(a.header("authorization").expect("set"), "Bearer default");
    assert_eq!(a.header("x-key").expect("set"), "key-1");
    assert_eq!(a.header("x-probe").expect("set"), "healthsweep");
    assert!(a.header("authorization").expect("set").is_sensitive());
    assert_eq!(b.header("authorization").expect("set"), "Bearer own");
    assert!(b.header("authorization").expect("set").is_sensitive());
    assert_eq!(d.header("authorization").expect("set"), "Bearer inline");
    assert_eq!(d.header("x-probe").expect("set"), "own");
    assert_eq!(d.header("x-key").expect("set"), "key-1");

    // A reload reads the file again.
    s.write("secrets/default-token", "Bearer rotated\n");
    let c = s.load().expect("valid");
    assert_eq!(
        c.services[0].header("authorization").expect("set"),
        "Bearer rotated"
    );
}

#[test]
fn header_file_problems_name_the_header_and_file_never_the_content() {
    let s = Scratch::new(
        "header-file-errors",
        &[
            (
                "healthsweep.toml",
                "[defaults]\nheader_files = { \"X-Empty\" = \"empty\" }\n\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\nheader_files = { \"X-Bad\" = \"bad\", \"X-Gone\" = \"gone\" }\n[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\nheaders = { authorization = \"x\" }\nheader_files = { Authorization = \"bad\" }\n",
            ),
            ("empty", "\n"),
            ("bad", "CANARY-secret\u{1}\n"),
        ],
    );
    let err = s.load().expect_err("invalid");
    let ConfigError::Invalid { problems: p, .. } = &err else {
        panic!("validation problems: {err}")
    };
    assert_eq!(p.len(), 4, "{p:#?}");
    let dir = s.0.display().to_string();
    assert_eq!(p[0].service, None);
    assert_eq!(p[0].location.map(|l| l.line), Some(2));
    assert_eq!(
        p[0].message,
        format!("header_files \"X-Empty\": {dir}/empty is empty")
    );
    assert_eq!(p[1].service.as_deref(), Some("a"));
    assert!(
        p[1].message.starts_with(&format!(
            "header_files \"X-Bad\": {dir}/bad holds characters not valid"
        )),
        "{}",
        p[1].message
    );
    assert!(
        p[2].message
            .starts_with(&format!("header_files \"X-Gone\": {dir}/gone: cannot read")),
        "{}",
        p[2].message
    );
    assert_eq!(p[3].service.as_deref(), Some("b"));
    assert_eq!(p[3].location.map(|l| l.line), Some(12));
    assert_eq!(
        p[3].message,
        "header \"Authorization\" is set in both headers and header_files; keep one"
    );
    assert!(!err.to_string().contains("CANARY"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Service files: `services_dir`.

fn services_dir_testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/services_dir")
}

/// Every directory in `testdata/services_dir/invalid` is one error of a services directory. The
/// header of its `healthsweep.toml` says what must be reported: `# error:` a substring of the
/// message (`{dir}` stands for the case's directory), `# file:` the file the problem is in
/// relative to it (none: the main file), `# line:` and `# service:`.
#[test]
fn every_invalid_services_dir_fixture_is_rejected_naming_its_file_line_and_service() {
    let root = services_dir_testdata().join("invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).expect("testdata/services_dir/invalid exists") {
        let dir = entry.expect("readable dir entry").path();
        let main = dir.join("healthsweep.toml");
        let src = std::fs::read_to_string(&main).expect("fixture readable");
        let header = |key: &str| {
            src.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                .map(str::trim)
                .map(|v| v.replace("{dir}", &dir.display().to_string()))
        };
        let want_error = header("error").expect("fixture has '# error:'");
        let want_file = header("file").map(|f| dir.join(f));
        let want_line = header("line").map(|l| l.parse::<usize>().expect("line is a number"));
        let want_service = header("service");
        let case = dir.display();

        let err = load(&main).expect_err(&format!("{case} must be rejected"));
        let ConfigError::Invalid { problems, path } = &err else {
            panic!("{case}: expected validation problems, got {err}")
        };
        assert_eq!(path, &main);
        assert_eq!(problems.len(), 1, "{case}: {problems:#?}");
        let p = &problems[0];
        assert!(
            p.message.contains(&want_error),
            "{case}: {:?} does not contain {want_error:?}",
            p.message
        );
        assert_eq!(p.file, want_file, "{case}");
        assert_eq!(p.location.map(|l| l.line), want_line, "{case}");
        if want_line.is_some() {
            assert!(p.location.is_some_and(|l| l.column >= 1), "{case}");
        }
        assert_eq!(p.service, want_service, "{case}");
        // Every way the error is shown names the file it is in.
        let shown = want_file.as_deref().unwrap_or(&main).display().to_string();
        let line = &err.lines()[0];
        assert!(line.starts_with(&format!("{shown}: ")), "{case}: {line}");
        assert!(err.to_string().contains(&shown), "{case}: {err}");
        seen += 1;
    }
    assert!(seen >= 10, "expected the fixture table, found {seen} cases");
}

#[test]
fn services_come_from_the_main_file_and_every_toml_file_of_services_dir_in_name_order() {
    let root = services_dir_testdata().join("valid");
    let c = load(&root.join("healthsweep.toml")).expect("valid");
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["main-1", "orders-1", "search-1", "search-2"]);
    assert_eq!(c.fleet_size, 4);
    let dir = root.join("services.d");
    assert_eq!(c.sources.services_dir.as_deref(), Some(dir.as_path()));
    assert_eq!(
        c.sources.files,
        vec![
            SourceFile {
                path: root.join("healthsweep.toml"),
                services: 1
            },
            SourceFile {
                path: dir.join("a-orders.toml"),
                services: 1
            },
            SourceFile {
                path: dir.join("b-search.toml"),
                services: 2
            },
        ]
    );
    // [defaults] of the main file apply to services of the directory.
    let search_1 = &c.services[2];
    assert_eq!(search_1.timeout, Duration::from_secs(1));
    assert_eq!(c.services[1].timeout, Duration::from_secs(2));
    assert_eq!(search_1.header("x-probe").expect("default"), "healthsweep");
    assert_eq!(
        search_1.header("x-token").expect("default"),
        "a-long-enough-test-token-0123456789"
    );
    // A services file's relative header_files are relative to it.
    assert_eq!(
        c.services[3].header("x-token").expect("own"),
        "search-team-token"
    );
}

#[test]
fn an_empty_services_dir_adds_no_services() {
    let s = Scratch::new(
        "empty-dir",
        &[(
            "healthsweep.toml",
            "[daemon]\nservices_dir = \"services.d\"\n[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n",
        )],
    );
    std::fs::create_dir_all(s.0.join("services.d")).expect("mkdir");
    // Not a regular file: skipped rather than opened (opening a FIFO blocks).
    let made = std::process::Command::new("mkfifo")
        .arg(s.0.join("services.d/fifo.toml"))
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let c = s.load().expect("valid");
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.sources.files.len(), 1);
    assert_eq!(c.sources.services_dir, Some(s.0.join("services.d")));
}

#[test]
fn problems_in_several_services_files_are_all_reported_each_with_its_file() {
    let s = Scratch::new(
        "several",
        &[
            (
                "healthsweep.toml",
                "[daemon]\ninterval = \"nope\"\nservices_dir = \"d\"\n",
            ),
            (
                "d/a.toml",
                "[[service]]\nname = \"a\"\nurl = \"ftp://x/\"\n",
            ),
            ("d/b.toml", "[[service]\n"),
            (
                "d/c.toml",
                "[[service]]\nname = \"c\"\nurl = \"http://127.0.0.1/\"\ntimeout = \"0s\"\n",
            ),
        ],
    );
    let err = s.load().expect_err("invalid");
    let lines = err.lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let main = s.config().display().to_string();
    let d = s.0.join("d").display().to_string();
    assert!(
        lines[0].starts_with(&format!("{main}: line 2, column 12: interval")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "{d}/a.toml: line 3, column 7: service \"a\": url scheme"
        )),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        format!("{d}/b.toml: line 1, column 11: unclosed array table, expected `]`")
    );
    assert!(
        lines[3].starts_with(&format!(
            "{d}/c.toml: line 4, column 11: service \"c\": timeout"
        )),
        "{}",
        lines[3]
    );
}

#[test]
fn a_shard_counts_and_splits_the_services_of_every_file() {
    let s = Scratch::new(
        "shard",
        &[
            (
                "healthsweep.toml",
                &format!(
                    "[daemon]\nshard = \"1/3\"\nservices_dir = \"d\"\n{}",
                    fleet(20)
                ),
            ),
            (
                "d/more.toml",
                &(20..60)
                    .map(|i| {
                        format!("[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1/\"\n")
                    })
                    .collect::<String>(),
            ),
        ],
    );
    let c = s.load().expect("valid");
    let shard = Shard::new(1, 3).expect("valid shard");
    assert_eq!(c.fleet_size, 60);
    let whole = parse_str(&fleet(60)).expect("valid");
    let want: Vec<&str> = whole
        .services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| shard.owns(n))
        .collect();
    let got: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(got, want, "the same services as from one file");
    assert!(
        got.iter()
            .any(|n| n[4..].parse::<u32>().expect("numbered") >= 20)
    );
}

#[test]
fn a_reload_sees_services_files_added_changed_and_removed() {
    let s = Scratch::new(
        "reread",
        &[
            ("healthsweep.toml", "[daemon]\nservices_dir = \"d\"\n"),
            (
                "d/a.toml",
                "[[service]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n",
            ),
        ],
    );
    let names = |c: &Config| {
        c.services
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&s.load().expect("valid")), ["a"]);
    s.write(
        "d/b.toml",
        "[[service]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\n",
    );
    s.write(
        "d/a.toml",
        "[[service]]\nname = \"a2\"\nurl = \"http://127.0.0.1/\"\n",
    );
    assert_eq!(names(&s.load().expect("valid")), ["a2", "b"]);
    std::fs::remove_file(s.0.join("d/a.toml")).expect("remove");
    assert_eq!(names(&s.load().expect("valid")), ["b"]);
}

#[test]
fn a_problem_in_a_services_file_is_shown_with_that_file() {
    let err = ConfigError::Invalid {
        path: PathBuf::from("/etc/hs.toml"),
        problems: vec![
            Problem {
                file: None,
                location: Some(Location { line: 2, column: 1 }),
                service: None,
                message: "main".into(),
            },
            Problem {
                file: Some(PathBuf::from("/etc/d/a.toml")),
                location: Some(Location { line: 3, column: 5 }),
                service: Some("x".into()),
                message: "other".into(),
            },
        ],
    };
    assert_eq!(
        err.lines(),
        [
            "/etc/hs.toml: line 2, column 1: main",
            "/etc/d/a.toml: line 3, column 5: service \"x\": other"
        ]
    );
    let text = err.to_string();
    assert!(text.contains("  - line 2, column 1: main"), "{text}");
    assert!(
        text.contains("  - /etc/d/a.toml: line 3, column 5: service \"x\": other"),
        "{text}"
    );
}
