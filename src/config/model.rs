//! The validated configuration: what a [`Config`] holds once loaded. Plain data; a `Config`
//! that exists is valid (see [`super::load`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};

use super::{Auth, Discover, Protected, ServerTls, Sources, TlsClient};
use crate::shard::Shard;

/// Where the daemon listens unless told otherwise: loopback, so exposing it is a choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9915";
/// How often a sweep starts.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How long a sweep may take: the budget the whole fleet must be checked in.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// How much of a response body is read at most. Health bodies are small; a service that streams
/// more must not cost memory or time.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Connection policy unless configured (chosen by the benchmark; see docs/performance.md).
pub const DEFAULT_CONNECTION: ConnectionPolicy = ConnectionPolicy::Reuse;
/// Resolver unless configured (chosen by the benchmark; see docs/performance.md).
pub const DEFAULT_RESOLVER: ResolverKind = ResolverKind::Async;
/// A validated configuration. Immutable once built; a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: Daemon,
    /// This replica's services (all of them unless sharded), in file order. Names are unique.
    pub services: Vec<Arc<Service>>,
    /// How many services the file lists, across all shards.
    pub fleet_size: usize,
    /// The files the services came from (the main file, and those of `services_dir`).
    pub sources: Sources,
    /// `[[discover]]` blocks: where more services come from while the daemon runs.
    pub discover: Vec<Arc<Discover>>,
    /// `[[maintenance]]`: scheduled maintenance windows.
    pub maintenance: Vec<Arc<super::Maintenance>>,
}

/// What the command line overrides in the file; applied at start-up and at every reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `run --shard`: wins over `[daemon] shard`.
    pub shard: Option<Shard>,
}

/// A config as published to the rest of the daemon: the config and its generation, which
/// counts successful loads (1 for the config read at start-up).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub generation: u64,
    pub config: Arc<Config>,
}

/// `[daemon]`: how the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Address of the HTTP server (`/metrics`, `/status`, ...). Changes need a restart.
    pub listen: SocketAddr,
    /// A sweep starts every `interval`, on a fixed schedule.
    pub interval: Duration,
    /// Every sweep is over by its start + `deadline`. Never more than `interval`.
    pub deadline: Duration,
    /// Checks in flight at once; `None` derives it from the open-file limit.
    pub max_in_flight: Option<NonZeroUsize>,
    /// Whether `POST /-/reload` is served without a token (see [`Daemon::reload_enabled`]).
    pub reload_api: bool,
    /// Which share of the services this replica checks ([`Shard::WHOLE`] unless sharded).
    pub shard: Shard,
    /// `[daemon.auth]`: the bearer token and what it protects.
    pub auth: Option<Auth>,
    /// `[daemon.tls]`: serve over TLS with this certificate. Turning TLS on or off needs a
    /// restart; a new certificate is picked up by a reload.
    pub tls: Option<ServerTls>,
    /// `state_dir`: where the state store keeps its database (`None`: memory only, unless
    /// systemd gives a `STATE_DIRECTORY`). Changes need a restart.
    pub state_dir: Option<std::path::PathBuf>,
    /// How long the history of a removed service, and events, are kept.
    pub history_retention: Duration,
}

impl Daemon {
    /// Whether `POST /-/reload` is served: when the operator turned it on (`reload_api`), or
    /// when a token guards it. Never by default: an open reload endpoint lets anyone who can
    /// reach the port make the daemon re-read its files.
    pub fn reload_enabled(&self) -> bool {
        self.reload_api
            || self
                .auth
                .as_ref()
                .is_some_and(|a| a.protects(Protected::Reload))
    }
}

/// `history_retention` unless the config says.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(30 * 86_400);

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a valid address"),
            interval: DEFAULT_INTERVAL,
            deadline: DEFAULT_DEADLINE,
            max_in_flight: None,
            reload_api: false,
            shard: Shard::WHOLE,
            auth: None,
            tls: None,
            state_dir: None,
            history_retention: DEFAULT_HISTORY_RETENTION,
        }
    }
}

