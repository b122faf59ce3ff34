//! Check options (`[defaults]` and every `[[service]]`): method, headers, timeouts,
//! expectations, connection and TLS settings, each resolved against the defaults.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderMap, HeaderName};
use toml::Spanned;

use super::raw::{RawCheck, RawHeaderMatch, RawHeaderRule, RawStatus};
use super::{
    ConnectionPolicy, DurationKey, Expect, HeaderMatch, IpFamily, ResolverKind, StatusMatcher,
    Validator, ValueMatch, access,
};

/// Most redirects a check may follow.
pub(super) const MAX_REDIRECTS: u8 = 20;
/// Largest failure/success threshold: beyond this a state would take hours to change.
pub(super) const MAX_THRESHOLD: u32 = 100;
/// Upper bound for `max_body_bytes`, so a typo cannot make every check buffer gigabytes.
pub(super) const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Check options resolved to typed values: first the built-in defaults, then `[defaults]`, then
/// the service's own.
#[derive(Debug, Clone)]
pub(super) struct CheckOptions {
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    pub(super) timeout: Duration,
    pub(super) expect: Arc<Expect>,
    pub(super) max_body_bytes: usize,
    pub(super) connection: ConnectionPolicy,
    pub(super) resolver: ResolverKind,
    pub(super) max_latency: Option<Duration>,
    pub(super) body: Option<bytes::Bytes>,
    pub(super) follow_redirects: u8,
    pub(super) ip_family: IpFamily,
    pub(super) failure_threshold: u32,
    pub(super) success_threshold: u32,
    pub(super) tls: TlsSettings,
    pub(super) dns: super::dns_check::DnsOptions,
    /// `grpc_service`: the service named in the gRPC health check (`""`: the server).
    pub(super) grpc_service: Option<String>,
    /// `depends_on`, shared by every service that inherits it.
    pub(super) depends_on: Option<Arc<super::DependsOn>>,
    /// `interval` in sweeps: the service is checked every `every`th sweep.
    pub(super) every: u32,
}

/// TLS keys as given (paths resolved), turned into a [`TlsClient`] per service.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsSettings {
    pub(super) ca_file: Option<(Spanned<String>, PathBuf)>,
    pub(super) client_cert: Option<(Spanned<String>, PathBuf)>,
    pub(super) client_key: Option<(Spanned<String>, PathBuf)>,
    pub(super) server_name: Option<String>,
    pub(super) insecure_skip_verify: bool,
    /// `tls = true` on a `tcp://` service.
    pub(super) tcp_tls: bool,
}

