//! The daemon's configuration: the TOML file, parsed strictly and validated into a [`Config`].
//!
//! Parse, don't validate: a [`Config`] that exists is valid. [`load`] reads a file, rejects unknown
//! keys and wrong types (via serde), then checks every value and collects *all* problems, each
//! with its line and service, so one `healthsweep validate` run lists everything to fix.
//!
//! Services come from the main file and, with `[daemon] services_dir`, from every `*.toml` file
//! of a directory (`files`); header values and URL passwords may come from the environment or
//! from files (`secrets`). All of them are read again at every load.
//!
//! Sharding is applied last: the whole file is validated (so every replica of a sharded fleet
//! rejects the same bad file), then only the services of this replica's [`Shard`] are kept.

mod access;
mod error;
mod files;
mod raw;
pub(crate) mod read;
mod secrets;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use toml::Spanned;
use url::Url;

pub use access::{Auth, MIN_TOKEN_LEN, Protected, ServerTls, Token};
use error::LineIndex;
pub use error::{ConfigError, Location, Problem};
pub use files::{SourceFile, Sources};
use raw::{
    RawAuth, RawCheck, RawConfig, RawDaemon, RawHeaderMatch, RawHeaderRule, RawIdentity, RawStatus,
    RawTls,
};
use secrets::{Env, process_env};
pub use tls::{Fingerprint, HTTP_ALPN, TlsClient, TlsOptions, build as tls_build};

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
/// Most redirects a check may follow.
const MAX_REDIRECTS: u8 = 20;
/// Largest failure/success threshold: beyond this a state would take hours to change.
const MAX_THRESHOLD: u32 = 100;
/// Upper bound for `max_body_bytes`, so a typo cannot make every check buffer gigabytes.
const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Upper bound for `max_in_flight`: far above any open-file limit, catches typos.
const MAX_IN_FLIGHT_LIMIT: i64 = 1_000_000;
/// Service names end up in URLs, label values and log lines; keep them reasonable.
const MAX_NAME_LEN: usize = 200;

/// Shortest sweep interval. Below it a daemon would spend its CPU sweeping (`"1ns"` ran 221,003
/// sweeps in 3 s at 75 % CPU) and a fleet could not be checked before the next sweep anyway.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest sweep interval: a day. Longer is a typo (and overflowed the clock before it was
/// bounded: `"300000000000y"` panicked the sweeper).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest check `timeout` and `max_latency`: an hour; every check is cut by the sweep
/// deadline anyway, so anything longer only hides a typo.
pub const MAX_CHECK_DURATION: Duration = Duration::from_secs(3600);

/// The duration keys, each with its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurationKey {
    Interval,
    Deadline,
    Timeout,
    MaxLatency,
}

impl DurationKey {
    fn name(self) -> &'static str {
        match self {
            DurationKey::Interval => "interval",
            DurationKey::Deadline => "deadline",
            DurationKey::Timeout => "timeout",
            DurationKey::MaxLatency => "max_latency",
        }
    }

    /// The shortest and longest value accepted.
    fn bounds(self) -> (Duration, Duration) {
        match self {
            DurationKey::Interval => (MIN_INTERVAL, MAX_INTERVAL),
            DurationKey::Deadline => (Duration::from_millis(1), MAX_INTERVAL),
            DurationKey::Timeout | DurationKey::MaxLatency => {
                (Duration::from_millis(1), MAX_CHECK_DURATION)
            }
        }
    }

    fn why(self) -> &'static str {
        match self {
            DurationKey::Interval => " (shorter would spend the CPU on sweeping)",
            DurationKey::Deadline => " (and at most the interval)",
            DurationKey::Timeout | DurationKey::MaxLatency => {
                " (a check is cut by the sweep deadline anyway)"
            }
        }
    }
}

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
        }
    }
}