/// One downstream service and how to check it.
#[derive(Debug, Clone)]
pub struct Service {
    /// Unique name; the `target` label and the key in `/status/{name}`.
    pub name: String,
    /// Extra metric labels (names validated, reserved ones rejected). Shared: the targets of
    /// one discovered group carry the same map.
    pub labels: Arc<BTreeMap<String, String>>,
    /// `target`, `group` and `labels` as exposition text (see [`crate::labels::series_labels`]).
    pub series_labels: Box<str>,
    /// The URL (normalized). May hold credentials: display [`Service::redacted_url`] instead.
    pub url: Box<str>,
    /// The connection target derived from `url`.
    pub target: Target,
    pub method: Method,
    /// The check's own time limit; the sweep deadline may cut it shorter.
    pub timeout: Duration,
    /// Body bytes read at most.
    pub max_body_bytes: usize,
    /// Keep the connection for the next sweep, or open a new one every check.
    pub connection: ConnectionPolicy,
    /// How the host name is resolved.
    pub resolver: ResolverKind,
    /// Shared by every service that takes its expectations from `[defaults]`.
    pub expect: Arc<Expect>,
    /// What kind of check: an HTTP request, or only a TCP (or TLS) connection.
    pub kind: ProbeKind,
    /// The TLS client for `https://` and `tcp://` with `tls = true` (system roots unless
    /// `ca_file`, client certificate, `insecure_skip_verify` say otherwise); `None` without TLS.
    pub tls: Option<Arc<TlsClient>>,
    /// Redirects followed at most; 0 evaluates the redirect response itself.
    pub follow_redirects: u8,
    /// Which addresses of the host are tried.
    pub ip_family: IpFamily,
    /// Failed checks in a row before an up service is down.
    pub failure_threshold: u32,
    /// Passed checks in a row before a down service is up.
    pub success_threshold: u32,
    /// `interval` in sweeps: the service is checked in every `every`th sweep (1: every sweep).
    pub every: u32,
    /// Which of the `every` sweeps: `xxh64(name) % every`, so the services of one interval
    /// share their sweeps evenly, and each keeps its place across reloads and restarts.
    pub phase: u32,
    /// A digest of everything that decides how the service is checked (see
    /// `Service::check_key`): a sweep that straddles a reload lands its results only on
    /// services still checked the same way.
    pub check_digest: u64,
    /// What its validation depended on, for a reload to take this service as it is when none
    /// of that changed (see `config::reuse`); 0 when it may not be reused.
    pub reuse_key: u64,
    /// What few services set (see [`Extra`]).
    pub extra: Arc<Extra>,
}

/// The parts of a [`Service`] most services leave unset, in one allocation shared by every
/// service that sets none of them: inline they were 168 of a service's 456 bytes, 16 MiB at
/// 100,000 services, and twice that while a reload holds two configs.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub group: Option<String>,
    /// The `[[discover]]` block that found it; `None` for a service of the config files.
    pub source: Option<Arc<str>>,
    /// The URL with its user info replaced, when it has any.
    pub(super) redacted: Option<Box<str>>,
    /// Request headers, including `Authorization` when the URL carries credentials. A slice,
    /// not a `HeaderMap`: most services set none, and a fleet has many services.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// The TLS server name (SNI, and the name the certificate must carry) when it differs from
    /// the URL's host.
    pub server_name: Option<Box<str>>,
    /// A passing check slower than this is `degraded`.
    pub max_latency: Option<Duration>,
    /// The request body (sent with `Content-Length`).
    pub body: Option<bytes::Bytes>,
    /// For `dns://`: the query and what its answer must be.
    pub dns: Option<Arc<super::DnsCheck>>,
    /// For `grpc://`: the service the health check asks about (`""`: the server as a whole).
    pub grpc_service: Option<Box<str>>,
    /// `depends_on`: the services whose failure this one's follows from (names checked at
    /// load: they exist, and no chain of them comes back to where it started).
    pub depends_on: Option<Arc<DependsOn>>,
}

