//! The DNS probe (`dns://server:port`): one query (`dns_query`, `dns_type`) to that server over
//! UDP, again over TCP when the answer comes back truncated (or over TCP only), and the answer
//! checked: its response code against `expect_rcode`, that it holds a record of the type asked
//! for, and every such record against `expect_answer`. As blackbox_exporter's DNS prober, with
//! the same deadline rules as every check.
//!
//! The wire format is hickory-proto's (already here for the resolver); sending one message and
//! reading one back is a few lines of tokio, so the query's time limit, socket and descriptor
//! slot are the check's own rather than a resolver's retries and cache.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::progress::{Clock, Failure, Phase, Progress};
use super::{DnsFacts, MAX_DNS_ANSWERS_SHOWN, Outcome, Prober, Reason, net};
use crate::config::{DnsCheck, DnsTransport, DnsType, RCODES, Service};

/// The UDP payload size offered (EDNS0): what DNS flag day 2020 settled on, so answers fit one
/// unfragmented datagram and bigger ones come back truncated, to be asked again over TCP.
const UDP_PAYLOAD: u16 = 1232;

/// Bytes of one answer's data kept for `/status`.
const MAX_ANSWER_TEXT: usize = 256;

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let progress = Progress::default();
    let clock = Clock::start(svc, sweep_deadline);
    let facts = Mutex::new(None);
    let result = clock.bound(attempt(prober, svc, &progress, &facts)).await;
    let mut outcome = clock.outcome(svc, &progress, result);
    outcome.dns = facts.into_inner().unwrap_or_else(|e| e.into_inner());
    outcome
}

async fn attempt(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
    facts: &Mutex<Option<Arc<DnsFacts>>>,
) -> Result<(), Failure> {
    let Some(check) = svc.extra.dns.as_deref() else {
        return Err(Failure::new(
            Reason::InvalidResponse,
            "no dns_query configured",
        ));
    };
    let query = build_query(check)?;
    let started = Instant::now();
    let (answer, tcp) = match check.transport {
        DnsTransport::Tcp => (over_tcp(prober, svc, progress, &query).await?, true),
        DnsTransport::Udp => {
            let answer = over_udp(prober, svc, progress, &query).await?;
            if answer.truncated() {
                (over_tcp(prober, svc, progress, &query).await?, true)
            } else {
                (answer, false)
            }
        }
    };
    let lookup = started.elapsed();
    let verdict = judge(check, &answer);
    let wanted = record_type(check.record);
    let shown = answer
        .answers()
        .iter()
        .filter(|r| r.record_type() == wanted)
        .take(MAX_DNS_ANSWERS_SHOWN)
        .map(|r| cut(data_text(r)).into_boxed_str())
        .collect();
    *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(DnsFacts {
        rcode: rcode_name(&answer),
        answer_rrs: answer.answers().len(),
        answers: shown,
        lookup,
        tcp,
    }));
    verdict
}

/// The query message: one question, recursion desired, EDNS0 with [`UDP_PAYLOAD`].
fn build_query(check: &DnsCheck) -> Result<Message, Failure> {
    let name = Name::from_str(&check.query)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| Failure::new(Reason::InvalidResponse, format!("dns_query: {e}")))?;
    let mut m = Message::new();
    m.set_id(query_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, record_type(check.record)));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    m.set_edns(edns);
    Ok(m)
}

/// A query id nobody off the path can guess (answers with another id are ignored).
fn query_id() -> u16 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u16
}

fn encode(m: &Message) -> Result<Vec<u8>, Failure> {
    m.to_vec()
        .map_err(|e| Failure::new(Reason::InvalidResponse, format!("encoding the query: {e}")))
}

/// Whether `answer` answers `query`: a response with its id, and its question.
fn answers(query: &Message, answer: &Message) -> bool {
    answer.id() == query.id()
        && answer.message_type() == MessageType::Response
        && answer.queries() == query.queries()
}

