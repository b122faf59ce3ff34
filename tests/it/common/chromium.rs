//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: a page opened,
//! JavaScript evaluated in it, screenshots taken, and every script error or CSP violation the
//! page raises collected so a test can require there were none.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TempDir;

/// Longest any one DevTools call may take.
const CALL_WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    /// Exceptions, console errors and CSP violations the page raised.
    pub problems: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and a blank page of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let profile = TempDir::new("chromium");
        let mut command = Command::new("chromium");
        command.args([
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            &format!("--window-size={width},{height}"),
        ]);
        if super::is_root() {
            // Chromium's sandbox refuses to run as root.
            command.arg("--no-sandbox");
        }
        let mut child = command
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium reports its DevTools address within 30 s");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to DevTools");
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            session: String::new(),
            problems: Vec::new(),
            _profile: profile,
        };
        let target = b
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({})).await;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b
    }

    /// One DevTools call (on the page once attached); events that come meanwhile are checked
    /// for problems.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send to DevTools");
        let end = Instant::now() + CALL_WAIT;
        loop {
            let next = tokio::time::timeout_at(end, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {CALL_WAIT:?}"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.problems.push(format!(
                "exception: {}",
                event["params"]["exceptionDetails"]
            )),
            Some("Log.entryAdded") if event["params"]["entry"]["level"] == "error" => self
                .problems
                .push(format!("console: {}", event["params"]["entry"]["text"])),
            Some("Runtime.consoleAPICalled") if event["params"]["type"] == "error" => self
                .problems
                .push(format!("console.error: {}", event["params"]["args"])),
            _ => {}
        }
    }

    /// Sends `headers` with every request of the page (e.g. `Authorization`).
    pub async fn set_headers(&mut self, headers: Value) {
        self.call("Network.enable", json!({})).await;
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
    }

    /// The value of `expression` in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` (bounded) until it is `true`.
    pub async fn wait_until(&mut self, expression: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            if self.eval(expression).await == json!(true) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page, written to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
