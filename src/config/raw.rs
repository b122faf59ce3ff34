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

/// One `[[service]]` table: its name and URL, and the rest of what it sets.
///
/// Most tables of a large fleet set `name` and `url` and nothing else, so the other ~30 keys
/// sit behind one box made only when the table sets one of them: a table is ~100 bytes, not
/// 1.4 KB (each key an `Option<Spanned<_>>`), and at 100,000 services the parsed file is
/// 10 MB at the load's peak.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "ServiceTable")]
pub struct RawService {
    /// Required in a `[[service]]`; a discovery template may leave both out.
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// None when the table sets nothing but `name` and `url`.
    rest: Option<Box<ServiceRest>>,
}

#[derive(Debug, Default)]
struct ServiceRest {
    group: Option<Spanned<String>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    check: RawCheck,
}

/// `ServiceTable`, the table as serde reads it: `name`, `url`, `group`, `labels` and every
/// key of [`RawCheck`], each listed once here. The check options are repeated rather than
/// flattened because serde's `flatten` cannot be combined with `deny_unknown_fields`, and
/// unknown keys must be errors; a key of `RawCheck` missing here does not compile.
macro_rules! service_table {
    ($($key:ident: $ty:ty,)*) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename = "RawService")]
        struct ServiceTable {
            name: Option<Spanned<String>>,
            url: Option<Spanned<String>>,
            group: Option<Spanned<String>>,
            labels: Option<Spanned<BTreeMap<String, String>>>,
            $($key: Option<Spanned<$ty>>,)*
        }

        impl From<ServiceTable> for RawService {
            fn from(t: ServiceTable) -> RawService {
                let rest = (t.group.is_some() || t.labels.is_some() $(|| t.$key.is_some())*)
                    .then(|| {
                        Box::new(ServiceRest {
                            group: t.group,
                            labels: t.labels,
                            check: RawCheck { $($key: t.$key,)* },
                        })
                    });
                RawService {
                    name: t.name,
                    url: t.url,
                    rest,
                }
            }
        }
    };
}

service_table! {
    method: String,
    headers: BTreeMap<String, String>,
    header_files: BTreeMap<String, String>,
    timeout: String,
    expect_status: Vec<RawStatus>,
    expect_json: BTreeMap<String, toml::Value>,
    expect_body_contains: String,
    max_body_bytes: i64,
    connection: String,
    resolver: String,
    expect_body_regex: String,
    expect_header: BTreeMap<String, RawHeaderMatch>,
    max_latency: String,
    body: String,
    follow_redirects: i64,
    ip_family: String,
    failure_threshold: i64,
    success_threshold: i64,
    ca_file: String,
    client_cert: String,
    client_key: String,
    server_name: String,
    insecure_skip_verify: bool,
    tls: bool,
    dns_query: String,
    dns_type: String,
    dns_transport: String,
    expect_rcode: Vec<String>,
    expect_answer: RawAnswerMatch,
    grpc_service: String,
    depends_on: Vec<String>,
    interval: String,
}

impl RawService {
    /// A template that sets nothing: every key from `[defaults]`, name and url their defaults.
    pub fn template_default() -> RawService {
        RawService::default()
    }

    /// Splits off the check options, so they can be resolved against `[defaults]` like any
    /// other [`RawCheck`].
    pub fn into_parts(self) -> (RawNaming, RawCheck) {
        let rest = self.rest.map(|r| *r).unwrap_or_default();
        let identity = RawNaming {
            name: self.name,
            url: self.url,
            group: rest.group,
            labels: rest.labels,
        };
        (identity, rest.check)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> RawService {
        let file: RawServicesFile = toml::from_str(text).expect("valid table");
        file.services
            .into_iter()
            .next()
            .expect("one table")
            .into_inner()
    }

    #[test]
    fn a_table_of_name_and_url_has_nothing_boxed_and_every_other_key_is_kept() {
        let plain = table("[[service]]\nname = \"a\"\nurl = \"http://a/\"\n");
        assert!(plain.rest.is_none());
        assert!(std::mem::size_of::<Spanned<RawService>>() <= 104);

        let (naming, _) = table("[[service]]\nname = \"a\"\ngroup = \"g\"\n").into_parts();
        assert_eq!(naming.group.map(Spanned::into_inner).as_deref(), Some("g"));
        let (naming, _) = table("[[service]]\nname = \"a\"\nlabels = { t = \"x\" }\n").into_parts();
        assert_eq!(naming.labels.map(|l| l.into_inner().len()), Some(1));
        let (naming, check) =
            table("[[service]]\nurl = \"http://a/\"\ninterval = \"1m\"\n").into_parts();
        assert_eq!(
            naming.url.map(Spanned::into_inner).as_deref(),
            Some("http://a/")
        );
        assert_eq!(
            check.interval.map(Spanned::into_inner).as_deref(),
            Some("1m")
        );
        assert!(check.timeout.is_none());
    }

    #[test]
    fn an_unknown_key_in_a_table_is_named_as_before() {
        let err = toml::from_str::<RawServicesFile>("[[service]]\nname = \"a\"\nnope = 1\n")
            .expect_err("unknown key");
        assert!(
            err.message().contains("unknown field `nope`"),
            "{}",
            err.message()
        );
    }
}
