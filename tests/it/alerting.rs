//! Alerts that do not storm: dependencies (`blocked_by`, `healthsweep_target_blocked`),
//! maintenance windows, and the shipped rules end to end with the real Prometheus and
//! Alertmanager.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_dependency_blocks_its_dependents_through_the_chain() {
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let down = format!("http://127.0.0.1:{}/health", closed_port());
    let mut text = daemon_section("200ms", "150ms", "");
    text.push_str(&service("postgres", &down));
    text.push_str(&format!(
        "[[service]]\nname = \"cache\"\nurl = \"{}\"\ndepends_on = [\"postgres\"]\n\n",
        up.url("/health")
    ));
    text.push_str(&format!(
        "[[service]]\nname = \"api\"\nurl = \"{down}\"\ndepends_on = [\"cache\"]\n\n"
    ));
    text.push_str(&service("alone", &down));
    let d = Daemon::start(&text);
    let status = d.status_after_sweeps(2).await;
    let blocked = |name: &str| service_status(&status, name)["blocked_by"].clone();
    assert_eq!(
        blocked("api"),
        serde_json::json!(["postgres"]),
        "through cache"
    );
    assert_eq!(
        blocked("cache"),
        serde_json::json!(["postgres"]),
        "up, but blocked"
    );
    assert_eq!(blocked("postgres"), serde_json::json!([]));
    assert_eq!(
        service_status(&status, "api")["state"],
        "down",
        "still its own state"
    );
    let metrics = d.get("/metrics").await.body;
    let blocked_series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("healthsweep_target_blocked{"))
        .collect();
    assert_eq!(
        blocked_series.len(),
        2,
        "only services with dependencies: {blocked_series:?}"
    );
    assert!(
        metrics.contains("healthsweep_target_blocked{target=\"api\"} 1"),
        "{metrics}"
    );
    promtool_check_metrics(&metrics);
    let detail = d.json("/status/api").await;
    assert_eq!(detail["config"]["depends_on"], serde_json::json!(["cache"]));

    // A reload that brings a cycle is refused, naming it; the running config stays.
    d.write_config(&text.replace(
        "name = \"postgres\"\n",
        "name = \"postgres\"\ndepends_on = [\"api\"]\n",
    ));
    d.signal("HUP");
    let (status, found) = d
        .poll_status(Duration::from_secs(10), |s| {
            s["config"]["last_reload_successful"] == false
        })
        .await;
    assert!(found, "{status}");
    let error = status["config"]["last_reload_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("cycle: postgres → api → cache → postgres"),
        "{error}"
    );
    stop.cancel();
}
