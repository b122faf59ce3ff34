//! Test harness: starts the real `healthsweep` binary on loopback, talks HTTP to it, and waits
//! for conditions with a bound on time. Every wait ends by itself.

pub mod chromium;
pub mod tls;
pub mod unbound;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_healthsweep")
}

/// A server on `addr` (port 0: any free port) running `conn` on its own task for every
/// connection it accepts, until `stop` is cancelled. Returns the address it listens on.
pub async fn serve_each<F, Fut>(
    addr: SocketAddr,
    conn: F,
    stop: &tokio_util::sync::CancellationToken,
) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = stop.clone();
    tokio::spawn(async move {
        while let Some(s) = healthsweep::mock::next_connection(&listener, &stop).await {
            tokio::spawn(conn(s));
        }
    });
    addr
}

/// Any free port on 127.0.0.1, for [`serve_each`].
pub fn any_loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs the binary with `args` to completion: its exit code, stdout and stderr.
pub fn run_cli<I, S>(args: I) -> (Option<i32>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run healthsweep");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("healthsweep-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon (`healthsweep run`), killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    /// Every stderr line so far (JSON log lines).
    pub logs: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

/// How to start a daemon: `Daemon::with_config(c).env("K", "v").run_args(&[..]).start()`.
/// Runs `WRAPPER... healthsweep --log-format json --log-level debug run --listen
/// 127.0.0.1:0 --config PATH RUN_ARGS...` and waits for the address it reports.
pub struct Launch {
    config_path: PathBuf,
    dir: TempDir,
    wrapper: Vec<String>,
    run_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// An environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Environment variables for the daemon.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Launch {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// More arguments to `run` (e.g. `--shard 0/3`).
    pub fn run_args(mut self, args: &[&str]) -> Launch {
        self.run_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A program the daemon runs under (e.g. `unshare ... --`).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Launch {
        self.wrapper.extend(wrapper.iter().map(|a| a.to_string()));
        self
    }

    /// `file` mounted over `target` (say `/etc/hosts`) in a mount namespace of the daemon's
    /// own: the machine's file is untouched (needs root and unshare(1): [`Tool::Root`]).
    pub fn with_file_over(self, file: &Path, target: &str) -> Launch {
        let script = format!(r#"mount --bind "$1" {target} && shift && exec "$@""#);
        let file = file.display().to_string();
        self.wrapped(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
            &file,
        ])
    }

    /// An open-file limit (soft and hard) of `nofile`, via prlimit(1).
    pub fn nofile(self, nofile: u64) -> Launch {
        let limit = format!("--nofile={nofile}:{nofile}");
        self.wrapped(&["prlimit", &limit, "--"])
    }

    /// Starts it and waits (bounded) for the address it listens on.
    pub fn start(self) -> Daemon {
        let Launch {
            config_path,
            dir,
            wrapper,
            run_args,
            env,
        } = self;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .args(["--log-format", "json", "--log-level", "debug"])
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config_path)
            .args(run_args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start healthsweep");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not report its address; logs:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        Daemon {
            child,
            addr,
            config_path,
            logs,
            _dir: dir,
        }
    }
}

impl Daemon {
    /// Writes `config` to a file and starts the daemon on it, listening on a free loopback port.
    pub fn start(config: &str) -> Daemon {
        Daemon::with_config(config).start()
    }

    /// A daemon to start on `config`, written to a file of its own: see [`Launch`].
    pub fn with_config(config: &str) -> Launch {
        let dir = TempDir::new("daemon");
        let config_path = dir.path().join("healthsweep.toml");
        std::fs::write(&config_path, config).expect("write config");
        Daemon::at(config_path, dir)
    }

    /// A daemon to start on a config file already in place (a symlink, say) in `dir`, which
    /// lives as long as the daemon.
    pub fn at(config_path: PathBuf, dir: TempDir) -> Launch {
        Launch {
            config_path,
            dir,
            wrapper: Vec::new(),
            run_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Replaces the config file (atomically, by rename, as config management tools do).
    pub fn write_config(&self, config: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, config).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http(self.addr, "GET", path).await
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// Polls `/status` (bounded by `within`) until `cond` holds; returns the last document and
    /// whether it held.
    pub async fn poll_status(
        &self,
        within: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, bool) {
        let end = Instant::now() + within;
        loop {
            let status = self.json("/status").await;
            if cond(&status) {
                return (status, true);
            }
            if Instant::now() >= end {
                return (status, false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `/status` shows `sweeps` completed sweeps, and returns it.
    pub async fn status_after_sweeps(&self, sweeps: u64) -> serde_json::Value {
        let (status, found) = self
            .poll_status(Duration::from_secs(15), |s| {
                s["sweep"]["number"].as_u64().unwrap_or(0) >= sweeps
            })
            .await;
        assert!(
            found,
            "no sweep {sweeps} within 15 s; last status: {status}"
        );
        status
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> HttpResponse {
        raw(
            self.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
                self.addr
            )
            .as_bytes(),
        )
        .await
    }

    /// [`Daemon::status_after_sweeps`] for a daemon whose `/status` needs a token.
    pub async fn status_after_sweeps_with_token(
        &self,
        sweeps: u64,
        token: &str,
    ) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.get_with_token("/status", token).await;
            assert_eq!(r.status, 200, "GET /status with a token: {}", r.body);
            let status = r.json();
            if status["sweep"]["number"].as_u64().unwrap_or(0) >= sweeps {
                return status;
            }
            assert!(
                Instant::now() < end,
                "no sweep {sweeps} within 15 s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `/status` shows config generation `generation`.
    pub async fn status_at_generation(&self, generation: u64) -> serde_json::Value {
        let (status, found) = self
            .poll_status(Duration::from_secs(10), |s| s["generation"] == generation)
            .await;
        assert!(
            found,
            "generation {generation} not reached; last status: {status}"
        );
        status
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs_containing(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    v["addr"].as_str()?.parse().ok()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client (one request, `Connection: close`), so tests see exactly the bytes
/// the daemon sends. Bounded by a 10 s timeout.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Sends `request` as is and parses the response.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to daemon");
        s.write_all(request).await.expect("send request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("response within 10 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body).unwrap_or_else(|| panic!("a broken chunked body: {body:?}"))
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The data of a chunked body (RFC 9112, 7.1), or `None` if it is not well formed or ends
/// before its last chunk.
pub fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Polls `cond` every 50 ms until it holds or `within` passes; returns whether it held.
pub async fn wait_for<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `[[service]]` table.
pub fn service(name: &str, url: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nurl = \"{url}\"\n\n")
}

/// A `[daemon]` table with a short interval, for tests.
pub fn daemon_section(interval: &str, deadline: &str, extra: &str) -> String {
    format!("[daemon]\ninterval = \"{interval}\"\ndeadline = \"{deadline}\"\n{extra}\n")
}

/// The service's object in a `/status` document.
pub fn service_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
}

/// Whether `/status` lists `name`.
pub fn has_service(status: &serde_json::Value, name: &str) -> bool {
    status["services"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["name"] == name))
}

/// Runs a tool to the end; returns whether it succeeded and what it said (stdout, then
/// stderr). Panics with `install_hint` when the tool cannot be started at all.
pub fn run_tool(command: &mut Command, install_hint: &str) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "{:?} cannot run ({e}): {install_hint}",
            command.get_program()
        )
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// What the kernel says about a process: open descriptors and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    pub open_fds: usize,
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/fd` and `/proc/<pid>/status` (Linux).
pub fn proc_stats(pid: u32) -> ProcStats {
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    ProcStats {
        open_fds,
        rss_bytes: rss_kib * 1024,
    }
}

/// The lowest descriptor count and RSS seen while sampling every 10 ms for `over`. Checks come
/// and go within a sweep; the minimum over at least one interval is the count between sweeps,
/// which is what a leak raises.
pub async fn min_proc_stats(pid: u32, over: Duration) -> ProcStats {
    let end = Instant::now() + over;
    let mut min = proc_stats(pid);
    while Instant::now() < end {
        let s = proc_stats(pid);
        min.open_fds = min.open_fds.min(s.open_fds);
        min.rss_bytes = min.rss_bytes.min(s.rss_bytes);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    min
}

/// A downstream service that answers every request `200 ok` (keep-alive) and keeps the head of
/// each request it got, so a test sees exactly what the daemon sent, headers included.
pub struct RecordingServer {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingServer {
    /// Listens on a free loopback port until dropped.
    pub async fn start() -> RecordingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind recording server");
        let addr = listener.local_addr().expect("local addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let sink = heads.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so dropping the server (aborting this task)
            // ends them too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(record_connection(stream, sink.clone()));
            }
        });
        RecordingServer { addr, heads, task }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request head received so far, oldest first.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }

    /// The request heads for `path`, oldest first.
    pub fn heads_for(&self, path: &str) -> Vec<String> {
        let line = format!(" {path} HTTP/1.1");
        self.heads()
            .into_iter()
            .filter(|h| h.lines().next().is_some_and(|l| l.ends_with(&line)))
            .collect()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of header `name` (case-insensitive) in a request head.
pub fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

async fn record_connection(mut stream: tokio::net::TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) if buf.len() + n <= 64 * 1024 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        heads.lock().expect("heads lock").push(head);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// A mock service (see `healthsweep::mock`) on a free loopback port, answering after 10 ms, until
/// `stop` is cancelled.
pub async fn mock(stop: &tokio_util::sync::CancellationToken) -> healthsweep::mock::MockServer {
    healthsweep::mock::MockServer::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_millis(10),
        stop.clone(),
    )
    .await
    .expect("mock server starts")
}

/// What a [`plain_server`] answers for a path: status, headers (repeatable), body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

/// A plain HTTP/1.1 server (hyper, keep-alive) on a free loopback port answering each path
/// with `answer`, until `stop`.
pub async fn plain_server(
    answer: fn(&str) -> Answer,
    stop: &tokio_util::sync::CancellationToken,
) -> SocketAddr {
    use hyper::service::service_fn;
    let serve = move |s: tokio::net::TcpStream| async move {
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (status, headers, body) = answer(req.uri().path());
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
            for (k, v) in headers {
                r.headers_mut().append(k, v.parse().expect("header value"));
            }
            async move { Ok::<_, std::convert::Infallible>(r) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    };
    serve_each(any_loopback_port(), serve, stop).await
}

/// Runs the binary with `args`, killing it if it has not exited `within`: its exit code (None
/// if killed or signalled), stdout and stderr.
pub fn run_cli_within<I, S>(args: I, within: Duration) -> (Option<i32>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run healthsweep");
    let end = Instant::now() + within;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("output");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Something a test needs from outside Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Promtool,
    Prometheus,
    SystemdAnalyze,
    KubernetesValidate,
    Openssl,
    Unbound,
    /// Python with grpcio and grpcio-health-checking (the reference gRPC health server).
    GrpcPython,
    /// Headless Chromium, for the status page.
    Chromium,
    /// Debian's `prometheus-alertmanager` (with `amtool`).
    Alertmanager,
    /// Root, with `unshare(1)`: a private mount namespace (its own /etc/hosts or
    /// /etc/resolv.conf) and low ports.
    Root,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Promtool => "promtool",
            Tool::Prometheus => "prometheus",
            Tool::SystemdAnalyze => "systemd-analyze",
            Tool::KubernetesValidate => "kubernetes-validate",
            Tool::Openssl => "openssl",
            Tool::Unbound => "unbound",
            Tool::GrpcPython => "python3",
            Tool::Chromium => "chromium",
            Tool::Alertmanager => "prometheus-alertmanager",
            Tool::Root => "unshare",
        }
    }

    fn install(self) -> &'static str {
        match self {
            Tool::Promtool | Tool::Prometheus => "apt-get install prometheus",
            Tool::SystemdAnalyze => "apt-get install systemd",
            Tool::KubernetesValidate => "pip install kubernetes-validate",
            Tool::Openssl => "apt-get install openssl",
            Tool::Unbound => "apt-get install unbound",
            Tool::GrpcPython => {
                "pip install grpcio grpcio-health-checking (scripts/test does, into target/test-venv)"
            }
            Tool::Chromium => "apt-get install chromium",
            Tool::Alertmanager => "apt-get install prometheus-alertmanager",
            Tool::Root => "run the tests as root (util-linux provides unshare)",
        }
    }

    fn present(self) -> bool {
        // sbin too: Debian puts unbound there, off a normal user's PATH.
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d: std::path::PathBuf| d.join(self.program()).is_file());
        match self {
            Tool::Root => on_path && is_root(),
            Tool::GrpcPython => {
                on_path
                    && std::process::Command::new("python3")
                        .args(["-c", "import grpc, grpc_health.v1.health"])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
            }
            _ => on_path,
        }
    }
}

/// Whether every tool in `tools` is there. A test that gets `false` returns at once, saying
/// what it skipped; with `HEALTHSWEEP_TEST_TOOLS=require` (what `scripts/test` and CI set) a
/// missing tool fails the test instead, so a run that asked for the tools never skips.
pub fn needs(tools: &[Tool]) -> bool {
    let missing: Vec<Tool> = tools.iter().copied().filter(|t| !t.present()).collect();
    if missing.is_empty() {
        return true;
    }
    let list: Vec<String> = missing
        .iter()
        .map(|t| format!("{} ({})", t.program(), t.install()))
        .collect();
    if std::env::var("HEALTHSWEEP_TEST_TOOLS").as_deref() == Ok("require") {
        panic!(
            "missing: {}; HEALTHSWEEP_TEST_TOOLS=require",
            list.join(", ")
        );
    }
    eprintln!(
        "SKIPPED: needs {}; scripts/test installs it (or set HEALTHSWEEP_TEST_TOOLS=require to fail instead)",
        list.join(", ")
    );
    false
}

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `promtool check metrics` on `text`; promtool comes from Debian's `prometheus` package,
/// which `.ci/run` installs.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; .ci/run does this)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
