//! The status page in a real browser: headless Chromium against the real daemon and real
//! loopback services. Screenshots go to `target/tmp/screenshots/` for people to look at.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::chromium::Browser;
use crate::common::*;

fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

fn grouped(name: &str, group: &str, url: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\ngroup = \"{group}\"\nurl = \"{url}\"\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_states_filters_and_a_service_going_down_without_a_reload() {
    if !needs(&[Tool::Chromium]) {
        return;
    }
    let stop = CancellationToken::new();
    let ledger_stop = CancellationToken::new();
    let orders = mock(&stop).await;
    let billing = mock(&stop).await;
    let search = mock(&stop).await;
    let ledger = mock(&ledger_stop).await;
    let mut config = daemon_section("500ms", "400ms", "");
    config.push_str(&grouped("orders-api", "orders", &orders.url("/health")));
    config.push_str(&grouped("orders-search", "orders", &search.url("/health")));
    // Checked every 20th sweep: its page says when its turn comes.
    config.push_str(&grouped("billing", "payments", &billing.url("/health")));
    config.push_str("interval = \"10s\"\n\n");
    config.push_str(&grouped("ledger", "payments", &ledger.url("/health")));
    config.push_str(&grouped(
        "legacy-<em>crm",
        "crm",
        &format!("http://127.0.0.1:{}/health", closed_port()),
    ));
    let d = Daemon::start(&config);
    d.status_after_sweeps(2).await;
    let base = format!("http://{}", d.addr);

    let mut b = Browser::start(1280, 800).await;
    b.navigate(&format!("{base}/")).await;
    let rows = "document.querySelectorAll('#services tr[data-name]')";
    assert!(
        b.wait_until(&format!("{rows}.length === 5"), Duration::from_secs(15))
            .await,
        "five services listed: {}",
        b.eval("document.body.innerText").await
    );
    let listed = b
        .eval(&format!(
            "[...{rows}].map(r => [r.dataset.name, r.dataset.state])"
        ))
        .await;
    assert_eq!(
        listed[0],
        json!(["legacy-<em>crm", "down"]),
        "failing first: {listed}"
    );
    for name in ["orders-api", "orders-search", "billing", "ledger"] {
        assert!(
            listed
                .as_array()
                .expect("rows")
                .contains(&json!([name, "up"])),
            "{name} up: {listed}"
        );
    }
    // The state is written, not only coloured; a name is text, never markup.
    assert_eq!(
        b.eval("document.querySelector('#services tr .state').textContent")
            .await,
        "down"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#services em').length")
            .await,
        0
    );
    assert_eq!(
        b.eval("document.querySelector('#summary').innerText.includes('1')")
            .await,
        true
    );

    // A filter narrows the list and stays in the URL.
    b.eval("(() => { const i = document.getElementById('filter-name'); i.value = 'ORDERS'; i.dispatchEvent(new Event('input')); return true; })()").await;
    assert!(
        b.wait_until(&format!("{rows}.length === 2"), Duration::from_secs(5))
            .await,
        "filtered: {}",
        b.eval(&format!("[...{rows}].map(r => r.dataset.name)"))
            .await
    );
    assert_eq!(b.eval("location.search").await, "?q=ORDERS");
    b.eval("(() => { const s = document.getElementById('filter-group'); s.value = 'payments'; s.dispatchEvent(new Event('change')); const i = document.getElementById('filter-name'); i.value = ''; i.dispatchEvent(new Event('input')); return true; })()").await;
    assert!(
        b.wait_until(
            &format!("{rows}.length === 2 && location.search === '?group=payments'"),
            Duration::from_secs(5)
        )
        .await,
        "by group: {}",
        b.eval("location.search").await
    );

    // A service goes down: the page follows, without a reload.
    b.eval("window.__same_page = true").await;
    ledger_stop.cancel();
    assert!(
        b.wait_until(
            "document.querySelector('#services tr[data-name=\"ledger\"]')?.dataset.state === 'down'",
            Duration::from_secs(15)
        )
        .await,
        "ledger down on the page: {}",
        b.eval("document.body.innerText").await
    );
    assert_eq!(
        b.eval("window.__same_page === true").await,
        true,
        "no reload"
    );
    assert_eq!(
        b.eval("location.search").await,
        "?group=payments",
        "filters kept across refreshes"
    );
    // All of it, for the screenshot.
    b.navigate(&format!("{base}/")).await;
    b.wait_until(&format!("{rows}.length === 5"), Duration::from_secs(10))
        .await;
    b.screenshot(&screenshots().join("overview.png")).await;

    // The service page shows the event, with its reason.
    b.navigate(&format!("{base}/service/ledger")).await;
    assert!(
        b.wait_until(
            "!!document.querySelector('#events tbody tr .state.down')",
            Duration::from_secs(10)
        )
        .await,
        "the down event: {}",
        b.eval("document.body.innerText").await
    );
    let text = b.eval("document.getElementById('events').innerText").await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("connect")),
        "the reason: {text}"
    );
    assert_eq!(
        b.eval("document.querySelector('#current .state').textContent")
            .await,
        "down"
    );
    b.screenshot(&screenshots().join("service.png")).await;
    assert!(
        b.wait_until(
            "/^next (in \\d+s|now) · every 500 ms$/.test(document.getElementById('next-check')?.textContent)",
            Duration::from_secs(5)
        )
        .await,
        "{}",
        b.eval("document.getElementById('current')?.parentNode.innerText").await
    );
    b.navigate(&format!("{base}/service/billing")).await;
    assert!(
        b.wait_until(
            "/^next (in \\d+s|now) · every 10s$/.test(document.getElementById('next-check')?.textContent)",
            Duration::from_secs(10)
        )
        .await,
        "billing's own interval and its next turn: {}",
        b.eval("document.body.innerText").await
    );

    // A phone: the page fits its width.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    b.navigate(&format!("{base}/")).await;
    b.wait_until(&format!("{rows}.length === 5"), Duration::from_secs(10))
        .await;
    assert_eq!(
        b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await,
        true,
        "no sideways scrolling on a phone"
    );
    b.screenshot(&screenshots().join("phone.png")).await;

    // The daemon goes away: the page says its data is stale.
    drop(d);
    assert!(
        b.wait_until(
            "document.getElementById('banner').classList.contains('show')",
            Duration::from_secs(15)
        )
        .await,
        "stale data shown plainly"
    );
    let banner = b.eval("document.getElementById('banner').innerText").await;
    assert!(
        banner.as_str().is_some_and(|t| t.contains("not answering")),
        "{banner}"
    );
    // Every error the page raised until now is a bug, but the fetches that failed because
    // the daemon was stopped on purpose.
    let problems: Vec<_> = b
        .problems
        .iter()
        .filter(|p| !p.contains("ERR_CONNECTION_REFUSED"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_with_the_token_as_a_basic_password() {
    if !needs(&[Tool::Chromium]) {
        return;
    }
    use base64::Engine as _;
    let stop = CancellationToken::new();
    let up = mock(&stop).await;
    let dir = TempDir::new("page-auth");
    std::fs::write(dir.path().join("token"), "page-token-1234567890\n").expect("token");
    let config = format!(
        "{}[daemon.auth]\ntoken_file = {:?}\nprotect = [\"status\"]\n\n{}",
        daemon_section("500ms", "400ms", ""),
        dir.path().join("token").display().to_string(),
        service("api", &up.url("/health"))
    );
    let d = Daemon::start(&config);
    let r = raw(
        d.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let mut b = Browser::start(1024, 700).await;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode("oncall:page-token-1234567890");
    b.set_headers(json!({"Authorization": format!("Basic {credentials}")}))
        .await;
    b.navigate(&format!("http://{}/", d.addr)).await;
    assert!(
        b.wait_until(
            "document.querySelector('#services tr[data-name=\"api\"]')?.dataset.state === 'up'",
            Duration::from_secs(15)
        )
        .await,
        "{}",
        b.eval("document.body.innerText").await
    );
    assert!(b.problems.is_empty(), "{:#?}", b.problems);
    stop.cancel();
}
