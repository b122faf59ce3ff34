//! The config file exactly as written: serde types that mirror the TOML.
//!
//! Nothing here is validated beyond what serde does (types and unknown keys); values that
//! need checking are kept [`Spanned`] so that [`super::validate`] can point at their line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub defaults: RawCheck,
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<RawService>>,
    #[serde(default, rename = "discover")]
    pub discover: Vec<Spanned<RawDiscover>>,
    #[serde(default)]
    pub maintenance: Vec<Spanned<super::maintenance::RawMaintenance>>,
}

/// A `[[discover]]` block: where targets come from, and the template that makes services of
/// them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscover {
    pub name: Spanned<String>,
    pub refresh: Option<Spanned<String>>,
    pub max_targets: Option<Spanned<i64>>,
    pub file: Option<Spanned<RawFileSd>>,
    pub http: Option<Spanned<RawHttpSd>>,
    pub dns: Option<Spanned<RawDnsSd>>,
    /// Label name -> regex: a target group is kept only if every one matches.
    pub keep: Option<Spanned<BTreeMap<String, String>>>,
    /// Label name -> regex: a target group is dropped if any one matches.
    pub drop: Option<Spanned<BTreeMap<String, String>>>,
    /// The template: any `[[service]]` key; `name` and `url` have defaults.
    pub service: Option<Spanned<RawService>>,
}

/// `file = { paths = [...] }`: Prometheus file_sd files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSd {
    pub paths: Spanned<Vec<String>>,
}

/// `http = { url = ..., ... }`: a Prometheus http_sd endpoint, and how to ask it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSd {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub header_files: Option<Spanned<BTreeMap<String, String>>>,
    pub ca_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<Spanned<bool>>,
    pub ip_family: Option<Spanned<String>>,
    pub resolver: Option<Spanned<String>>,
    pub max_body_bytes: Option<Spanned<i64>>,
}

/// `dns = { names = [...], type = "SRV", server = "...", port = ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsSd {
    pub names: Spanned<Vec<String>>,
    #[serde(rename = "type")]
    pub record: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
}

/// `[daemon]`: how the process itself runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub listen: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub reload_api: Option<bool>,
    pub shard: Option<Spanned<String>>,
    pub auth: Option<Spanned<RawAuth>>,
    pub tls: Option<Spanned<RawTls>>,
    /// A directory of `*.toml` files with more `[[service]]` tables.
    pub services_dir: Option<Spanned<String>>,
    /// Where the state store keeps its database.
    pub state_dir: Option<Spanned<String>>,
    pub history_retention: Option<Spanned<String>>,
}

/// `[daemon.auth]`: bearer-token auth for the daemon's own endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub token_file: Spanned<String>,
    pub protect: Option<Spanned<Vec<String>>>,
}

/// `[daemon.tls]`: serve the daemon's endpoints over TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
}

/// The check options a `[[service]]` may set and `[defaults]` may give for all of them.
///
/// `[defaults]` deserializes straight into this type, so it accepts exactly these keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub method: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// Header name -> file holding its value (a secret kept out of the config).
    pub header_files: Option<Spanned<BTreeMap<String, String>>>,
    pub timeout: Option<Spanned<String>>,
    pub expect_status: Option<Spanned<Vec<RawStatus>>>,
    pub expect_json: Option<Spanned<BTreeMap<String, toml::Value>>>,
    pub expect_body_contains: Option<Spanned<String>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub connection: Option<Spanned<String>>,
    pub resolver: Option<Spanned<String>>,
    pub expect_body_regex: Option<Spanned<String>>,
    pub expect_header: Option<Spanned<BTreeMap<String, RawHeaderMatch>>>,
    pub max_latency: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub follow_redirects: Option<Spanned<i64>>,
    pub ip_family: Option<Spanned<String>>,
    pub failure_threshold: Option<Spanned<i64>>,
    pub success_threshold: Option<Spanned<i64>>,
    pub ca_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<Spanned<bool>>,
    pub tls: Option<Spanned<bool>>,
    pub dns_query: Option<Spanned<String>>,
    pub dns_type: Option<Spanned<String>>,
    pub dns_transport: Option<Spanned<String>>,
    pub expect_rcode: Option<Spanned<Vec<String>>>,
    pub expect_answer: Option<Spanned<RawAnswerMatch>>,
    pub grpc_service: Option<Spanned<String>>,
    /// Services this one depends on, by name.
    pub depends_on: Option<Spanned<Vec<String>>>,
    /// How often the service is checked: a multiple of `[daemon] interval`.
    pub interval: Option<Spanned<String>>,
}