impl Extra {
    /// `extra` behind an `Arc`: the one shared empty value when nothing is set.
    pub fn shared(extra: Extra) -> Arc<Extra> {
        static NONE: std::sync::LazyLock<Arc<Extra>> =
            std::sync::LazyLock::new(|| Arc::new(Extra::default()));
        let Extra {
            group,
            source,
            redacted,
            headers,
            server_name,
            max_latency,
            body,
            dns,
            grpc_service,
            depends_on,
        } = &extra;
        let empty = group.is_none()
            && source.is_none()
            && redacted.is_none()
            && headers.is_empty()
            && server_name.is_none()
            && max_latency.is_none()
            && body.is_none()
            && dns.is_none()
            && grpc_service.is_none()
            && depends_on.is_none();
        if empty { NONE.clone() } else { Arc::new(extra) }
    }
}

/// A `depends_on` list, and where it was written (for errors found once every service is
/// known).
#[derive(Debug, PartialEq, Eq)]
pub struct DependsOn {
    pub names: Box<[Box<str>]>,
    pub(super) file: usize,
    pub(super) span: std::ops::Range<usize>,
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `http://` and `https://`: a request, and the response checked against the expectations.
    Http,
    /// `tcp://host:port`: a connection (and a TLS handshake with `tls = true`), nothing sent.
    Tcp,
    /// `dns://server:port`: a query to that server, its answer checked.
    Dns,
    /// `grpc://host:port` (`grpcs://` over TLS): the standard health check,
    /// `grpc.health.v1.Health/Check`.
    Grpc,
}

/// Which of a host's addresses a check may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// Every address, each tried in turn until one connects.
    Any,
    V4,
    V6,
}

impl IpFamily {
    /// Whether `addr` is of this family.
    pub fn allows(self, addr: &IpAddr) -> bool {
        match self {
            IpFamily::Any => true,
            IpFamily::V4 => addr.is_ipv4(),
            IpFamily::V6 => addr.is_ipv6(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Any => "any",
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }
}

/// Which resolver a check uses for its host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolverKind {
    /// hickory: asynchronous, cancelled with the check, answers cached for their TTL.
    Async,
    /// getaddrinfo on a blocking thread: honours nsswitch (LDAP, mDNS, ...), but a hanging DNS
    /// server holds a thread after the check is gone.
    System,
}

impl ResolverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolverKind::Async => "async",
            ResolverKind::System => "system",
        }
    }
}

/// Whether a check reuses the connection of the previous check of the same service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionPolicy {
    /// Keep the connection open between sweeps (HTTP keep-alive) and use it again: cheaper for
    /// both sides, and it measures the service rather than the TCP handshake.
    Reuse,
    /// A new connection for every check, closed after it (blackbox_exporter's way): each check
    /// also proves the service still accepts connections.
    Fresh,
}

impl ConnectionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionPolicy::Reuse => "reuse",
            ConnectionPolicy::Fresh => "fresh",
        }
    }
}

impl Service {
    /// Whether the service is checked in the sweep of `slot` (see `sweep::Slot`).
    pub fn due_in(&self, slot: u64) -> bool {
        self.every <= 1 || slot % u64::from(self.every) == u64::from(self.phase)
    }

    /// The first slot after `slot` in which the service is due.
    pub fn next_due_after(&self, slot: u64) -> u64 {
        let every = u64::from(self.every.max(1));
        let next = slot.saturating_add(1);
        next + (u64::from(self.phase) + every - next % every) % every
    }

    /// The URL with its user info (user name and password) replaced, safe for `/status`, logs
    /// and errors.
    pub fn redacted_url(&self) -> &str {
        self.extra.redacted.as_deref().unwrap_or(&self.url)
    }

