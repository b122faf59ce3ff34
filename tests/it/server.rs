//! Our own HTTP server under abuse: slowloris and idle connections, malformed and oversized
//! requests. The real daemon on loopback; every connection is closed by the end.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The server's header-read timeout (`server::HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = healthsweep::server::HEADER_READ_TIMEOUT;
/// More connections than the server's limit.
const FLOOD: usize = healthsweep::server::MAX_CONNECTIONS + 44;

/// Whether the server has closed `s`: a read returns EOF or an error (a reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_past_the_connection_limit_does_not_stop_it_serving() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let d = Daemon::start(&format!(
        "{}{}",
        daemon_section("500ms", "500ms", ""),
        service("a", &m.url("/health"))
    ));
    d.status_after_sweeps(1).await;
    let pid = d.child.id();
    let baseline = proc_stats(pid).open_fds;

    // Half trickle a request head a byte at a time; half connect and send nothing.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let mut s = TcpStream::connect(d.addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /status HTTP/1.1\r\nX-Slow: ")
                .await
                .expect("write");
        }
        flood.push(s);
    }
    let trickle_until = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(1);

    // Legitimate clients are served at once all the same: a new connection makes room by
    // closing the longest-idle one.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let asked = Instant::now();
        let r = d.get("/healthz").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "served only after {:?} under the flood",
            asked.elapsed()
        );
        slowest = slowest.max(asked.elapsed());
        for s in flood.iter_mut().step_by(2) {
            let _ = s.write_all(b"a").await;
        }
    }
    let during = proc_stats(pid).open_fds;
    assert!(
        during <= baseline + healthsweep::server::MAX_CONNECTIONS + 8,
        "{during} descriptors open under a flood of {FLOOD}, {baseline} before"
    );
    eprintln!(
        "slowloris: {FLOOD} connections; /healthz answered in at most {slowest:?}; {during} descriptors open ({baseline} before)"
    );
    // Sweeps keep their schedule meanwhile.
    let n = d.json("/status").await["sweep"]["number"]
        .as_u64()
        .expect("number");
    d.status_after_sweeps(n + 2).await;

    // Keep trickling: the header-read timeout still closes every one of them.
    while Instant::now() < trickle_until {
        for s in flood.iter_mut().step_by(2) {
            let _ = s.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut still_open = 0;
    for s in &mut flood {
        if !closed_within(s, Duration::from_millis(200)).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections outlived the header-read timeout"
    );
    assert_eq!(d.get("/healthz").await.status, 200);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let d = Daemon::start(&format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("a", &m.url("/health"))
    ));
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer within 5 s")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // The connection stays open for another request, but not forever.
    let idle_from = Instant::now();
    assert!(closed_within(&mut s, HEADER_TIMEOUT + Duration::from_secs(2)).await);
    assert!(
        idle_from.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500),
        "closed after {:?}, before the timeout",
        idle_from.elapsed()
    );
    stop.cancel();
}

/// Sends `request` raw and returns the status and body; `None` if the server closed without an
/// answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the server answers or closes within 10 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_clean_4xx_json_and_never_a_panic() {
    let stop = CancellationToken::new();
    let m = mock(&stop).await;
    let d = Daemon::start(&format!(
        "{}{}",
        daemon_section("1s", "1s", ""),
        service("a", &m.url("/health"))
    ));
    d.status_after_sweeps(1).await;
    let big_header = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let many_headers = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_path = format!(
        "GET /status/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "n".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversized header", big_header.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("long path", long_path.into_bytes(), 404),
        ("garbage request line", b"\x16\x03\x01\x02\x00 hello\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /status\r\n\r\n".to_vec(), 400),
        ("unknown method", b"BREW /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        ("NUL in path", b"GET /sta\x00tus HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("percent garbage", b"GET /status/%ff%fe%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("bad query", b"GET /status?state=%ff&&=&pretty=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("dot segments", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        ("body on reload", b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(), 403),
        ("bad content-length", b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 0),
    ];
    for (what, request, want) in cases {
        let answer = exchange(d.addr, &request).await;
        match (want, answer) {
            (0, None) => {}
            (0, Some((status, _, _))) => assert!((400..500).contains(&status), "{what}: {status}"),
            (want, Some((status, head, body))) => {
                assert_eq!(status, want, "{what}: {head}\n{body}");
                assert!(
                    head.to_ascii_lowercase()
                        .contains("content-type: application/json"),
                    "{what}: not JSON: {head}"
                );
                let doc: serde_json::Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
                assert!(doc["error"].is_string(), "{what}: {doc}");
            }
            (want, None) => panic!("{what}: no answer, wanted {want}"),
        }
    }
    assert_eq!(d.get("/healthz").await.status, 200, "still serving");
    assert!(d.logs_containing("panicked").is_empty());
    stop.cancel();
}