/// One downstream service and how to check it.
#[derive(Debug, Clone)]
pub struct Service {
    /// Unique name; the `target` label and the key in `/status/{name}`.
    pub name: String,
    pub group: Option<String>,
    /// Extra metric labels (names validated, reserved ones rejected).
    pub labels: BTreeMap<String, String>,
    /// `target`, `group` and `labels` as exposition text (see [`crate::labels::series_labels`]).
    pub series_labels: Box<str>,
    /// The URL (normalized). May hold credentials: display [`Service::redacted_url`] instead.
    pub url: Box<str>,
    /// The URL with its user info replaced, when it has any.
    redacted: Option<Box<str>>,
    /// The connection target derived from `url`.
    pub target: Target,
    pub method: Method,
    /// Request headers, including `Authorization` when the URL carries credentials. A slice,
    /// not a `HeaderMap`: most services set none, and a fleet has many services.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
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
    /// The TLS server name (SNI, and the name the certificate must carry) when it differs from
    /// the URL's host.
    pub server_name: Option<Box<str>>,
    /// Redirects followed at most; 0 evaluates the redirect response itself.
    pub follow_redirects: u8,
    /// Which addresses of the host are tried.
    pub ip_family: IpFamily,
    /// A passing check slower than this is `degraded`.
    pub max_latency: Option<Duration>,
    /// The request body (sent with `Content-Length`).
    pub body: Option<bytes::Bytes>,
    /// Failed checks in a row before an up service is down.
    pub failure_threshold: u32,
    /// Passed checks in a row before a down service is up.
    pub success_threshold: u32,
    /// A digest of everything that decides how the service is checked (see
    /// [`Service::check_key`]): a sweep that straddles a reload lands its results only on
    /// services still checked the same way.
    pub check_digest: u64,
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `http://` and `https://`: a request, and the response checked against the expectations.
    Http,
    /// `tcp://host:port`: a connection (and a TLS handshake with `tls = true`), nothing sent.
    Tcp,
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
    /// The URL with its user info (user name and password) replaced, safe for `/status`, logs
    /// and errors.
    pub fn redacted_url(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.url)
    }

    /// The configured value of request header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether request header `name` is configured.
    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    /// Whether `other` checks the same endpoint, so state and counters may carry over a reload.
    /// A service renamed or pointed elsewhere starts afresh as `unknown`.
    pub fn same_target(&self, other: &Service) -> bool {
        self.name == other.name && self.url == other.url && self.method == other.method
    }

    /// Whether a result of checking `other` is a result of checking this service: the same
    /// target, checked the same way (headers, expectations, TLS trust and identity, timeouts,
    /// ...). A sweep that started before a reload made a service stricter must not land a pass
    /// made under the old settings.
    pub fn same_check(&self, other: &Service) -> bool {
        self.same_target(other) && self.check_digest == other.check_digest
    }

    /// The digest of how this service is checked, for [`Service::same_check`].
    fn check_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        let mut put = |bytes: &[u8]| {
            h.write_usize(bytes.len());
            h.write(bytes);
        };
        put(self.url.as_bytes());
        put(self.method.as_str().as_bytes());
        for (n, v) in self.headers.iter() {
            put(n.as_str().as_bytes());
            put(v.as_bytes());
        }
        let e = &self.expect;
        put(format!("{:?}", e.status).as_bytes());
        for (p, v) in &e.json {
            put(p.as_bytes());
            put(v.to_string().as_bytes());
        }
        put(e.body_contains.as_deref().unwrap_or("\0").as_bytes());
        put(e
            .body_regex
            .as_ref()
            .map_or("\0", |r| r.as_str())
            .as_bytes());
        for (n, m) in &e.headers {
            put(n.as_str().as_bytes());
            put(m.to_string().as_bytes());
        }
        if let Some(tls) = &self.tls {
            put(&tls.fingerprint);
        }
        put(self.server_name.as_deref().unwrap_or("\0").as_bytes());
        put(self.body.as_deref().unwrap_or(b"\0"));
        put(format!(
            "{:?}{}{}{:?}{:?}{}{:?}{:?}{}{}",
            self.timeout,
            self.max_body_bytes,
            self.connection.as_str(),
            self.resolver,
            self.kind,
            self.follow_redirects,
            self.ip_family,
            self.max_latency,
            self.failure_threshold,
            self.success_threshold,
        )
        .as_bytes());
        self.target.tls.hash(&mut h);
        h.finish()
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