    /// The configured value of request header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.extra
            .headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether request header `name` is configured.
    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.extra.headers.iter().any(|(n, _)| n == name)
    }

    /// Whether `other` checks the same endpoint, so state and counters may carry over a reload.
    /// A service renamed or pointed elsewhere starts afresh as `unknown`.
    pub fn same_target(&self, other: &Service) -> bool {
        let asked = |s: &Service| s.extra.dns.as_ref().map(|d| (d.query.clone(), d.record));
        self.name == other.name
            && self.url == other.url
            && self.method == other.method
            && self.extra.grpc_service == other.extra.grpc_service
            && asked(self) == asked(other)
    }

    /// Whether a result of checking `other` is a result of checking this service: the same
    /// target, checked the same way (headers, expectations, TLS trust and identity, timeouts,
    /// ...). A sweep that started before a reload made a service stricter must not land a pass
    /// made under the old settings.
    pub fn same_check(&self, other: &Service) -> bool {
        self.same_target(other) && self.check_digest == other.check_digest
    }

    /// The digest of how this service is checked, for [`Service::same_check`]. Formatted
    /// parts go straight into the hasher (no `String` per part: a 100,000-service reload
    /// made several per service), each part ended by a byte UTF-8 text never holds.
    pub(super) fn check_key(&self) -> u64 {
        use std::fmt::Write as _;
        use std::hash::{Hash, Hasher};
        let mut h = Digest(xxhash_rust::xxh64::Xxh64::new(0));
        let e = &self.expect;
        h.put(self.url.as_bytes());
        h.put(self.method.as_str().as_bytes());
        for (n, v) in self.extra.headers.iter() {
            h.put(n.as_str().as_bytes());
            h.put(v.as_bytes());
        }
        let _ = write!(h, "{:?}", e.status);
        h.end();
        for (p, v) in &e.json {
            h.put(p.as_bytes());
            let _ = write!(h, "{v}");
            h.end();
        }
        h.put(e.body_contains.as_deref().unwrap_or("\0").as_bytes());
        h.put(
            e.body_regex
                .as_ref()
                .map_or("\0", |r| r.as_str())
                .as_bytes(),
        );
        for (n, m) in &e.headers {
            h.put(n.as_str().as_bytes());
            let _ = write!(h, "{m}");
            h.end();
        }
        if let Some(tls) = &self.tls {
            h.put(&tls.fingerprint);
        }
        h.put(self.extra.server_name.as_deref().unwrap_or("\0").as_bytes());
        h.put(self.extra.body.as_deref().unwrap_or(b"\0"));
        let _ = write!(
            h,
            "{:?}{}{}{:?}{:?}{}{:?}{:?}{}{}",
            self.timeout,
            self.max_body_bytes,
            self.connection.as_str(),
            self.resolver,
            self.kind,
            self.follow_redirects,
            self.ip_family,
            self.extra.max_latency,
            self.failure_threshold,
            self.success_threshold,
        );
        h.end();
        if let Some(d) = &self.extra.dns {
            h.put(d.key().as_bytes());
        }
        if let Some(g) = &self.extra.grpc_service {
            h.put(b"grpc");
            h.put(g.as_bytes());
        }
        self.target.tls.hash(&mut h.0);
        h.0.finish()
    }
}

/// The hasher behind [`Service::check_key`]: bytes with their length, or text written into it
/// and ended by [`Digest::end`].
struct Digest(xxhash_rust::xxh64::Xxh64);

impl Digest {
    fn put(&mut self, bytes: &[u8]) {
        use std::hash::Hasher;
        self.0.write_usize(bytes.len());
        self.0.write(bytes);
    }

    /// Ends a written part: 0xFF never occurs in UTF-8, so parts cannot run into each other.
    fn end(&mut self) {
        use std::hash::Hasher;
        self.0.write_u8(0xff);
    }
}

impl std::fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::hash::Hasher;
        self.0.write(s.as_bytes());
        Ok(())
    }
}

/// Where a check connects to, worked out once at load time instead of on every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`: wrap the connection in TLS.
    pub tls: bool,
    /// Host name or IP literal as written (IPv6 without brackets); also the TLS server name.
    pub host: String,
    /// Set when the host is an IP literal, so no name resolution is needed.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The `Host` header value (`host[:port]`).
    pub authority: HeaderValue,
    /// Path and query, as sent on the request line.
    pub path_and_query: http::uri::PathAndQuery,
}

/// What a response must satisfy for the check to pass.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Accepted status codes; the check passes if any matcher accepts.
    pub status: Vec<StatusMatcher>,
    /// JSON pointer -> expected value; all must hold.
    pub json: Vec<(String, serde_json::Value)>,
    /// A substring the body must contain.
    pub body_contains: Option<String>,
    /// A pattern the body must match.
    pub body_regex: Option<regex::bytes::Regex>,
    /// Response headers that must be present with a matching value; all must hold.
    pub headers: Vec<(HeaderName, HeaderMatch)>,
}