/// `expect_answer = { regex = "...", match = "any" | "all" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnswerMatch {
    pub regex: String,
    #[serde(rename = "match")]
    pub match_: Option<String>,
}

/// An optional key of a `[[service]]` table, boxed: a service sets few of its ~30 optional keys,
/// and at 100,000 services the unboxed `Option<Spanned<String>>`s (40 bytes each, set or not)
/// cost 107 MB at the parse peak; boxed, the table is ~300 bytes.
pub type Rare<T> = Option<Box<Spanned<T>>>;

fn unbox<T>(rare: Rare<T>) -> Option<Spanned<T>> {
    rare.map(|b| *b)
}

/// One `[[service]]` table.
///
/// The check options are repeated from [`RawCheck`] rather than flattened because serde's
/// `flatten` cannot be combined with `deny_unknown_fields`, and unknown keys must be errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Required in a `[[service]]`; a discovery template may leave both out.
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub group: Rare<String>,
    pub labels: Rare<BTreeMap<String, String>>,
    pub method: Rare<String>,
    pub headers: Rare<BTreeMap<String, String>>,
    /// Header name -> file holding its value (a secret kept out of the config).
    pub header_files: Rare<BTreeMap<String, String>>,
    pub timeout: Rare<String>,
    pub expect_status: Rare<Vec<RawStatus>>,
    pub expect_json: Rare<BTreeMap<String, toml::Value>>,
    pub expect_body_contains: Rare<String>,
    pub max_body_bytes: Rare<i64>,
    pub connection: Rare<String>,
    pub resolver: Rare<String>,
    pub expect_body_regex: Rare<String>,
    pub expect_header: Rare<BTreeMap<String, RawHeaderMatch>>,
    pub max_latency: Rare<String>,
    pub body: Rare<String>,
    pub follow_redirects: Rare<i64>,
    pub ip_family: Rare<String>,
    pub failure_threshold: Rare<i64>,
    pub success_threshold: Rare<i64>,
    pub ca_file: Rare<String>,
    pub client_cert: Rare<String>,
    pub client_key: Rare<String>,
    pub server_name: Rare<String>,
    pub insecure_skip_verify: Rare<bool>,
    pub tls: Rare<bool>,
    pub dns_query: Rare<String>,
    pub dns_type: Rare<String>,
    pub dns_transport: Rare<String>,
    pub expect_rcode: Rare<Vec<String>>,
    pub expect_answer: Rare<RawAnswerMatch>,
    pub grpc_service: Rare<String>,
    pub depends_on: Rare<Vec<String>>,
    pub interval: Rare<String>,
}

impl RawService {
    /// A template that sets nothing: every key from `[defaults]`, name and url their defaults.
    pub fn template_default() -> RawService {
        RawService::default()
    }