/// Reads, parses and validates the config file at `path`.
///
/// A file with nothing in it (only whitespace and comments) is refused, although [`parse`]
/// accepts empty text: an empty config *file* is a file caught between truncate and write (a
/// reload racing an editor or config management), and taking it would silently drop every
/// service. The running config stays instead.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, Overrides::default())
}

/// [`load`], with command-line `overrides` applied.
pub fn load_with(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    let source =
        read::read_text(path, read::Limit::Config).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if is_blank(&source) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                file: None,
                location: None,
                service: None,
                message: "the file is empty (only whitespace or comments); a file caught \
                          mid-write is not a config"
                    .into(),
            }],
        });
    }
    parse_with(path, &source, overrides)
}

/// Whether `source` holds no TOML at all.
fn is_blank(source: &str) -> bool {
    source.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Parses and validates `source`; `path` is only used in error messages.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    parse_with(path, source, Overrides::default())
}

/// [`parse`], with command-line `overrides` applied.
pub fn parse_with(path: &Path, source: &str, overrides: Overrides) -> Result<Config, ConfigError> {
    let mut config = parse_whole(path, source, &process_env)?;
    if let Some(shard) = overrides.shard {
        config.daemon.shard = shard;
    }
    let shard = config.daemon.shard;
    config.services.retain(|s| shard.owns(&s.name));
    Ok(config)
}

/// Parses and validates every service in `source` and in `services_dir`, whatever the shard;
/// `${NAME}` takes its value from `env`.
fn parse_whole(path: &Path, source: &str, env: Env<'_>) -> Result<Config, ConfigError> {
    let mut raw: RawConfig =
        toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, &e))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    // Every file is read before validation starts, so the validator can point into any of them
    // (a duplicate name names the file and line of its first definition).
    let dir = raw
        .daemon
        .services_dir
        .take()
        .map(|d| files::ServicesDir::read(&d, &base_dir));
    let main = SourceText {
        path: path.to_path_buf(),
        lines: LineIndex::new(source),
    };
    let others = dir.iter().flat_map(|d| d.texts()).map(|(p, t)| SourceText {
        path: p.to_path_buf(),
        lines: LineIndex::new(t),
    });
    let mut v = Validator {
        files: std::iter::once(main).chain(others).collect(),
        current: 0,
        base_dir,
        tls_clients: HashMap::new(),
        service: None,
        problems: Vec::new(),
        env,
    };
    let config = v.config(raw, dir.as_ref());
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: v.problems,
        })
    }
}

/// Check options resolved to typed values: first the built-in defaults, then `[defaults]`, then
/// the service's own.
#[derive(Debug, Clone)]
struct CheckOptions {
    method: Method,
    headers: HeaderMap,
    timeout: Duration,
    expect: Arc<Expect>,
    max_body_bytes: usize,
    connection: ConnectionPolicy,
    resolver: ResolverKind,
    max_latency: Option<Duration>,
    body: Option<bytes::Bytes>,
    follow_redirects: u8,
    ip_family: IpFamily,
    failure_threshold: u32,
    success_threshold: u32,
    tls: TlsSettings,
}

/// TLS keys as given (paths resolved), turned into a [`TlsClient`] per service.
#[derive(Debug, Clone, Default)]
struct TlsSettings {
    ca_file: Option<(Spanned<String>, PathBuf)>,
    client_cert: Option<(Spanned<String>, PathBuf)>,
    client_key: Option<(Spanned<String>, PathBuf)>,
    server_name: Option<String>,
    insecure_skip_verify: bool,
    /// `tls = true` on a `tcp://` service.
    tcp_tls: bool,
}

