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
}

/// One `[[service]]` table.
///
/// The check options are repeated from [`RawCheck`] rather than flattened because serde's
/// `flatten` cannot be combined with `deny_unknown_fields`, and unknown keys must be errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub group: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
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
}

impl RawService {
    /// Splits off the check options, so they can be resolved against `[defaults]` like any
    /// other [`RawCheck`], without copying.
    pub fn into_parts(self) -> (RawIdentity, RawCheck) {
        let identity = RawIdentity {
            name: self.name,
            url: self.url,
            group: self.group,
            labels: self.labels,
        };
        let check = RawCheck {
            method: self.method,
            headers: self.headers,
            header_files: self.header_files,
            timeout: self.timeout,
            expect_status: self.expect_status,
            expect_json: self.expect_json,
            expect_body_contains: self.expect_body_contains,
            max_body_bytes: self.max_body_bytes,
            connection: self.connection,
            resolver: self.resolver,
        };
        (identity, check)
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