    /// Splits off the check options, so they can be resolved against `[defaults]` like any
    /// other [`RawCheck`] (moving the few set keys out of their boxes).
    pub fn into_parts(self) -> (RawNaming, RawCheck) {
        let identity = RawNaming {
            name: self.name,
            url: self.url,
            group: unbox(self.group),
            labels: unbox(self.labels),
        };
        let check = RawCheck {
            method: unbox(self.method),
            headers: unbox(self.headers),
            header_files: unbox(self.header_files),
            timeout: unbox(self.timeout),
            expect_status: unbox(self.expect_status),
            expect_json: unbox(self.expect_json),
            expect_body_contains: unbox(self.expect_body_contains),
            max_body_bytes: unbox(self.max_body_bytes),
            connection: unbox(self.connection),
            resolver: unbox(self.resolver),
            expect_body_regex: unbox(self.expect_body_regex),
            expect_header: unbox(self.expect_header),
            max_latency: unbox(self.max_latency),
            body: unbox(self.body),
            follow_redirects: unbox(self.follow_redirects),
            ip_family: unbox(self.ip_family),
            failure_threshold: unbox(self.failure_threshold),
            success_threshold: unbox(self.success_threshold),
            ca_file: unbox(self.ca_file),
            client_cert: unbox(self.client_cert),
            client_key: unbox(self.client_key),
            server_name: unbox(self.server_name),
            insecure_skip_verify: unbox(self.insecure_skip_verify),
            tls: unbox(self.tls),
            dns_query: unbox(self.dns_query),
            dns_type: unbox(self.dns_type),
            dns_transport: unbox(self.dns_transport),
            expect_rcode: unbox(self.expect_rcode),
            expect_answer: unbox(self.expect_answer),
            grpc_service: unbox(self.grpc_service),
            depends_on: unbox(self.depends_on),
            interval: unbox(self.interval),
        };
        (identity, check)
    }
}

/// What a service is called and where it is, as written (a template may leave name and url
/// out: they then come from the discovered target).
#[derive(Debug)]
pub struct RawNaming {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
}

impl RawNaming {
    /// The identity of a `[[service]]`, or the first required key it lacks.
    pub fn complete(self) -> Result<RawIdentity, &'static str> {
        Ok(RawIdentity {
            name: self.name.ok_or("name")?,
            url: self.url.ok_or("url")?,
            group: self.group,
            labels: self.labels,
        })
    }
}

/// What a service is, as opposed to how it is checked.
#[derive(Debug)]
pub struct RawIdentity {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub group: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
}

impl RawCheck {
    /// The keys set here that only mean something for HTTP checks (not `tcp://`).
    pub fn http_only_keys(&self) -> Vec<&'static str> {
        [
            ("method", self.method.is_some()),
            ("headers", self.headers.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("expect_json", self.expect_json.is_some()),
            ("expect_body_contains", self.expect_body_contains.is_some()),
            ("expect_body_regex", self.expect_body_regex.is_some()),
            ("expect_header", self.expect_header.is_some()),
            ("max_body_bytes", self.max_body_bytes.is_some()),
            ("body", self.body.is_some()),
            ("follow_redirects", self.follow_redirects.is_some()),
            ("connection", self.connection.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// The `dns://` keys set here.
    pub fn dns_keys(&self) -> Vec<&'static str> {
        [
            ("dns_query", self.dns_query.is_some()),
            ("dns_type", self.dns_type.is_some()),
            ("dns_transport", self.dns_transport.is_some()),
            ("expect_rcode", self.expect_rcode.is_some()),
            ("expect_answer", self.expect_answer.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// The TLS keys set here (they need `https://`, or `tcp://` with `tls = true`).
    pub fn tls_keys(&self) -> Vec<&'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("server_name", self.server_name.is_some()),
            ("insecure_skip_verify", self.insecure_skip_verify.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// An `expect_header` entry: the exact value, or a table
/// `{ value = "..." | regex = "...", match = "any" | "all" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawHeaderMatch {
    Exact(String),
    Rule(RawHeaderRule),
}

/// `{ regex = "...", match = "all" }`: exactly one of `value` and `regex`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRule {
    pub value: Option<String>,
    pub regex: Option<String>,
    /// `any` (default): one of the header's values must match; `all`: every one must.
    #[serde(rename = "match")]
    pub match_: Option<String>,
}

/// A file of `services_dir`: `[[service]]` tables and nothing else (`[defaults]` and
/// `[daemon]` belong to the main file, so one team's file cannot change another's checks).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServicesFile {
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<RawService>>,
}

/// An `expect_status` entry: a code (`200`) or a class or code as a string (`"2xx"`, `"204"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(i64),
    Text(String),
}
