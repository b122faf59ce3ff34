//! End to end: `dns://` checks against a real DNS server (unbound on a loopback port): A, AAAA,
//! TXT, SRV answers, NXDOMAIN, SERVFAIL (a zone whose only server refuses it), REFUSED, an
//! answer too big for UDP that must be asked again over TCP, answer regexes that only some
//! records match, and a server that never answers.

use std::time::Duration;

use crate::common::unbound::Unbound;
use crate::common::*;

fn dns_service(name: &str, server: std::net::SocketAddr, keys: &str) -> String {
    let timeout = if keys.contains("timeout") {
        ""
    } else {
        "timeout = \"1500ms\"\n"
    };
    format!("[[service]]\nname = \"{name}\"\nurl = \"dns://{server}\"\n{timeout}{keys}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_checks_judge_every_kind_of_answer_a_real_server_gives() {
    if !needs(&[Tool::Unbound, Tool::Promtool]) {
        return;
    }
    // Eight TXT records of 200 bytes: over 1,232 bytes, so the UDP answer comes truncated.
    let big: Vec<String> = (0..8)
        .map(|i| format!("big.svc.test. 60 IN TXT {i}{}", "x".repeat(199)))
        .collect();
    let mut records = vec![
        "a.svc.test. 60 IN A 127.0.0.21".to_string(),
        "a.svc.test. 60 IN A 10.1.2.3".to_string(),
        "v6.svc.test. 60 IN AAAA ::1".to_string(),
        "t.svc.test. 60 IN TXT v=ok".to_string(),
        "_h._tcp.svc.test. 60 IN SRV 0 5 8080 a.svc.test.".to_string(),
    ];
    records.extend(big);
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    // A zone whose only server refuses it: the resolver answers SERVFAIL.
    let refusing = Unbound::start_with(&[], "  local-zone: \"sf.internal.\" refuse\n").await;
    let dns = Unbound::start_with(
        &refs,
        &format!(
            "  do-not-query-localhost: no\nstub-zone:\n  name: \"sf.internal.\"\n  stub-addr: 127.0.0.1@{}\nserver:\n",
            refusing.addr.port()
        ),
    )
    .await;
    // A "server" that reads every query and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let silent_addr = silent.local_addr().expect("addr");
    let s = dns.addr;
    let config = [
        daemon_section("2s", "2s", ""),
        dns_service(
            "a-any",
            s,
            "dns_query = \"a.svc.test\"\nexpect_answer = { regex = '^10\\.' }",
        ),
        dns_service(
            "a-all",
            s,
            "dns_query = \"a.svc.test\"\nexpect_answer = { regex = '^10\\.', match = \"all\" }",
        ),
        dns_service(
            "aaaa",
            s,
            "dns_query = \"v6.svc.test\"\ndns_type = \"AAAA\"",
        ),
        dns_service(
            "txt",
            s,
            "dns_query = \"t.svc.test\"\ndns_type = \"TXT\"\nexpect_answer = { regex = '^v=ok$' }",
        ),
        dns_service(
            "srv",
            s,
            "dns_query = \"_h._tcp.svc.test\"\ndns_type = \"SRV\"",
        ),
        dns_service("big", s, "dns_query = \"big.svc.test\"\ndns_type = \"TXT\""),
        dns_service(
            "tcp-only",
            s,
            "dns_query = \"a.svc.test\"\ndns_transport = \"tcp\"",
        ),
        dns_service("nx", s, "dns_query = \"nope.svc.test\""),
        dns_service(
            "nx-expected",
            s,
            "dns_query = \"nope.svc.test\"\nexpect_rcode = [\"NXDOMAIN\"]",
        ),
        dns_service("nodata", s, "dns_query = \"a.svc.test\"\ndns_type = \"MX\""),
        dns_service("servfail", s, "dns_query = \"x.sf.internal\""),
        dns_service("refused", s, "dns_query = \"x.broken.svc.test\""),
        dns_service(
            "silent",
            silent_addr,
            "dns_query = \"a.svc.test\"\ntimeout = \"500ms\"",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let get = |name: &str| service_status(&status, name).clone();
    let reason = |name: &str| get(name)["last"]["reason"].clone();
    let dns_of = |name: &str| get(name)["last"]["dns"].clone();

    for up in [
        "a-any",
        "aaaa",
        "txt",
        "srv",
        "big",
        "tcp-only",
        "nx-expected",
    ] {
        assert_eq!(get(up)["state"], "up", "{up}: {}", get(up));
    }
    let a = dns_of("a-any");
    assert_eq!(a["rcode"], "NOERROR");
    assert_eq!(a["answer_rrs"], 2);
    assert_eq!(a["transport"], "udp");
    let mut answers: Vec<&str> = a["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    answers.sort_unstable();
    assert_eq!(answers, ["10.1.2.3", "127.0.0.21"]);
    assert_eq!(dns_of("aaaa")["answers"][0], "::1");
    assert_eq!(dns_of("srv")["answers"][0], "0 5 8080 a.svc.test.");
    assert_eq!(
        dns_of("big")["transport"],
        "tcp",
        "truncated over UDP: asked again over TCP"
    );
    assert_eq!(dns_of("big")["answer_rrs"], 8);
    assert_eq!(dns_of("tcp-only")["transport"], "tcp");
    assert_eq!(dns_of("nx-expected")["rcode"], "NXDOMAIN");

    // Every record is checked: with match = "all" the 127.0.0.21 record fails it.
    assert_eq!(reason("a-all"), "dns_answer_mismatch", "{}", get("a-all"));
    assert!(
        get("a-all")["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.21")),
        "{}",
        get("a-all")
    );
    assert_eq!(reason("nx"), "dns_rcode");
    assert!(
        get("nx")["last"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("rcode NXDOMAIN, expected NOERROR")),
        "{}",
        get("nx")
    );
    assert_eq!(reason("nodata"), "dns_no_answer", "{}", get("nodata"));
    assert_eq!(reason("servfail"), "dns_rcode", "{}", get("servfail"));
    assert_eq!(dns_of("servfail")["rcode"], "SERVFAIL");
    assert_eq!(reason("refused"), "dns_rcode", "{}", get("refused"));
    assert_eq!(dns_of("refused")["rcode"], "REFUSED");
    assert_eq!(reason("silent"), "timeout", "{}", get("silent"));
    assert!(dns_of("silent").is_null(), "no answer, no facts");

    let metrics = d.get("/metrics").await.body;
    assert!(
        metrics.contains("probe_dns_answer_rrs{target=\"a-any\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("probe_dns_lookup_time_seconds{target=\"big\"}"));
    assert!(
        metrics.contains("healthsweep_probe_failure_reason{target=\"nx\",reason=\"dns_rcode\"} 1")
    );
    promtool_check_metrics(&metrics);
    drop(silent);
    drop(dns);
    drop(refusing);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A hostile "server": every query gets garbage, then an answer with another id, then one to
/// another question; none of them is the answer, so the check runs out of time (and nothing
/// panics or accepts a forged answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_forged_answers_are_not_taken_for_the_answer() {
    use hickory_resolver::proto::op::{Message, MessageType, Query};
    use hickory_resolver::proto::rr::{Name, RecordType};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let server = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let _ = socket.send_to(b"\xff\xfe garbage", peer);
            let mut other_id = q.clone();
            other_id
                .set_id(q.id().wrapping_add(1))
                .set_message_type(MessageType::Response);
            let _ = socket.send_to(&other_id.to_vec().expect("encode"), peer);
            let mut other_question = Message::new();
            other_question
                .set_id(q.id())
                .set_message_type(MessageType::Response)
                .add_query(Query::query(
                    Name::from_ascii("forged.example.").expect("name"),
                    RecordType::A,
                ));
            let _ = socket.send_to(&other_question.to_vec().expect("encode"), peer);
        }
    });
    let config = [
        daemon_section("1s", "1s", ""),
        dns_service(
            "forged",
            server,
            "dns_query = \"a.svc.test\"\ntimeout = \"400ms\"",
        ),
    ]
    .concat();
    let d = Daemon::start(&config);
    let status = d.status_after_sweeps(2).await;
    let s = service_status(&status, "forged");
    assert_eq!(s["last"]["reason"], "timeout", "{s}");
    assert!(s["last"]["dns"].is_null(), "{s}");
    assert!(d.logs_containing("panicked").is_empty());
}