async fn over_udp(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
    query: &Message,
) -> Result<Message, Failure> {
    progress.enter(Phase::Slot);
    let _slot = prober.pool.slot().await;
    let addrs = net::addresses(prober, svc, &svc.target, progress).await?;
    let Some(&server) = addrs.first() else {
        return Err(Failure::new(Reason::Dns, "no address for the server"));
    };
    progress.enter(Phase::Connect);
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |what: &str, e: std::io::Error| {
        Failure::new(Reason::Connect, format!("{what} {server}: {e}"))
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| io("binding a socket for", e))?;
    socket.connect(server).await.map_err(|e| io("connect", e))?;
    socket
        .send(&encode(query)?)
        .await
        .map_err(|e| io("sending to", e))?;
    progress.enter(Phase::Request);
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| io("receiving from", e))?;
        // Anything else arriving on the socket (a late answer, garbage) is not the answer.
        match Message::from_vec(&buf[..n]) {
            Ok(m) if answers(query, &m) => return Ok(m),
            _ => continue,
        }
    }
}

async fn over_tcp(
    prober: &Prober,
    svc: &Service,
    progress: &Progress,
    query: &Message,
) -> Result<Message, Failure> {
    let (mut tcp, _slot) = net::connect(prober, svc, &svc.target, progress).await?;
    let bytes = encode(query)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    framed.extend_from_slice(&bytes);
    let closed =
        |e: std::io::Error| Failure::new(Reason::ConnectionClosed, format!("DNS over TCP: {e}"));
    tcp.write_all(&framed).await.map_err(closed)?;
    progress.enter(Phase::Request);
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await.map_err(closed)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut buf).await.map_err(closed)?;
    match Message::from_vec(&buf) {
        Ok(m) if answers(query, &m) => Ok(m),
        Ok(_) => Err(Failure::new(
            Reason::InvalidResponse,
            "the TCP answer is not for this query (another id or question)",
        )),
        Err(e) => Err(Failure::new(
            Reason::InvalidResponse,
            format!("the TCP answer is not a DNS message: {e}"),
        )),
    }
}

/// The answer checked against `check`: response code, records of the type asked for, their data.
fn judge(check: &DnsCheck, answer: &Message) -> Result<(), Failure> {
    let rcode = rcode_name(answer);
    if !check.rcodes.contains(&rcode) {
        return Err(Failure::new(
            Reason::DnsRcode,
            format!("rcode {rcode}, expected {}", check.rcodes.join(" or ")),
        ));
    }
    let wanted = record_type(check.record);
    let data: Vec<String> = answer
        .answers()
        .iter()
        .filter(|r| r.record_type() == wanted)
        .map(data_text)
        .collect();
    if rcode == "NOERROR" && data.is_empty() {
        return Err(Failure::new(
            Reason::DnsNoAnswer,
            format!(
                "no {} record for {} ({} records in the answer)",
                check.record.as_str(),
                check.query,
                answer.answers().len()
            ),
        ));
    }
    if let Some(want) = &check.answer {
        let matching = data.iter().filter(|d| want.regex.is_match(d)).count();
        let ok = if want.all {
            matching == data.len()
        } else {
            matching > 0
        };
        if !ok {
            let first_bad = data.iter().find(|d| !want.regex.is_match(d));
            return Err(Failure::new(
                Reason::DnsAnswerMismatch,
                match (want.all, first_bad) {
                    (true, Some(bad)) => format!(
                        "{} of {} answers match {:?}; {:?} does not",
                        matching,
                        data.len(),
                        want.regex.as_str(),
                        cut(bad.clone())
                    ),
                    _ => format!(
                        "none of {} answers matches {:?}",
                        data.len(),
                        want.regex.as_str()
                    ),
                },
            ));
        }
    }
    Ok(())
}

fn rcode_name(m: &Message) -> &'static str {
    RCODES
        .get(usize::from(u16::from(m.response_code())))
        .copied()
        .unwrap_or("UNKNOWN")
}

