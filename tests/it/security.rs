//! Who gets in, and what leaks: bearer-token auth, TLS for our own server with certificate
//! rotation on reload, and a canary secret that must never appear in any output.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use healthsweep::hostile::{Behaviour, HostileServer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "first-token-0123456789abcdef";
const ROTATED: &str = "second-token-9876543210fedcba";

/// A request with `Authorization: Bearer <token>` when given.
async fn with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> HttpResponse {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

fn assert_unauthorized(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{what}: {:?}",
        r.headers
    );
    if !r.body.is_empty() {
        assert!(r.json()["error"].is_string(), "{what}");
    }
}

/// Starts a daemon whose config sits next to a token file.
fn daemon_with_token(config: &str, token: &str) -> Daemon {
    daemon_with_secrets(config, token, &[], &[])
}

/// Starts a daemon whose config sits next to a token file and `files`, with `env`.
fn daemon_with_secrets(
    config: &str,
    token: &str,
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Daemon {
    let dir = TempDir::new("auth");
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("write token");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write secret file");
    }
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(&path, config).expect("write config");
    Daemon::at(path, dir).envs(env).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_what_protect_names_and_a_reload_rotates_it() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let all = format!(
        "{}[daemon.auth]\ntoken_file = \"token\"\nprotect = [\"reload\", \"status\", \"metrics\"]\n\n{}",
        daemon_section("1s", "1s", ""),
        service("a", &m.url("/health"))
    );
    let d = daemon_with_token(&all, TOKEN);
    d.status_after_sweeps_with_token(1, TOKEN).await;

    for path in ["/metrics", "/status", "/status/a", "/status?pretty"] {
        assert_unauthorized(&with_token(d.addr, "GET", path, None).await, path);
        assert_unauthorized(
            &with_token(d.addr, "GET", path, Some("wrong-token-000000000")).await,
            path,
        );
        let head = with_token(d.addr, "HEAD", path, None).await;
        assert_unauthorized(&head, path);
        assert!(head.body.is_empty(), "HEAD has no body");
        let ok = with_token(d.addr, "GET", path, Some(TOKEN)).await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
    }
    assert_unauthorized(
        &with_token(d.addr, "POST", "/-/reload", None).await,
        "reload",
    );
    // A browser: HTTP Basic, any user name, the token as the password.
    let basic = |user_pass: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        move |path: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nAuthorization: Basic {b64}\r\nConnection: close\r\n\r\n"
            )
        }
    };
    let good = basic(&format!("anyone:{TOKEN}"));
    let wrong = basic("anyone:guess");
    for path in ["/", "/service/a", "/status", "/ui/overview", "/badge/a.svg"] {
        let r = raw(d.addr, good(path).as_bytes()).await;
        assert_eq!(r.status, 200, "basic {path}: {}", r.body);
        let r = raw(d.addr, wrong(path).as_bytes()).await;
        assert_eq!(r.status, 401, "wrong basic {path}");
        assert!(
            !r.body.contains("guess"),
            "what was presented is not echoed"
        );
    }
    // The page without a token: a browser is asked for one (Basic), the JSON stays Bearer.
    for (path, scheme) in [
        ("/", "Basic"),
        ("/service/a", "Basic"),
        ("/ui/overview", "Bearer"),
    ] {
        let r = raw(
            d.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with(scheme)),
            "{path}: {:?}",
            r.headers
        );
        // Both schemes offered, the preferred one first: a page's own requests (which a
        // browser does not always send credentials to unasked) can sign in too.
        let challenges: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(challenges.len(), 2, "{path}: {challenges:?}");
        assert!(challenges.iter().any(|c| c.starts_with("Basic")), "{path}");
        assert!(challenges.iter().any(|c| c.starts_with("Bearer")), "{path}");
    }
    // The assets hold no data: open, so the browser can show the login's outcome.
    assert_eq!(
        with_token(d.addr, "GET", "/assets/page.js", None)
            .await
            .status,
        200
    );
    // Orchestrators' probes stay open.
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(
            with_token(d.addr, "GET", path, None).await.status,
            200,
            "{path}"
        );
    }

    // The token guards reload, which is then served although reload_api is off.
    let r = with_token(d.addr, "POST", "/-/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Rotate: the new token file is read by the reload; the old token stops working.
    let token_path = d.config_path.with_file_name("token");
    std::fs::write(&token_path, format!("{ROTATED}\n")).expect("rotate token");
    d.signal("HUP");
    let rotated = wait_for(Duration::from_secs(10), || async {
        with_token(d.addr, "GET", "/status", Some(ROTATED))
            .await
            .status
            == 200
    })
    .await;
    assert!(rotated, "the rotated token was not picked up");
    assert_unauthorized(
        &with_token(d.addr, "GET", "/status", Some(TOKEN)).await,
        "old token",
    );

    // protect = ["reload"] (the default): status and metrics open, reload still guarded.
    std::fs::write(
        &d.config_path,
        format!(
            "{}[daemon.auth]\ntoken_file = \"token\"\n\n{}",
            daemon_section("1s", "1s", ""),
            service("a", &m.url("/health"))
        ),
    )
    .expect("write config");
    let r = with_token(d.addr, "POST", "/-/reload", Some(ROTATED)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        with_token(d.addr, "GET", "/metrics", None).await.status,
        200
    );
    assert_eq!(with_token(d.addr, "GET", "/status", None).await.status, 200);
    assert_unauthorized(
        &with_token(d.addr, "POST", "/-/reload", None).await,
        "reload",
    );

    // A missing token file is a rejected reload: the running config (and token) stay.
    std::fs::remove_file(&token_path).expect("remove token");
    let r = with_token(d.addr, "POST", "/-/reload", Some(ROTATED)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("token_file"), "{}", r.body);
    assert_unauthorized(
        &with_token(d.addr, "POST", "/-/reload", None).await,
        "reload",
    );
    stop.cancel();
}