impl Validator<'_> {
    pub(super) fn check_options(&mut self, raw: RawCheck, base: &CheckOptions) -> CheckOptions {
        let mut o = base.clone();
        if let Some(m) = raw.method {
            match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(method) => o.method = method,
                Err(_) => self.report(
                    Some(&m.span()),
                    format!("method = {:?} is not an HTTP method", m.get_ref()),
                ),
            }
        }
        if let Some(headers) = &raw.headers {
            for (name, value) in headers.get_ref() {
                match HeaderName::from_bytes(name.as_bytes()) {
                    // `${NAME}` expanded, marked sensitive; problems never echo the value.
                    Ok(n) => {
                        if let Some(v) = self.header_value(name, value, &headers.span()) {
                            o.headers.insert(n, v);
                        }
                    }
                    Err(_) => self.report(
                        Some(&headers.span()),
                        format!("header name {name:?} is not a valid HTTP header name"),
                    ),
                }
            }
        }
        if let Some(files) = &raw.header_files {
            self.header_files(files, raw.headers.as_ref(), &mut o.headers);
        }
        if let Some(t) = raw.timeout {
            o.timeout = self.duration(DurationKey::Timeout, &t).unwrap_or(o.timeout);
        }
        if let Some(s) = raw.expect_status {
            Arc::make_mut(&mut o.expect).status = self.status_matchers(&s);
        }
        if let Some(j) = raw.expect_json {
            Arc::make_mut(&mut o.expect).json = self.json_expectations(&j);
        }
        if let Some(c) = raw.expect_body_contains {
            if c.get_ref().is_empty() {
                self.report(Some(&c.span()), "expect_body_contains must not be empty");
            }
            Arc::make_mut(&mut o.expect).body_contains = Some(c.into_inner());
        }
        if let Some(c) = raw.connection {
            match c.get_ref().as_str() {
                "reuse" => o.connection = ConnectionPolicy::Reuse,
                "fresh" => o.connection = ConnectionPolicy::Fresh,
                other => self.report(
                    Some(&c.span()),
                    format!("connection = {other:?} is not \"reuse\" or \"fresh\""),
                ),
            }
        }
        if let Some(r) = raw.resolver {
            match r.get_ref().as_str() {
                "async" => o.resolver = ResolverKind::Async,
                "system" => o.resolver = ResolverKind::System,
                other => self.report(
                    Some(&r.span()),
                    format!("resolver = {other:?} is not \"async\" or \"system\""),
                ),
            }
        }
        if let Some(b) = raw.max_body_bytes {
            match usize::try_from(*b.get_ref()) {
                Ok(n) if n > 0 && n <= MAX_BODY_BYTES_LIMIT => o.max_body_bytes = n,
                _ => self.report(
                    Some(&b.span()),
                    format!(
                        "max_body_bytes = {} must be between 1 and {MAX_BODY_BYTES_LIMIT}",
                        b.get_ref()
                    ),
                ),
            }
        }
        if let Some(r) = raw.expect_body_regex {
            match regex::bytes::Regex::new(r.get_ref()) {
                Ok(re) => Arc::make_mut(&mut o.expect).body_regex = Some(re),
                Err(e) => self.report(
                    Some(&r.span()),
                    format!("expect_body_regex is not a valid regular expression: {e}"),
                ),
            }
        }
        if let Some(h) = raw.expect_header {
            Arc::make_mut(&mut o.expect).headers = self.header_expectations(&h);
        }
        if let Some(l) = raw.max_latency {
            o.max_latency = self.duration(DurationKey::MaxLatency, &l).or(o.max_latency);
        }
        if let Some(b) = raw.body {
            o.body = Some(bytes::Bytes::from(b.into_inner()));
        }
        if let Some(f) = raw.follow_redirects {
            match u8::try_from(*f.get_ref()) {
                Ok(n) if n <= MAX_REDIRECTS => o.follow_redirects = n,
                _ => self.report(
                    Some(&f.span()),
                    format!(
                        "follow_redirects = {} must be between 0 and {MAX_REDIRECTS}",
                        f.get_ref()
                    ),
                ),
            }
        }
        if let Some(f) = raw.ip_family {
            match f.get_ref().as_str() {
                "any" => o.ip_family = IpFamily::Any,
                "ipv4" => o.ip_family = IpFamily::V4,
                "ipv6" => o.ip_family = IpFamily::V6,
                other => self.report(
                    Some(&f.span()),
                    format!("ip_family = {other:?} is not \"any\", \"ipv4\" or \"ipv6\""),
                ),
            }
        }
        if let Some(d) = raw.depends_on {
            o.depends_on = self.depends_on(&d);
        }
        if let Some(t) = raw.failure_threshold {
            o.failure_threshold = self
                .threshold("failure_threshold", &t)
                .unwrap_or(o.failure_threshold);
        }
        if let Some(t) = raw.success_threshold {
            o.success_threshold = self
                .threshold("success_threshold", &t)
                .unwrap_or(o.success_threshold);
        }
        if let Some(f) = raw.ca_file {
            let path = access::resolve(&self.base_dir, f.get_ref());
            o.tls.ca_file = Some((f, path));
        }
        if let Some(f) = raw.client_cert {
            let path = access::resolve(&self.base_dir, f.get_ref());
            o.tls.client_cert = Some((f, path));
        }
        if let Some(f) = raw.client_key {
            let path = access::resolve(&self.base_dir, f.get_ref());
            o.tls.client_key = Some((f, path));
        }
        if let Some(n) = raw.server_name {
            if rustls::pki_types::ServerName::try_from(n.get_ref().as_str()).is_err() {
                self.report(
                    Some(&n.span()),
                    format!(
                        "server_name {:?} is not a DNS name or IP address",
                        n.get_ref()
                    ),
                );
            }
            o.tls.server_name = Some(n.into_inner());
        }
        if let Some(i) = raw.insecure_skip_verify {
            o.tls.insecure_skip_verify = *i.get_ref();
        }
        if let Some(t) = raw.tls {
            o.tls.tcp_tls = *t.get_ref();
        }
        let dns = super::dns_check::RawDnsKeys {
            query: raw.dns_query.as_ref(),
            record: raw.dns_type.as_ref(),
            transport: raw.dns_transport.as_ref(),
            rcodes: raw.expect_rcode.as_ref(),
            answer: raw.expect_answer.as_ref(),
        };
        self.dns_options(dns, &mut o.dns);
        if let Some(g) = raw.grpc_service {
            o.grpc_service = Some(g.into_inner());
        }
        if let Some(i) = raw.interval {
            o.every = self.every(&i).unwrap_or(o.every);
        }
        o
    }

    /// A service's `interval` in sweeps: a whole multiple of `[daemon] interval` (so a check
    /// always falls on a sweep, and a sweep's deadline bounds it), at most
    /// [`super::MAX_SERVICE_INTERVAL`].
    fn every(&mut self, v: &Spanned<String>) -> Option<u32> {
        let d = self.duration(DurationKey::ServiceInterval, v)?;
        let sweep = self.sweep_interval;
        let n = d.as_nanos() / sweep.as_nanos().max(1);
        if d < sweep || d.as_nanos() % sweep.as_nanos().max(1) != 0 {
            let fmt = |d: Duration| humantime::format_duration(d).to_string();
            let below = sweep * (n.max(1) as u32);
            let above = sweep * (n as u32 + 1);
            let hint = if d < sweep {
                format!("{} or longer", fmt(sweep))
            } else {
                format!("{} or {}", fmt(below), fmt(above))
            };
            self.report(
                Some(&v.span()),
                format!(
                    "interval = {:?} must be a whole multiple of [daemon] interval ({}): {hint}",
                    v.get_ref(),
                    fmt(sweep),
                ),
            );
            return None;
        }
        u32::try_from(n).ok()
    }

    pub(super) fn threshold(&mut self, key: &str, v: &Spanned<i64>) -> Option<u32> {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Some(n),
            _ => {
                self.report(
                    Some(&v.span()),
                    format!(
                        "{key} = {} must be between 1 and {MAX_THRESHOLD}",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn header_expectations(
        &mut self,
        h: &Spanned<BTreeMap<String, RawHeaderMatch>>,
    ) -> Vec<(HeaderName, HeaderMatch)> {
        let mut out = Vec::new();
        for (name, want) in h.get_ref() {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                self.report(
                    Some(&h.span()),
                    format!("expect_header name {name:?} is not a valid HTTP header name"),
                );
                continue;
            };
            let matcher = match want {
                RawHeaderMatch::Exact(v) => HeaderMatch {
                    value: ValueMatch::Exact(v.clone()),
                    all: false,
                },
                RawHeaderMatch::Rule(rule) => match self.header_rule(&name, rule, &h.span()) {
                    Some(m) => m,
                    None => continue,
                },
            };
            out.push((name, matcher));
        }
        out
    }

    /// `{ value = ... | regex = ..., match = ... }` of `expect_header`.
    pub(super) fn header_rule(
        &mut self,
        name: &HeaderName,
        rule: &RawHeaderRule,
        span: &Range<usize>,
    ) -> Option<HeaderMatch> {
        let all = match rule.match_.as_deref() {
            None | Some("any") => false,
            Some("all") => true,
            Some(other) => {
                self.report(
                    Some(span),
                    format!("expect_header {name}: match = {other:?} is not \"any\" or \"all\""),
                );
                return None;
            }
        };
        let value = match (&rule.value, &rule.regex) {
            (Some(v), None) => ValueMatch::Exact(v.clone()),
            (None, Some(r)) => match regex::Regex::new(r) {
                Ok(re) => ValueMatch::Regex(re),
                Err(e) => {
                    self.report(
                        Some(span),
                        format!("expect_header {name}: not a valid regular expression: {e}"),
                    );
                    return None;
                }
            },
            _ => {
                self.report(
                    Some(span),
                    format!("expect_header {name}: give exactly one of value and regex"),
                );
                return None;
            }
        };
        Some(HeaderMatch { value, all })
    }

    pub(super) fn status_matchers(&mut self, s: &Spanned<Vec<RawStatus>>) -> Vec<StatusMatcher> {
        if s.get_ref().is_empty() {
            self.report(
                Some(&s.span()),
                "expect_status must list at least one code or class",
            );
        }
        let mut out = Vec::new();
        for entry in s.get_ref() {
            let parsed = match entry {
                RawStatus::Code(c) => u16::try_from(*c)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatcher::Code),
                RawStatus::Text(t) => parse_status_text(t),
            };
            match parsed {
                Some(m) => out.push(m),
                None => {
                    let shown = match entry {
                        RawStatus::Code(c) => c.to_string(),
                        RawStatus::Text(t) => format!("{t:?}"),
                    };
                    self.report(
                        Some(&s.span()),
                        format!("expect_status entry {shown} is not a status code (100-599) or class (\"1xx\"..\"5xx\")"),
                    );
                }
            }
        }
        out
    }

    pub(super) fn json_expectations(
        &mut self,
        j: &Spanned<BTreeMap<String, toml::Value>>,
    ) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        for (pointer, value) in j.get_ref() {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                self.report(
                    Some(&j.span()),
                    format!("expect_json key {pointer:?} is not a JSON pointer: it must start with '/' (e.g. \"/status\")"),
                );
                continue;
            }
            out.push((pointer.clone(), toml_to_json(value)));
        }
        out
    }
}