/// Collects problems while turning raw values into typed ones. On a bad value it records the
/// problem and carries on with a placeholder, so that every problem is found in one pass.
struct Validator<'a> {
    /// Every file read: the main file first, then the files of `services_dir`.
    files: Vec<SourceText<'a>>,
    /// Index in `files` of the file being validated, named in every problem.
    current: usize,
    /// Relative file names in the config (token, certificate, header files) are relative to
    /// the directory of the file being validated.
    base_dir: PathBuf,
    /// The service being validated, named in every problem.
    service: Option<String>,
    problems: Vec<Problem>,
    /// TLS clients built so far: services with the same TLS options share one.
    tls_clients: HashMap<TlsOptions, Arc<TlsClient>>,
    /// Where `${NAME}` in header values and URL passwords takes its value.
    env: Env<'a>,
}

/// A file the validator reads, and its line starts to locate spans with.
struct SourceText<'a> {
    path: PathBuf,
    lines: LineIndex<'a>,
}

impl Validator<'_> {
    fn report(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        let file = &self.files[self.current];
        self.problems.push(Problem {
            // `None` for the main file, which `ConfigError::Invalid` names already.
            file: (self.current > 0).then(|| file.path.clone()),
            location: span.map(|s| file.lines.locate(s.start)),
            service: self.service.clone(),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig, dir: Option<&files::ServicesDir>) -> Config {
        let daemon = self.daemon(raw.daemon);
        let builtin = CheckOptions {
            method: Method::GET,
            headers: HeaderMap::new(),
            timeout: daemon.deadline,
            expect: Arc::new(Expect {
                status: vec![StatusMatcher::Class(2)],
                ..Expect::default()
            }),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connection: DEFAULT_CONNECTION,
            resolver: DEFAULT_RESOLVER,
            max_latency: None,
            body: None,
            follow_redirects: 0,
            ip_family: IpFamily::Any,
            failure_threshold: 1,
            success_threshold: 1,
            tls: TlsSettings::default(),
        };
        let defaults = self.check_options(raw.defaults, &builtin);

        // Name -> file and byte offset of its first table; turned into a line only for a
        // duplicate.
        let mut seen = files::Seen::new();
        let mut services = Vec::with_capacity(raw.services.len());
        let mut sources = Sources {
            services_dir: None,
            files: vec![SourceFile {
                path: self.files[0].path.clone(),
                services: raw.services.len(),
            }],
        };
        for table in raw.services {
            if let Some(service) = self.service_table(table, &defaults, &mut seen) {
                services.push(Arc::new(service));
            }
        }
        if let Some(dir) = dir {
            self.services_dir(dir, &defaults, &mut seen, &mut services, &mut sources);
        }
        Config {
            daemon,
            fleet_size: services.len(),
            services,
            sources,
        }
    }

    /// Keys that do not fit the service's kind of URL: HTTP keys on a `tcp://` service, TLS
    /// keys without TLS. Only the service's own table counts; what it inherits from
    /// `[defaults]` is simply not used.
    fn keys_for_kind(&mut self, identity: &RawIdentity, check: &RawCheck, table: &Range<usize>) {
        let scheme = scheme_of(identity.url.get_ref());
        let is_tcp = scheme.as_deref() == Some("tcp");
        let is_https = scheme.as_deref() == Some("https");
        let http_keys = check.http_only_keys();
        if is_tcp && !http_keys.is_empty() {
            self.report(
                Some(table),
                format!(
                    "not for tcp:// services (they apply to HTTP checks): {}",
                    http_keys.join(", ")
                ),
            );
        }
        if let Some(t) = &check.tls
            && !is_tcp
        {
            self.report(
                Some(&t.span()),
                "tls = true is for tcp:// services; use an https:// URL for HTTP over TLS",
            );
        }
        let tls_keys = check.tls_keys();
        let tcp_tls = check.tls.as_ref().is_some_and(|t| *t.get_ref());
        let tls_allowed = is_https || (is_tcp && tcp_tls);
        if !tls_keys.is_empty() && !tls_allowed {
            self.report(
                Some(table),
                format!(
                    "TLS settings need an https:// URL, or tcp:// with tls = true: {}",
                    tls_keys.join(", ")
                ),
            );
        }
    }

    fn daemon(&mut self, raw: RawDaemon) -> Daemon {
        let mut d = Daemon::default();
        if let Some(listen) = raw.listen {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => d.listen = addr,
                Err(_) => self.report(
                    Some(&listen.span()),
                    format!(
                        "listen = {:?} is not an IP:PORT address (e.g. \"127.0.0.1:9915\")",
                        listen.get_ref()
                    ),
                ),
            }
        }
        if let Some(v) = raw.interval {
            d.interval = self
                .duration(DurationKey::Interval, &v)
                .unwrap_or(d.interval);
        }
        if let Some(v) = &raw.deadline {
            d.deadline = self
                .duration(DurationKey::Deadline, v)
                .unwrap_or(d.deadline);
        }
        if d.deadline > d.interval {
            let span = raw.deadline.as_ref().map(|s| s.span());
            self.report(
                span.as_ref(),
                format!(
                    "deadline ({}) must not be longer than interval ({}): a sweep must end before the next one starts",
                    humantime::format_duration(d.deadline),
                    humantime::format_duration(d.interval)
                ),
            );
        }
        if let Some(v) = raw.max_in_flight {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_IN_FLIGHT_LIMIT).contains(v.get_ref()) => {
                    d.max_in_flight = NonZeroUsize::new(n)
                }
                _ => self.report(
                    Some(&v.span()),
                    format!(
                        "max_in_flight = {} must be between 1 and {MAX_IN_FLIGHT_LIMIT}",
                        v.get_ref()
                    ),
                ),
            }
        }
        if let Some(r) = raw.reload_api {
            d.reload_api = r;
        }
        if let Some(s) = raw.shard {
            match s.get_ref().parse::<Shard>() {
                Ok(shard) => d.shard = shard,
                Err(e) => self.report(Some(&s.span()), e.to_string()),
            }
        }
        d.auth = raw.auth.and_then(|a| self.auth(a));
        d.tls = raw.tls.and_then(|t| self.server_tls(t));
        d
    }

    /// `[daemon.auth]`: reads the token file now, so a reload rotates the token.
    fn auth(&mut self, raw: Spanned<RawAuth>) -> Option<Auth> {
        let RawAuth {
            token_file,
            protect,
        } = raw.into_inner();
        let mut set = BTreeSet::new();
        match &protect {
            None => {
                set.insert(Protected::Reload);
            }
            Some(list) => {
                for name in list.get_ref() {
                    match Protected::parse(name) {
                        Some(p) if set.insert(p) => {}
                        Some(_) => self.report(
                            Some(&list.span()),
                            format!("protect lists {name:?} twice"),
                        ),
                        None => self.report(
                            Some(&list.span()),
                            format!(
                                "protect entry {name:?} is not one of reload, status, metrics (/healthz and /readyz are always open)"
                            ),
                        ),
                    }
                }
                if list.get_ref().is_empty() {
                    self.report(
                        Some(&list.span()),
                        "protect must name at least one of reload, status, metrics; leave out [daemon.auth] for no auth",
                    );
                }
            }
        }
        let path = access::resolve(&self.base_dir, token_file.get_ref());
        let token = match access::read_token(&path) {
            Ok(t) => t,
            Err(e) => {
                self.report(Some(&token_file.span()), e);
                return None;
            }
        };
        Some(Auth {
            token_file: path,
            token,
            protect: set,
        })
    }

    /// `[daemon.tls]`: reads and checks the certificate and key now, so a reload rotates them.
    fn server_tls(&mut self, raw: Spanned<RawTls>) -> Option<ServerTls> {
        let RawTls {
            cert_file,
            key_file,
        } = raw.into_inner();
        let cert_path = access::resolve(&self.base_dir, cert_file.get_ref());
        let key_path = access::resolve(&self.base_dir, key_file.get_ref());
        match access::read_server_tls(&cert_path, &key_path) {
            Ok(key) => Some(ServerTls {
                cert_file: cert_path,
                key_file: key_path,
                key: Arc::new(key),
            }),
            Err(e) => {
                let span = if e.starts_with("cert_file") {
                    cert_file.span()
                } else {
                    key_file.span()
                };
                self.report(Some(&span), e);
                None
            }
        }
    }

    /// Parses a duration such as `"200ms"`, `"5s"` or `"1m"` for `key`, within the key's
    /// [`DurationKey::bounds`].
    fn duration(&mut self, key: DurationKey, v: &Spanned<String>) -> Option<Duration> {
        let name = key.name();
        let (min, max) = key.bounds();
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.report(Some(&v.span()), format!("{name} must be greater than zero"));
                None
            }
            Ok(d) if d < min || d > max => {
                self.report(
                    Some(&v.span()),
                    format!(
                        "{name} = {:?} must be between {} and {}{}",
                        v.get_ref(),
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        key.why()
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.report(
                    Some(&v.span()),
                    format!(
                        "{name} = {:?} is not a duration ({e}); write e.g. \"200ms\", \"5s\", \"1m\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn check_options(&mut self, raw: RawCheck, base: &CheckOptions) -> CheckOptions {
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
        o
    }

    fn threshold(&mut self, key: &str, v: &Spanned<i64>) -> Option<u32> {
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

    fn header_expectations(
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
    fn header_rule(
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

    fn status_matchers(&mut self, s: &Spanned<Vec<RawStatus>>) -> Vec<StatusMatcher> {
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

    fn json_expectations(
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

    fn service(&mut self, identity: RawIdentity, o: CheckOptions) -> Option<Service> {
        let RawIdentity {
            name,
            url,
            group,
            labels,
        } = identity;
        self.name_like("name", &name);
        if let Some(g) = &group {
            self.name_like("group", g);
        }
        let labels = labels.map(|l| self.labels(&l)).unwrap_or_default();
        // The password may have come from `${NAME}`: it is in `url` now, so `basic_auth` and
        // `redact` below treat it like one written in the file.
        let url_span = url.span();
        let (url, mut target, kind) = self.url(&url)?;
        if kind == ProbeKind::Tcp {
            target.tls = o.tls.tcp_tls;
        }
        if let Some(ip) = target.ip
            && !o.ip_family.allows(&ip)
        {
            self.report(
                Some(&url_span),
                format!(
                    "the url's address is not {} as ip_family requires",
                    o.ip_family.as_str()
                ),
            );
        }
        let tls = if target.tls {
            self.tls_client(&o.tls, kind)
        } else {
            None
        };
        let mut headers = o.headers;
        if let Some(auth) = basic_auth(&url) {
            headers.entry(AUTHORIZATION).or_insert(auth);
        }
        let headers = headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let redacted = has_userinfo(&url).then(|| redact(&url).into_boxed_str());
        let name = name.into_inner();
        let group = group.map(Spanned::into_inner);
        let mut service = Service {
            series_labels: crate::labels::series_labels(&name, group.as_deref(), &labels),
            name,
            group,
            labels,
            url: String::from(url).into_boxed_str(),
            redacted,
            target,
            method: o.method,
            headers,
            timeout: o.timeout,
            max_body_bytes: o.max_body_bytes,
            connection: o.connection,
            resolver: o.resolver,
            expect: o.expect,
            kind,
            tls,
            server_name: o.tls.server_name.map(String::into_boxed_str),
            follow_redirects: o.follow_redirects,
            ip_family: o.ip_family,
            max_latency: o.max_latency,
            body: o.body,
            failure_threshold: o.failure_threshold,
            success_threshold: o.success_threshold,
            check_digest: 0,
        };
        service.check_digest = service.check_key();
        Some(service)
    }

    /// The TLS client for `settings` (the system's roots unless `ca_file` says otherwise). Built
    /// once per distinct settings and load, here rather than at the first check: reading the
    /// system roots takes milliseconds of CPU that would otherwise stall an async worker and
    /// the checks on it in the middle of a sweep.
    fn tls_client(&mut self, settings: &TlsSettings, kind: ProbeKind) -> Option<Arc<TlsClient>> {
        let client_cert = match (&settings.client_cert, &settings.client_key) {
            (Some((_, cert)), Some((_, key))) => Some((cert.clone(), key.clone())),
            (Some((c, _)), None) => {
                self.report(Some(&c.span()), "client_cert needs client_key");
                None
            }
            (None, Some((k, _))) => {
                self.report(Some(&k.span()), "client_key needs client_cert");
                None
            }
            (None, None) => None,
        };
        if settings.insecure_skip_verify {
            tracing::warn!(
                service = self.service.as_deref().unwrap_or(""),
                "insecure_skip_verify: any certificate is accepted for this service"
            );
        }
        let options = TlsOptions {
            ca_file: settings.ca_file.as_ref().map(|(_, p)| p.clone()),
            client_cert,
            insecure_skip_verify: settings.insecure_skip_verify,
            alpn_http: kind == ProbeKind::Http,
        };
        if let Some(client) = self.tls_clients.get(&options) {
            return Some(client.clone());
        }
        match tls::build(&options) {
            Ok(client) => {
                let client = Arc::new(client);
                self.tls_clients.insert(options, client.clone());
                Some(client)
            }
            Err(e) => {
                // Point at the key whose file failed (else the first TLS key given).
                let key = if e.starts_with("ca_file") {
                    settings.ca_file.as_ref().map(|(k, _)| k)
                } else if e.starts_with("client_key") {
                    settings.client_key.as_ref().map(|(k, _)| k)
                } else {
                    settings.client_cert.as_ref().map(|(k, _)| k)
                };
                let span = key
                    .or(settings.ca_file.as_ref().map(|(k, _)| k))
                    .map(|k| k.span());
                self.report(span.as_ref(), e);
                None
            }
        }
    }

    /// Names and groups appear in URLs (`/status/{name}`), labels and logs.
    fn name_like(&mut self, key: &str, v: &Spanned<String>) {
        let s = v.get_ref();
        if s.is_empty() {
            self.report(Some(&v.span()), format!("{key} must not be empty"));
        } else if s.chars().count() > MAX_NAME_LEN {
            self.report(
                Some(&v.span()),
                format!("{key} is longer than {MAX_NAME_LEN} characters"),
            );
        } else if s.chars().any(|c| c.is_control() || c == '/') {
            self.report(
                Some(&v.span()),
                format!("{key} {s:?} must not contain '/' or control characters"),
            );
        }
    }

    fn labels(&mut self, l: &Spanned<BTreeMap<String, String>>) -> BTreeMap<String, String> {
        for name in l.get_ref().keys() {
            if !is_label_name(name) {
                self.report(
                    Some(&l.span()),
                    format!("label name {name:?} is not valid for Prometheus: use letters, digits and '_', not starting with a digit or \"__\""),
                );
            } else if crate::labels::is_reserved(name) {
                self.report(
                    Some(&l.span()),
                    format!(
                        "label name {name:?} is reserved: healthsweep or Prometheus sets it (reserved: {})",
                        crate::labels::RESERVED.join(", ")
                    ),
                );
            }
        }
        l.get_ref().clone()
    }

    fn url(&mut self, v: &Spanned<String>) -> Option<(Url, Target, ProbeKind)> {
        let span = v.span();
        let mut url = match Url::parse(v.get_ref()) {
            Ok(u) => u,
            Err(e) => {
                // The URL may hold a password, so it is not echoed.
                let hint = secrets::url_parse_hint(v.get_ref());
                self.report(Some(&span), format!("url is not a valid URL: {e}{hint}"));
                return None;
            }
        };
        if !self.url_secrets(&mut url, &span) {
            return None;
        }
        match target_of(&url) {
            Ok((target, kind)) => Some((url, target, kind)),
            Err(e) => {
                self.report(Some(&span), e);
                None
            }
        }
    }
}

/// Where `url` points: the connection target and the kind of check. Also used for the
/// `Location` of a redirect. Errors never echo the URL (it may hold a password).
pub fn target_of(url: &Url) -> Result<(Target, ProbeKind), String> {
    let (tls, kind) = match url.scheme() {
        "http" => (false, ProbeKind::Http),
        "https" => (true, ProbeKind::Http),
        "tcp" => (false, ProbeKind::Tcp),
        other => {
            return Err(format!(
                "url scheme {other:?} is not supported: use http, https or tcp"
            ));
        }
    };
    let (host, mut ip) = match url.host() {
        Some(url::Host::Domain(d)) => (d.to_string(), None),
        Some(url::Host::Ipv4(a)) => (a.to_string(), Some(IpAddr::V4(a))),
        Some(url::Host::Ipv6(a)) => (a.to_string(), Some(IpAddr::V6(a))),
        None => return Err("url has no host".into()),
    };
    // tcp:// is not a scheme the URL standard knows, so its IPv4 hosts stay text.
    if ip.is_none() {
        ip = host.parse().ok();
    }
    let port = match (url.port_or_known_default(), kind) {
        (Some(p), _) => p,
        (None, ProbeKind::Tcp) => return Err("a tcp:// url needs a port".into()),
        (None, ProbeKind::Http) => {
            if tls {
                443
            } else {
                80
            }
        }
    };
    if kind == ProbeKind::Tcp && (!matches!(url.path(), "" | "/") || url.query().is_some()) {
        return Err("a tcp:// url has only a host and a port".into());
    }
    let host_str = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(p) => format!("{host_str}:{p}"),
        None => host_str.to_string(),
    };
    let authority = HeaderValue::from_str(&authority)
        .map_err(|_| "url host is not valid in a Host header".to_string())?;
    let mut path_and_query = if url.path().is_empty() {
        "/".to_string()
    } else {
        url.path().to_string()
    };
    if let Some(q) = url.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let path_and_query = http::uri::PathAndQuery::try_from(path_and_query)
        .map_err(|_| "url path is not valid on an HTTP request line".to_string())?;
    Ok((
        Target {
            tls,
            host,
            ip,
            port,
            authority,
            path_and_query,
        },
        kind,
    ))
}

fn parse_status_text(t: &str) -> Option<StatusMatcher> {
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

/// Prometheus label name syntax; `__` prefixes are reserved for Prometheus itself.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// `http://user:pass@host/` becomes an `Authorization: Basic` header, sent like curl does.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(url.username());
    let pass = url.password().map(decode).unwrap_or_default();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Whether `url` carries user info (a user name, a password or both): sent as basic auth, and
/// possibly a token on its own (`http://TOKEN@host/`).
fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// The URL with its whole user info (user name and password) replaced by `REDACTED`.
pub fn redact(url: &Url) -> String {
    if !has_userinfo(url) {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Cannot fail: the URL already has user info, so it has a host that can carry it.
    let _ = shown.set_password(None);
    let _ = shown.set_username("REDACTED");
    shown.to_string()
}

/// The scheme of `raw`, lowercased, found as the URL parser finds it (RFC 3986: a letter, then
/// letters, digits, `+`, `-`, `.`, up to the first `:`), so `HtTpS://` is `https` here too.
fn scheme_of(raw: &str) -> Option<String> {
    let (scheme, _) = raw.trim_start().split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// TOML values as the JSON values a response body would hold (datetimes as their text).
fn toml_to_json(v: &toml::Value) -> serde_json::Value {
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
mod tests;