fn record_type(t: DnsType) -> RecordType {
    match t {
        DnsType::A => RecordType::A,
        DnsType::Aaaa => RecordType::AAAA,
        DnsType::Cname => RecordType::CNAME,
        DnsType::Mx => RecordType::MX,
        DnsType::Txt => RecordType::TXT,
        DnsType::Srv => RecordType::SRV,
        DnsType::Ns => RecordType::NS,
        DnsType::Soa => RecordType::SOA,
        DnsType::Ptr => RecordType::PTR,
    }
}

/// A record's data as `expect_answer` sees it: `10.0.0.1`, `10 mail.example.`,
/// `0 5 8080 node.example.`; a TXT record's strings joined without quotes.
fn data_text(r: &Record) -> String {
    match r.data() {
        RData::TXT(txt) => txt
            .txt_data()
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    }
}

fn cut(s: String) -> String {
    super::truncate_to(s, MAX_ANSWER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::rdata::A;

    fn check(extra: &str) -> DnsCheck {
        let src = format!(
            "[[service]]\nname = \"r\"\nurl = \"dns://127.0.0.1\"\ndns_query = \"a.test\"\n{extra}\n"
        );
        let c = crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid");
        (*c.services[0].extra.dns.clone().expect("a dns check")).clone()
    }

    fn answer(check: &DnsCheck, rcode: ResponseCode, addrs: &[[u8; 4]]) -> Message {
        let query = build_query(check).expect("query");
        let mut m = Message::new();
        m.set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_response_code(rcode)
            .add_queries(query.queries().to_vec());
        let name = query.queries()[0].name().clone();
        for a in addrs {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A::from(std::net::Ipv4Addr::from(*a))),
            ));
        }
        assert!(answers(&query, &m));
        m
    }

    fn reason(c: &DnsCheck, m: &Message) -> Option<Reason> {
        judge(c, m).err().map(|f| f.reason)
    }

    #[test]
    fn every_answer_record_is_judged_any_or_all() {
        let two = [[10, 0, 0, 1], [192, 168, 0, 1]];
        let any = check("expect_answer = { regex = '^10\\.' }");
        assert_eq!(
            reason(&any, &answer(&any, ResponseCode::NoError, &two)),
            None
        );
        let all = check("expect_answer = { regex = '^10\\.', match = \"all\" }");
        let m = answer(&all, ResponseCode::NoError, &two);
        let f = judge(&all, &m).expect_err("one record does not match");
        assert_eq!(f.reason, Reason::DnsAnswerMismatch);
        assert!(f.message.contains("192.168.0.1"), "{}", f.message);
        let none = check("expect_answer = { regex = '^172\\.' }");
        assert_eq!(
            reason(&none, &answer(&none, ResponseCode::NoError, &two)),
            Some(Reason::DnsAnswerMismatch)
        );
    }

    #[test]
    fn rcodes_and_empty_answers_fail_with_their_own_reasons() {
        let plain = check("");
        assert_eq!(
            reason(&plain, &answer(&plain, ResponseCode::NXDomain, &[])),
            Some(Reason::DnsRcode)
        );
        assert_eq!(
            reason(&plain, &answer(&plain, ResponseCode::NoError, &[])),
            Some(Reason::DnsNoAnswer)
        );
        let nx = check("expect_rcode = [\"NXDOMAIN\", \"NOERROR\"]");
        assert_eq!(reason(&nx, &answer(&nx, ResponseCode::NXDomain, &[])), None);
        assert_eq!(
            rcode_name(&answer(&nx, ResponseCode::ServFail, &[])),
            "SERVFAIL"
        );
    }

    #[test]
    fn an_answer_to_another_query_is_not_the_answer() {
        let c = check("");
        let query = build_query(&c).expect("query");
        let mut other = answer(&c, ResponseCode::NoError, &[[10, 0, 0, 1]]);
        other.set_id(query.id().wrapping_add(1));
        assert!(!answers(&query, &other));
    }

    #[test]
    fn long_answer_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = cut(long);
        assert!(cut.len() <= MAX_ANSWER_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