pub(super) fn parse_status_text(t: &str) -> Option<StatusMatcher> {
    let t = t.trim();
    if let Some(class) = t
        .strip_suffix("xx")
        .or_else(|| t.strip_suffix("XX"))
        .and_then(|d| d.parse::<u8>().ok())
    {
        return (1..=5)
            .contains(&class)
            .then_some(StatusMatcher::Class(class));
    }
    t.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .map(StatusMatcher::Code)
}

/// TOML values as the JSON values a response body would hold (datetimes as their text).
pub(super) fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn defaults_apply_unless_a_service_overrides_them() {
        let c = parse_str(
            r#"
            [daemon]
            deadline = "3s"
            [defaults]
            timeout = "2s"
            expect_status = ["2xx", 304]
            headers = { "X-Probe" = "healthsweep", "X-Team" = "all" }
            [[service]]
            name = "a"
            url = "http://127.0.0.1:8000/health"
            [[service]]
            name = "b"
            url = "https://example.test/h?x=1"
            timeout = "1s"
            expect_status = [200]
            headers = { "X-Team" = "b" }
            method = "head"
            "#,
        )
        .expect("valid");
        let a = &c.services[0];
        assert_eq!(a.timeout, Duration::from_secs(2));
        assert_eq!(
            a.expect.status,
            vec![StatusMatcher::Class(2), StatusMatcher::Code(304)]
        );
        assert_eq!(a.method, Method::GET);
        assert_eq!(a.header("x-team").expect("header set"), "all");
        assert_eq!(a.target.port, 8000);
        assert_eq!(a.target.ip, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(a.target.authority, "127.0.0.1:8000");
        let b = &c.services[1];
        assert_eq!(b.timeout, Duration::from_secs(1));
        assert_eq!(b.expect.status, vec![StatusMatcher::Code(200)]);
        assert_eq!(b.method, Method::HEAD);
        assert_eq!(b.header("x-team").expect("header set"), "b");
        assert_eq!(b.header("x-probe").expect("header set"), "healthsweep");
        assert!(b.target.tls);
        assert_eq!(b.target.port, 443);
        assert_eq!(b.target.ip, None);
        assert_eq!(b.target.authority, "example.test");
        assert_eq!(b.target.path_and_query, "/h?x=1");
    }

    #[test]
    fn timeout_defaults_to_the_deadline() {
        let c = parse_str(
            r#"
            [daemon]
            deadline = "3s"
            [[service]]
            name = "a"
            url = "http://127.0.0.1:8000/health"
            "#,
        )
        .expect("valid");
        assert_eq!(c.services[0].timeout, Duration::from_secs(3));
    }

    #[test]
    fn expect_json_values_keep_their_types() {
        let c = parse_str(
            r#"
            [[service]]
            name = "a"
            url = "http://127.0.0.1/"
            expect_json = { "/status" = "ok", "/checks/db" = true, "/version" = 3, "" = { status = "ok" } }
            "#,
        )
        .expect("valid");
        let j = &c.services[0].expect.json;
        assert!(j.contains(&("/status".into(), serde_json::json!("ok"))));
        assert!(j.contains(&("/checks/db".into(), serde_json::json!(true))));
        assert!(j.contains(&("/version".into(), serde_json::json!(3))));
        assert!(j.contains(&("".into(), serde_json::json!({"status": "ok"}))));
    }

    #[test]
    fn status_matchers_accept_codes_classes_and_numeric_strings() {
        assert_eq!(parse_status_text("2xx"), Some(StatusMatcher::Class(2)));
        assert_eq!(parse_status_text("204"), Some(StatusMatcher::Code(204)));
        assert_eq!(parse_status_text("6xx"), None);
        assert_eq!(parse_status_text("abc"), None);
        assert!(StatusMatcher::Class(2).matches(204));
        assert!(!StatusMatcher::Class(2).matches(301));
    }

    #[test]
    fn probe_options_have_safe_defaults_and_parse() {
        let c = parse_str(
            r#"
            [defaults]
            failure_threshold = 3
            [[service]]
            name = "plain"
            url = "http://127.0.0.1:8000/health"
            [[service]]
            name = "tuned"
            url = "https://10.0.0.1/health"
            follow_redirects = 2
            ip_family = "ipv4"
            max_latency = "250ms"
            success_threshold = 2
            body = "ping"
            method = "POST"
            expect_body_regex = "ok"
            expect_header = { "Content-Type" = "application/json" }
            [[service]]
            name = "db"
            url = "tcp://127.0.0.1:5432"
            "#,
        )
        .expect("valid");
        let plain = &c.services[0];
        assert_eq!(plain.kind, ProbeKind::Http);
        assert_eq!(plain.follow_redirects, 0);
        assert_eq!(plain.ip_family, IpFamily::Any);
        assert_eq!(plain.extra.max_latency, None);
        assert_eq!((plain.failure_threshold, plain.success_threshold), (3, 1));
        assert!(plain.tls.is_none() && plain.extra.body.is_none());
        let tuned = &c.services[1];
        assert_eq!(tuned.follow_redirects, 2);
        assert_eq!(tuned.ip_family, IpFamily::V4);
        assert_eq!(tuned.extra.max_latency, Some(Duration::from_millis(250)));
        assert_eq!(tuned.success_threshold, 2);
        assert_eq!(tuned.extra.body.as_deref(), Some(&b"ping"[..]));
        assert!(tuned.expect.needs_body());
        assert_eq!(tuned.expect.headers.len(), 1);
        let db = &c.services[2];
        assert_eq!(db.kind, ProbeKind::Tcp);
        assert_eq!(db.target.port, 5432);
        assert_eq!(db.target.ip, Some("127.0.0.1".parse().expect("ip")));
        assert!(!db.target.tls);
    }

    #[test]
    fn a_service_interval_is_a_whole_number_of_sweeps_and_spreads_by_name() {
        let c = parse_str(
            r#"
            [daemon]
            interval = "15s"
            [defaults]
            interval = "1m"
            [[service]]
            name = "often"
            url = "http://127.0.0.1:1/"
            interval = "15s"
            [[service]]
            name = "default"
            url = "http://127.0.0.1:2/"
            [[service]]
            name = "rare"
            url = "http://127.0.0.1:3/"
            interval = "1h"
            "#,
        )
        .expect("valid");
        let every: Vec<u32> = c.services.iter().map(|s| s.every).collect();
        assert_eq!(every, [1, 4, 240]);
        assert_eq!(c.services[0].phase, 0);
        for s in &c.services {
            assert!(
                s.phase < s.every,
                "{}: phase {} of {}",
                s.name,
                s.phase,
                s.every
            );
            let due = (0..u64::from(s.every)).filter(|&k| s.due_in(k)).count();
            assert_eq!(due, 1, "{}: once per cycle", s.name);
        }
        // The next turn after any slot is the first slot after it that is due.
        let rare = &c.services[2];
        for slot in [0, 1, 239, 240, 1_000_003] {
            let next = rare.next_due_after(slot);
            assert!(
                next > slot && next <= slot + 240 && rare.due_in(next),
                "{slot} -> {next}"
            );
            assert!((slot + 1..next).all(|k| !rare.due_in(k)));
        }
        // Undue intervals, each with a message naming the fix.
        for (value, message) in [
            (
                "20s",
                "interval = \"20s\" must be a whole multiple of [daemon] interval (15s): 15s or 30s",
            ),
            (
                "5s",
                "interval = \"5s\" must be a whole multiple of [daemon] interval (15s): 15s or longer",
            ),
            ("2h", "interval = \"2h\" must be between"),
            ("0s", "interval must be greater than zero"),
            ("often", "interval = \"often\""),
        ] {
            let p = problems(&format!(
                "[[service]]\nname = \"x\"\nurl = \"http://127.0.0.1:1/\"\ninterval = \"{value}\"\n"
            ));
            assert_eq!(p.len(), 1, "{value}: {p:?}");
            let text = p[0].to_string();
            assert!(text.contains(message), "{value}: {text}");
            assert!(text.contains("line 4"), "{value}: {text}");
        }
    }

    #[test]
    fn services_of_one_interval_share_its_sweeps_evenly() {
        let mut src = String::from("[daemon]\ninterval = \"15s\"\n[defaults]\ninterval = \"5m\"\n");
        for i in 0..10_000 {
            src.push_str(&format!(
                "[[service]]\nname = \"svc-{i}\"\nurl = \"http://127.0.0.1:1/{i}\"\n"
            ));
        }
        let c = parse_str(&src).expect("valid");
        let mut per_sweep = [0u32; 20];
        for s in &c.services {
            assert_eq!(s.every, 20);
            per_sweep[s.phase as usize] += 1;
        }
        // 500 each on average; a hash spreads them within a few standard deviations (~22).
        for (k, n) in per_sweep.iter().enumerate() {
            assert!(
                (420..=580).contains(n),
                "sweep {k} of 20 carries {n}: {per_sweep:?}"
            );
        }
    }
}