/// A self-signed certificate for `localhost`, written as `cert.pem` and `key.pem` in `dir`.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate certificate");
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).expect("write key");
    c.cert.der().clone()
}

/// GET `path` over TLS trusting only `root`; returns the status line and the server's
/// certificate.
async fn tls_get(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
) -> Result<(String, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no peer certificate")?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let line = text.lines().next().unwrap_or_default().to_string();
        Ok::<_, String>((line, cert))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "TLS exchange timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_speaks_tls_and_a_reload_rotates_its_certificate() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let dir = TempDir::new("tls");
    let first = write_cert(dir.path());
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(
        &path,
        format!(
            "{}[daemon.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\n{}",
            daemon_section("1s", "1s", ""),
            service("a", &m.url("/health"))
        ),
    )
    .expect("write config");
    let root = dir.path().to_path_buf();
    let d = Daemon::at(path, dir).start();

    let (line, cert) = tls_get(d.addr, &first, "/healthz").await.expect("TLS GET");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(cert, first);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "plain HTTP served on the TLS port"
    );

    // Renew the certificate on disk and reload: new connections get the new one.
    let second = write_cert(&root);
    d.signal("HUP");
    let rotated = wait_for(Duration::from_secs(10), || async {
        tls_get(d.addr, &second, "/healthz")
            .await
            .is_ok_and(|(_, c)| c == second)
    })
    .await;
    assert!(
        rotated,
        "the renewed certificate was not served after the reload"
    );
    assert!(
        tls_get(d.addr, &first, "/healthz").await.is_err(),
        "the old certificate is no longer served"
    );

    // A key that does not fit the certificate is refused; the running certificate stays.
    let third = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(root.join("key.pem"), third.key_pair.serialize_pem()).expect("write key");
    d.signal("HUP");
    let refused = wait_for(Duration::from_secs(10), || async {
        !d.logs_containing("does not fit cert_file").is_empty()
    })
    .await;
    assert!(refused, "a mismatched key was not reported");
    let (line, cert) = tls_get(d.addr, &second, "/healthz")
        .await
        .expect("still serving");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(cert, second);
    stop.cancel();
}

/// Every place a secret could escape to, gathered as text.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    fn add_response(&mut self, what: &str, r: &HttpResponse) {
        let headers: String = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        self.add(what, format!("{} {headers}{}", r.status, r.body));
    }

    fn assert_free_of(&self, secrets: &[&str]) {
        assert!(
            self.0.len() > 20,
            "too few outputs gathered: {}",
            self.0.len()
        );
        for (what, text) in &self.0 {
            for secret in secrets {
                assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
            }
        }
    }
}

