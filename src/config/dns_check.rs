//! The `dns://` check's keys (`dns_query`, `dns_type`, `dns_transport`, `expect_rcode`,
//! `expect_answer`), resolved against `[defaults]` and checked at load.

use std::ops::Range;

use toml::Spanned;

use super::Validator;
use super::raw::RawAnswerMatch;

/// What a `dns://` service asks its server, and what the answer must be.
#[derive(Debug, Clone)]
pub struct DnsCheck {
    /// The name asked for, as written (checked to be a valid DNS name).
    pub query: String,
    pub record: DnsType,
    pub transport: DnsTransport,
    /// Response codes that pass, upper case (`NOERROR`, `NXDOMAIN`, ...).
    pub rcodes: Vec<&'static str>,
    /// What the answer records of `record`'s type must match, if anything.
    pub answer: Option<AnswerMatch>,
}

impl DnsCheck {
    /// Everything that decides how the check runs, for the check digest.
    pub(super) fn key(&self) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{:?}",
            self.query,
            self.record.as_str(),
            self.transport,
            self.rcodes,
            self.answer
                .as_ref()
                .map(|a| (a.regex.as_str().to_string(), a.all))
        )
    }
}

/// The record types a `dns://` check may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsType {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Srv,
    Ns,
    Soa,
    Ptr,
}

impl DnsType {
    pub const ALL: [DnsType; 9] = [
        DnsType::A,
        DnsType::Aaaa,
        DnsType::Cname,
        DnsType::Mx,
        DnsType::Txt,
        DnsType::Srv,
        DnsType::Ns,
        DnsType::Soa,
        DnsType::Ptr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
            DnsType::Cname => "CNAME",
            DnsType::Mx => "MX",
            DnsType::Txt => "TXT",
            DnsType::Srv => "SRV",
            DnsType::Ns => "NS",
            DnsType::Soa => "SOA",
            DnsType::Ptr => "PTR",
        }
    }
}

/// How the query travels. UDP retries over TCP when the answer comes back truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    Udp,
    Tcp,
}

/// `expect_answer = { regex = "...", match = "any" | "all" }`.
#[derive(Debug, Clone)]
pub struct AnswerMatch {
    /// Matched against each answer record's data as text (`10.0.0.1`, `10 mail.example.`,
    /// a TXT record's strings joined).
    pub regex: regex::Regex,
    /// Every record must match (`all`), or one is enough (`any`, the default).
    pub all: bool,
}

/// The response codes `expect_rcode` may name (RFC 1035, 2136, 6895).
pub const RCODES: [&str; 11] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
];

/// The `dns://` keys as resolved so far (built-in defaults, then `[defaults]`, then the
/// service's own); a `dns://` service turns them into a [`DnsCheck`].
#[derive(Debug, Clone)]
pub(super) struct DnsOptions {
    pub(super) query: Option<String>,
    pub(super) record: DnsType,
    pub(super) transport: DnsTransport,
    pub(super) rcodes: Vec<&'static str>,
    pub(super) answer: Option<AnswerMatch>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            query: None,
            record: DnsType::A,
            transport: DnsTransport::Udp,
            rcodes: vec!["NOERROR"],
            answer: None,
        }
    }
}

/// The `dns://` keys of one table, as written.
pub(super) struct RawDnsKeys<'a> {
    pub(super) query: Option<&'a Spanned<String>>,
    pub(super) record: Option<&'a Spanned<String>>,
    pub(super) transport: Option<&'a Spanned<String>>,
    pub(super) rcodes: Option<&'a Spanned<Vec<String>>>,
    pub(super) answer: Option<&'a Spanned<RawAnswerMatch>>,
}

impl Validator<'_> {
    /// Applies one table's `dns://` keys to `o`.
    pub(super) fn dns_options(&mut self, raw: RawDnsKeys<'_>, o: &mut DnsOptions) {
        if let Some(q) = raw.query {
            let name = q.get_ref().trim_end_matches('.');
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if valid {
                o.query = Some(q.get_ref().clone());
            } else {
                self.report(
                    Some(&q.span()),
                    format!(
                        "dns_query {:?} is not a DNS name (labels of letters, digits, '-' and '_', at most 63 each)",
                        q.get_ref()
                    ),
                );
            }
        }
        if let Some(t) = raw.record {
            match DnsType::ALL
                .into_iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(t.get_ref()))
            {
                Some(k) => o.record = k,
                None => self.report(
                    Some(&t.span()),
                    format!(
                        "dns_type = {:?} is not one of {}",
                        t.get_ref(),
                        DnsType::ALL.map(DnsType::as_str).join(", ")
                    ),
                ),
            }
        }
        if let Some(t) = raw.transport {
            match t.get_ref().as_str() {
                "udp" => o.transport = DnsTransport::Udp,
                "tcp" => o.transport = DnsTransport::Tcp,
                other => self.report(
                    Some(&t.span()),
                    format!("dns_transport = {other:?} is not \"udp\" or \"tcp\""),
                ),
            }
        }
        if let Some(r) = raw.rcodes {
            o.rcodes = self.rcodes(r);
        }
        if let Some(a) = raw.answer {
            o.answer = self.answer_match(a.get_ref(), &a.span());
        }
    }

    fn rcodes(&mut self, r: &Spanned<Vec<String>>) -> Vec<&'static str> {
        if r.get_ref().is_empty() {
            self.report(Some(&r.span()), "expect_rcode must list at least one code");
        }
        let mut out = Vec::new();
        for code in r.get_ref() {
            match RCODES.into_iter().find(|c| c.eq_ignore_ascii_case(code)) {
                Some(c) => out.push(c),
                None => self.report(
                    Some(&r.span()),
                    format!(
                        "expect_rcode {code:?} is not a response code: {}",
                        RCODES.join(", ")
                    ),
                ),
            }
        }
        out
    }

    fn answer_match(&mut self, a: &RawAnswerMatch, span: &Range<usize>) -> Option<AnswerMatch> {
        let all = match a.match_.as_deref() {
            None | Some("any") => false,
            Some("all") => true,
            Some(other) => {
                self.report(
                    Some(span),
                    format!("expect_answer: match = {other:?} is not \"any\" or \"all\""),
                );
                return None;
            }
        };
        match regex::Regex::new(&a.regex) {
            Ok(regex) => Some(AnswerMatch { regex, all }),
            Err(e) => {
                self.report(
                    Some(span),
                    format!("expect_answer: not a valid regular expression: {e}"),
                );
                None
            }
        }
    }
}
