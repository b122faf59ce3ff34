//! End to end: secrets from the environment (`${NAME}` in header values and URL passwords) and
//! from files (`header_files`) reach a real loopback service, and a reload re-reads the files.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;

const PASSWORD: &str = "env-p@ss:w/rd%41";
const TOKEN: &str = "env-token-4b1d";
const TEAM: &str = "env-team-blue";

/// Waits (bounded) until `server` has received a request for `path`; returns its heads.
async fn heads_for(server: &RecordingServer, path: &str) -> Vec<String> {
    let got = wait_for(Duration::from_secs(10), || async {
        !server.heads_for(path).is_empty()
    })
    .await;
    assert!(got, "no request for {path}; got {:#?}", server.heads());
    server.heads_for(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_in_headers_and_the_url_password_reach_the_service_and_show_nowhere() {
    let server = RecordingServer::start().await;
    let addr = server.addr;
    let config = format!(
        "{}[defaults]\nheaders = {{ \"X-Team\" = \"${{HS_TEAM}}\", \"X-Price\" = \"$$5\" }}\n\n\
         [[service]]\nname = \"basic\"\nurl = \"http://probe:${{HS_PASSWORD}}@{addr}/basic\"\n\n\
         [[service]]\nname = \"bearer\"\nurl = \"http://{addr}/bearer\"\n\
         headers = {{ Authorization = \"Bearer ${{HS_TOKEN}}\" }}\n",
        daemon_section("1s", "1s", "")
    );
    let dir = TempDir::new("secrets-env");
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(&path, config).expect("write config");
    let env = [
        ("HS_PASSWORD", PASSWORD),
        ("HS_TOKEN", TOKEN),
        ("HS_TEAM", TEAM),
    ];
    let d = Daemon::at(path, dir).envs(&env).start();

    let basic = heads_for(&server, "/basic").await;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("probe:{PASSWORD}"));
    assert_eq!(
        head_header(&basic[0], "authorization"),
        Some(format!("Basic {want}").as_str()),
        "{}",
        basic[0]
    );
    assert_eq!(head_header(&basic[0], "x-team"), Some(TEAM));
    assert_eq!(head_header(&basic[0], "x-price"), Some("$5"));
    let bearer = heads_for(&server, "/bearer").await;
    assert_eq!(
        head_header(&bearer[0], "authorization"),
        Some(format!("Bearer {TOKEN}").as_str()),
        "{}",
        bearer[0]
    );
    assert_eq!(head_header(&bearer[0], "x-team"), Some(TEAM));

    let status = d.status_after_sweeps(1).await;
    for name in ["basic", "bearer"] {
        assert_eq!(service_status(&status, name)["state"], "up", "{status}");
    }
    assert_eq!(
        service_status(&status, "basic")["url"],
        format!("http://REDACTED@{addr}/basic")
    );
    // None of the values shows in what the daemon says (the full canary search over every
    // output is in tests/security.rs).
    let said = [
        d.get("/status").await.body,
        d.get("/metrics").await.body,
        d.logs.lock().expect("log lock").join("\n"),
    ]
    .join("\n");
    for secret in [PASSWORD, "p@ss", TOKEN, TEAM, &want] {
        assert!(!said.contains(secret), "{secret:?} leaked");
    }
}

#[test]
fn a_missing_variable_refuses_to_start_naming_it_and_the_service() {
    let dir = TempDir::new("secrets-missing");
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(
        &path,
        "[[service]]\nname = \"a\"\nurl = \"http://probe:${HS_SURELY_UNSET_PASSWORD}@127.0.0.1:1/\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(bin())
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("HS_SURELY_UNSET_PASSWORD")
        .output()
        .expect("run healthsweep");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: line 3, column 7: service \"a\": url password: environment variable HS_SURELY_UNSET_PASSWORD is not set",
            path.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_header_file_reaches_the_service_after_sighup_and_the_old_value_no_longer_does() {
    let server = RecordingServer::start().await;
    let dir = TempDir::new("secrets-file");
    let secret = dir.path().join("secrets/token");
    std::fs::create_dir_all(secret.parent().expect("parent")).expect("mkdir");
    std::fs::write(&secret, "Bearer first-value\n").expect("write secret");
    let path = dir.path().join("healthsweep.toml");
    std::fs::write(
        &path,
        format!(
            "{}[[service]]\nname = \"a\"\nurl = \"{}\"\nheader_files = {{ Authorization = \"secrets/token\" }}\n",
            daemon_section("300ms", "300ms", ""),
            server.url("/health")
        ),
    )
    .expect("write config");
    let d = Daemon::at(path, dir).start();
    let auth = |head: &String| head_header(head, "authorization").map(str::to_string);

    let first = heads_for(&server, "/health").await;
    assert_eq!(auth(&first[0]).as_deref(), Some("Bearer first-value"));

    // Rotate as secret stores do (write a new file, rename over the old), then reload.
    let tmp = secret.with_extension("tmp");
    std::fs::write(&tmp, "Bearer second-value\n").expect("write secret");
    std::fs::rename(&tmp, &secret).expect("rotate secret");
    d.signal("HUP");
    d.status_at_generation(2).await;
    let rotated = wait_for(Duration::from_secs(10), || async {
        let heads = server.heads_for("/health");
        // The new value, then at least two more checks.
        heads
            .iter()
            .position(|h| auth(h).as_deref() == Some("Bearer second-value"))
            .is_some_and(|at| heads.len() >= at + 3)
    })
    .await;
    let heads = server.heads_for("/health");
    assert!(rotated, "the rotated value was not sent: {heads:#?}");
    let at = heads
        .iter()
        .position(|h| auth(h).as_deref() == Some("Bearer second-value"))
        .expect("the new value was sent");
    let values: Vec<Option<String>> = heads.iter().map(auth).collect();
    assert!(
        values[..at]
            .iter()
            .all(|v| v.as_deref() == Some("Bearer first-value")),
        "{values:?}"
    );
    assert!(
        values[at..]
            .iter()
            .all(|v| v.as_deref() == Some("Bearer second-value")),
        "the old value was sent after the reload: {values:?}"
    );

    // A file that went missing is a rejected reload: the running value is still sent.
    std::fs::remove_file(&secret).expect("remove secret");
    d.signal("HUP");
    let refused = wait_for(Duration::from_secs(10), || async {
        !d.logs_containing("config reload failed").is_empty()
    })
    .await;
    assert!(refused, "a missing header file was not refused");
    let log = d.logs_containing("config reload failed").join("\n");
    assert!(
        log.contains("header_files") && log.contains("secrets/token"),
        "{log}"
    );
    let before = server.heads_for("/health").len();
    let more = wait_for(Duration::from_secs(10), || async {
        server.heads_for("/health").len() >= before + 2
    })
    .await;
    assert!(more, "checks go on after a refused reload");
    let last = server.heads_for("/health");
    assert_eq!(
        auth(last.last().expect("a request")).as_deref(),
        Some("Bearer second-value")
    );
}