fn cli(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (String, String) {
    let out = std::process::Command::new(bin())
        .args(["--log-level", "trace"])
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run healthsweep");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_appears_in_any_response_log_or_error() {
    const URL_PASS: &str = "CANARY-url-password-7f3a";
    const HEADER: &str = "CANARY-header-value-91c2";
    const TOKEN_SECRET: &str = "CANARY-auth-token-5d8e0b";
    // From the environment (`${NAME}`) and from files (`header_files`). Variable and file
    // names are not secret (errors name them), so they carry no canary.
    const ENV_PASS: &str = "CANARY-env-password-c04f";
    const ENV_HEADER: &str = "CANARY-env-header-3e7c";
    const FILE_HEADER: &str = "CANARY-file-header-8a21";
    const ENV_BAD: &str = "CANARY-env-not-a-header\u{1}";
    const FILE_BAD: &str = "CANARY-file-not-a-header\u{1}\n";
    let env = [
        ("HS_PROBE_PASSWORD", ENV_PASS),
        ("HS_API_KEY", ENV_HEADER),
        ("HS_BAD_HEADER", ENV_BAD),
    ];
    let files = [
        ("header-secret", format!("{FILE_HEADER}\n")),
        ("bad-header-secret", FILE_BAD.to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let basic_b64 = base64::engine::general_purpose::STANDARD.encode(format!("probe:{URL_PASS}"));
    let env_basic_b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("probe:{ENV_PASS}"));
    let secrets = [
        URL_PASS,
        HEADER,
        TOKEN_SECRET,
        ENV_PASS,
        ENV_HEADER,
        FILE_HEADER,
        basic_b64.as_str(),
        env_basic_b64.as_str(),
        "CANARY",
    ];

    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let garbage = HostileServer::start(Behaviour::Garbage, stop.clone())
        .await
        .expect("hostile server");
    let redirect = HostileServer::start(Behaviour::RedirectLoop, stop.clone())
        .await
        .expect("hostile server");
    let refused = closed_port();
    let with_pass = |addr: &str, path: &str| format!("http://probe:{URL_PASS}@{addr}{path}");
    let secret_service = |name: &str, url: &str| {
        format!(
            "[[service]]\nname = \"{name}\"\nurl = \"{url}\"\ntimeout = \"500ms\"\nheaders = {{ \"X-Api-Key\" = \"{HEADER}\", \"Authorization\" = \"Bearer {HEADER}\" }}\nexpect_body_contains = \"ok\"\n\n"
        )
    };
    let from_env_and_files = |name: &str, path: &str| {
        format!(
            "[[service]]\nname = \"{name}\"\nurl = \"http://probe:${{HS_PROBE_PASSWORD}}@{}{path}\"\ntimeout = \"500ms\"\nheaders = {{ \"X-Api-Key\" = \"key ${{HS_API_KEY}}\" }}\nheader_files = {{ \"X-File-Key\" = \"header-secret\" }}\nexpect_body_contains = \"ok\"\n\n",
            m.addr
        )
    };
    let config = format!(
        "{}[daemon.auth]\ntoken_file = \"token\"\nprotect = [\"reload\", \"status\", \"metrics\"]\n\n[defaults]\nheader_files = {{ \"X-Default-Key\" = \"header-secret\" }}\n\n{}{}{}{}{}{}{}",
        daemon_section("1s", "1s", ""),
        from_env_and_files("env-up", "/health"),
        from_env_and_files("env-500", "/fail/500"),
        secret_service("up", &with_pass(&m.addr.to_string(), "/health")),
        secret_service("http-500", &with_pass(&m.addr.to_string(), "/fail/500")),
        secret_service("garbage", &with_pass(&garbage.addr.to_string(), "/health")),
        secret_service(
            "redirect",
            &with_pass(&redirect.addr.to_string(), "/health")
        ),
        secret_service(
            "refused",
            &with_pass(&format!("127.0.0.1:{refused}"), "/health")
        ),
    );
    let d = daemon_with_secrets(&config, TOKEN_SECRET, &files, &env);
    let status = d.status_after_sweeps_with_token(2, TOKEN_SECRET).await;
    assert_eq!(service_status(&status, "env-up")["state"], "up", "{status}");
    assert_eq!(
        service_status(&status, "env-up")["url"],
        format!("http://REDACTED@{}/health", m.addr)
    );
    let mut out = Outputs::default();

    for path in [
        "/",
        "/metrics",
        "/status",
        "/status?pretty",
        "/status?state=down",
        "/status/up",
        "/status/garbage",
        "/status/redirect",
        "/status/refused",
        "/status/http-500",
        "/status/env-up",
        "/status/env-500",
        "/healthz",
        "/readyz",
        "/nope",
        "/status?bad=1",
    ] {
        out.add_response(
            path,
            &with_token(d.addr, "GET", path, Some(TOKEN_SECRET)).await,
        );
        out.add_response(path, &with_token(d.addr, "GET", path, None).await);
        out.add_response(
            path,
            &with_token(d.addr, "GET", path, Some("CANARY-wrong-token-000")).await,
        );
    }
    out.add_response(
        "reload",
        &with_token(d.addr, "POST", "/-/reload", Some(TOKEN_SECRET)).await,
    );

    // A config that fails in the places secrets sit: the reload's errors must not echo them.
    let bad = format!(
        "{}[daemon.auth]\ntoken_file = \"token\"\n\n[[service]]\nname = \"bad\"\nurl = \"http://probe:{URL_PASS}@127.0.0.1:99999/health\"\nheaders = {{ \"X-Api-Key\" = \"{HEADER}\\u0001\" }}\n\n\
         [[service]]\nname = \"bad-env\"\nurl = \"http://probe:${{HS_PROBE_PASSWORD}}@127.0.0.1:1/health\"\nheaders = {{ \"X-Bad\" = \"${{HS_BAD_HEADER}}\", \"X-Api-Key\" = \"${{HS_API_KEY}}\" }}\nheader_files = {{ \"X-File-Key\" = \"bad-header-secret\", \"X-Other\" = \"header-secret\" }}\n\n\
         [[service]]\nname = \"bad-env-place\"\nurl = \"http://probe:${{HS_PROBE_PASSWORD}}@127.0.0.1:1/${{HS_API_KEY}}\"\n",
        daemon_section("1s", "1s", "")
    );
    let good_config = std::fs::read_to_string(&d.config_path).expect("read config");
    std::fs::write(&d.config_path, &bad).expect("write bad config");
    out.add_response(
        "bad reload",
        &with_token(d.addr, "POST", "/-/reload", Some(TOKEN_SECRET)).await,
    );
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    out.add_response(
        "status after bad reload",
        &with_token(d.addr, "GET", "/status", Some(TOKEN_SECRET)).await,
    );
    out.add_response(
        "metrics after bad reload",
        &with_token(d.addr, "GET", "/metrics", Some(TOKEN_SECRET)).await,
    );

    // The commands beside the daemon.
    let (o, e) = cli(&["validate"], &d.config_path, &env);
    assert!(
        e.contains("url is not a valid URL"),
        "validate reports the bad config: {e}"
    );
    for reported in [
        "header \"X-Bad\": the value, once its ${...} are expanded, is not valid in HTTP",
        "header_files \"X-File-Key\": ",
        "bad-header-secret holds characters not valid",
        "only expanded in the password",
    ] {
        assert!(e.contains(reported), "validate reports {reported:?}: {e}");
    }
    out.add("validate (bad)", format!("{o}{e}"));
    // Wrong types are caught by the parser, before validation: its messages must not echo
    // values either.
    std::fs::write(
        &d.config_path,
        format!("[[service]]\nname = \"t\"\nurl = \"http://probe:{URL_PASS}@127.0.0.1:1/\"\nheaders = {{ \"X-Api-Key\" = [\"{HEADER}\"] }}\n"),
    )
    .expect("write config");
    let (o, e) = cli(&["validate"], &d.config_path, &env);
    assert!(e.contains("error"), "validate reports the bad type: {e}");
    out.add("validate (wrong type)", format!("{o}{e}"));
    std::fs::write(&d.config_path, &good_config).expect("restore config");
    let (o, e) = cli(&["validate"], &d.config_path, &env);
    assert!(o.contains("valid (7 services)"), "{o}{e}");
    out.add("validate (good)", format!("{o}{e}"));
    for format in ["table", "json"] {
        let (o, e) = cli(&["check", "--format", format], &d.config_path, &env);
        assert!(
            o.contains("garbage") && o.contains("env-500"),
            "check ran: {o}{e}"
        );
        out.add(format!("check --format {format}"), format!("{o}{e}"));
    }

    let logs = d.logs.lock().expect("log lock").join("\n");
    assert!(
        logs.contains("config reload failed"),
        "the bad reload is logged"
    );
    out.add("daemon logs (debug)", logs);
    out.assert_free_of(&secrets);
    stop.cancel();
}