/// What an expected response header's values must be. A header may come several times
/// (`Set-Cookie`): with `all` false (the default) one of its values must match, whatever order
/// the server sends them in; with `all` every one must.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub value: ValueMatch,
    pub all: bool,
}

/// One value's condition: equal to a text, or matching a pattern.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(want) => value == want,
            ValueMatch::Regex(re) => re.is_match(value),
        }
    }
}

impl HeaderMatch {
    /// Whether the header's `values` (every occurrence, in order) satisfy the condition; a
    /// header that is absent never does.
    pub fn holds(&self, values: &[String]) -> bool {
        if self.all {
            !values.is_empty() && values.iter().all(|v| self.value.matches(v))
        } else {
            values.iter().any(|v| self.value.matches(v))
        }
    }
}

impl std::fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.all {
            f.write_str("every value ")?;
        }
        match &self.value {
            ValueMatch::Exact(v) => write!(f, "{v:?}"),
            ValueMatch::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

impl Expect {
    /// Whether the body has to be read at all; when not, it is never read.
    pub fn needs_body(&self) -> bool {
        !self.json.is_empty() || self.body_contains.is_some() || self.body_regex.is_some()
    }

    /// Whether status code `status` is accepted.
    pub fn status_ok_code(&self, status: u16) -> bool {
        self.status.iter().any(|m| m.matches(status))
    }
}

/// One accepted status: an exact code or a whole class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatcher {
    Code(u16),
    /// The hundreds digit: `2` for `2xx`.
    Class(u8),
}

impl StatusMatcher {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatcher::Code(c) => status == c,
            StatusMatcher::Class(c) => status / 100 == u16::from(c),
        }
    }
}

/// As written in the config: `200` or `2xx`.
impl std::fmt::Display for StatusMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusMatcher::Code(c) => write!(f, "{c}"),
            StatusMatcher::Class(c) => write!(f, "{c}xx"),
        }
    }
}

#[cfg(test)]
mod tests {

    use crate::config::test_support::*;

    #[test]
    fn the_grpc_service_and_the_dns_question_are_part_of_the_target() {
        let one = |keys: &str| {
            let src = format!("[[service]]\nname = \"a\"\n{keys}\n");
            parse_str(&src).expect("valid").services[0].clone()
        };
        let g1 = one("url = \"grpc://127.0.0.1:50051\"\ngrpc_service = \"x\"");
        let g2 = one("url = \"grpc://127.0.0.1:50051\"\ngrpc_service = \"y\"");
        assert!(
            !g1.same_target(&g2),
            "another gRPC service is another target"
        );
        assert!(g1.same_target(&g1.clone()));
        let d1 = one("url = \"dns://127.0.0.1\"\ndns_query = \"a.test\"");
        let d2 = one("url = \"dns://127.0.0.1\"\ndns_query = \"a.test\"\ndns_type = \"AAAA\"");
        let d3 = one("url = \"dns://127.0.0.1\"\ndns_query = \"a.test\"\ntimeout = \"1s\"");
        assert!(!d1.same_target(&d2), "another question is another target");
        assert!(
            d1.same_target(&d3),
            "a timeout is how, not what, is checked"
        );
    }

    #[test]
    fn same_target_means_same_name_url_and_method() {
        let c = parse_str(
            r#"
            [[service]]
            name = "a"
            url = "http://127.0.0.1/"
            [[service]]
            name = "b"
            url = "http://127.0.0.1/"
            "#,
        )
        .expect("valid");
        let d = parse_str(
            r#"
            [[service]]
            name = "a"
            url = "http://127.0.0.1/"
            timeout = "1s"
            [[service]]
            name = "b"
            url = "http://127.0.0.2/"
            "#,
        )
        .expect("valid");
        assert!(c.services[0].same_target(&d.services[0]));
        assert!(!c.services[1].same_target(&d.services[1]));
    }
}
