//! A `[[service]]` table: its identity (name, group, labels, URL) and the [`Service`] built
//! from it with its resolved check options.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use toml::Spanned;
use url::Url;

use super::raw::{RawCheck, RawIdentity};
use super::{
    CheckOptions, Extra, ProbeKind, Service, Target, TlsClient, TlsOptions, TlsSettings, Validator,
    basic_auth, has_userinfo, redact, scheme_of, secrets, target_of, tls,
};

/// What a service is called and labelled, and (for a discovered one) which source found it.
pub(super) struct Naming {
    pub(super) name: String,
    pub(super) group: Option<String>,
    pub(super) labels: Arc<BTreeMap<String, String>>,
    pub(super) source: Option<Arc<str>>,
}

/// The [`Service`] checked at `url` with options `o`: what a `[[service]]` table and a
/// discovered target both come to.
pub(super) fn assemble(
    naming: Naming,
    url: Url,
    target: Target,
    kind: ProbeKind,
    o: &CheckOptions,
    tls: Option<Arc<TlsClient>>,
) -> Service {
    let Naming {
        name,
        group,
        labels,
        source,
    } = naming;
    let mut headers = o.headers.clone();
    if let Some(auth) = basic_auth(&url) {
        headers.entry(AUTHORIZATION).or_insert(auth);
    }
    let headers = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let redacted = has_userinfo(&url).then(|| redact(&url).into_boxed_str());
    let mut service = Service {
        series_labels: crate::labels::series_labels(&name, group.as_deref(), labels.iter()),
        name,
        labels,
        url: String::from(url).into_boxed_str(),
        target,
        method: o.method.clone(),
        timeout: o.timeout,
        max_body_bytes: o.max_body_bytes,
        connection: o.connection,
        resolver: o.resolver,
        expect: o.expect.clone(),
        kind,
        tls,
        follow_redirects: o.follow_redirects,
        ip_family: o.ip_family,
        failure_threshold: o.failure_threshold,
        success_threshold: o.success_threshold,
        every: o.every,
        phase: 0,
        check_digest: 0,
        reuse_key: 0,
        extra: Extra::shared(Extra {
            group,
            source,
            redacted,
            headers,
            server_name: o.tls.server_name.clone().map(String::into_boxed_str),
            max_latency: o.max_latency,
            body: o.body.clone(),
            dns: match (kind, &o.dns.query) {
                (ProbeKind::Dns, Some(query)) => Some(Arc::new(super::DnsCheck {
                    query: query.clone(),
                    record: o.dns.record,
                    transport: o.dns.transport,
                    rcodes: o.dns.rcodes.clone(),
                    answer: o.dns.answer.clone(),
                })),
                _ => None,
            },
            depends_on: o.depends_on.clone(),
            grpc_service: (kind == ProbeKind::Grpc)
                .then(|| o.grpc_service.clone().unwrap_or_default().into_boxed_str()),
        }),
    };
    if service.every > 1 {
        service.phase = (xxhash_rust::xxh64::xxh64(service.name.as_bytes(), 0)
            % u64::from(service.every)) as u32;
    }
    service.check_digest = service.check_key();
    service
}

/// Service names end up in URLs, label values and log lines; keep them reasonable.
pub(super) const MAX_NAME_LEN: usize = 200;

impl Validator<'_> {
    /// Keys that do not fit the service's kind of URL: HTTP keys on a `tcp://` service, TLS
    /// keys without TLS. Only the service's own table counts; what it inherits from
    /// `[defaults]` is simply not used.
    pub(super) fn keys_for_kind(
        &mut self,
        identity: &RawIdentity,
        check: &RawCheck,
        table: &Range<usize>,
    ) {
        let scheme = scheme_of(identity.url.get_ref()).unwrap_or_default();
        self.keys_for_scheme(&scheme, check, table);
    }

    /// [`Validator::keys_for_kind`] for a URL of `scheme` (lowercase).
    pub(super) fn keys_for_scheme(&mut self, scheme: &str, check: &RawCheck, table: &Range<usize>) {
        let is_tcp = scheme == "tcp";
        let is_dns = scheme == "dns";
        let is_grpc = scheme == "grpc" || scheme == "grpcs";
        let is_https = scheme == "https" || scheme == "grpcs";
        let mut http_keys = check.http_only_keys();
        if is_grpc {
            // Sent as gRPC metadata.
            http_keys.retain(|k| *k != "headers");
        }
        if (is_tcp || is_dns || is_grpc) && !http_keys.is_empty() {
            self.report(
                Some(table),
                format!(
                    "not for {scheme}:// services (they apply to HTTP checks): {}",
                    http_keys.join(", ")
                ),
            );
        }
        if let Some(g) = &check.grpc_service
            && !is_grpc
        {
            self.report(
                Some(&g.span()),
                "grpc_service is for grpc:// and grpcs:// services",
            );
        }
        let dns_keys = check.dns_keys();
        if !is_dns && !dns_keys.is_empty() {
            self.report(
                Some(table),
                format!("only for dns:// services: {}", dns_keys.join(", ")),
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
                    "TLS settings need an https:// or grpcs:// URL, or tcp:// with tls = true: {}",
                    tls_keys.join(", ")
                ),
            );
        }
    }

    pub(super) fn service(&mut self, identity: RawIdentity, o: CheckOptions) -> Option<Service> {
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
        let labels = Arc::new(labels.map(|l| self.labels(&l)).unwrap_or_default());
        // The password may have come from `${NAME}`: it is in `url` now, so `basic_auth` and
        // `redact` below treat it like one written in the file.
        let url_span = url.span();
        let (url, mut target, kind) = self.url(&url)?;
        if kind == ProbeKind::Tcp {
            target.tls = o.tls.tcp_tls;
        }
        if kind == ProbeKind::Dns && o.dns.query.is_none() {
            self.report(
                Some(&url_span),
                "a dns:// service needs dns_query: the name to ask the server for",
            );
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
        let name = name.into_inner();
        let group = group.map(Spanned::into_inner);
        Some(assemble(
            Naming {
                name,
                group,
                labels,
                source: None,
            },
            url,
            target,
            kind,
            &o,
            tls,
        ))
    }

    /// The TLS client for `settings` (the system's roots unless `ca_file` says otherwise). Built
    /// once per distinct settings and load, here rather than at the first check: reading the
    /// system roots takes milliseconds of CPU that would otherwise stall an async worker and
    /// the checks on it in the middle of a sweep.
    pub(super) fn tls_client(
        &mut self,
        settings: &TlsSettings,
        kind: ProbeKind,
    ) -> Option<Arc<TlsClient>> {
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
            // gRPC needs h2, which the HTTP offer includes (a server that picks http/1.1 fails
            // the check).
            alpn_http: matches!(kind, ProbeKind::Http | ProbeKind::Grpc),
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
    pub(super) fn name_like(&mut self, key: &str, v: &Spanned<String>) {
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

    pub(super) fn labels(
        &mut self,
        l: &Spanned<BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
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

    pub(super) fn url(&mut self, v: &Spanned<String>) -> Option<(Url, Target, ProbeKind)> {
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

/// Prometheus label name syntax; `__` prefixes are reserved for Prometheus itself.
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn url_credentials_become_basic_auth_and_are_redacted_for_display() {
        let c = parse_str(
            r#"
            [[service]]
            name = "a"
            url = "http://probe:s3cr%40t@127.0.0.1:8000/health"
            "#,
        )
        .expect("valid");
        let s = &c.services[0];
        // base64("probe:s3cr@t")
        assert_eq!(
            s.header("authorization").expect("header set"),
            "Basic cHJvYmU6czNjckB0"
        );
        let shown = s.redacted_url();
        assert_eq!(shown, "http://REDACTED@127.0.0.1:8000/health");
        assert!(!shown.contains("s3cr"));
    }

    #[test]
    fn secret_values_are_never_echoed_in_errors() {
        let err = parse_str(
            "[[service]]\nname = \"a\"\nurl = \"http://u:canary-secret@\"\nheaders = { Authorization = \"canary-secret\\u0001\" }\n",
        )
        .expect_err("invalid");
        assert!(!err.to_string().contains("canary-secret"), "{err}");
    }

    #[test]
    fn label_names_follow_prometheus_rules() {
        assert!(is_label_name("team"));
        assert!(is_label_name("_x1"));
        assert!(!is_label_name("1x"));
        assert!(!is_label_name("__x"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name(""));
    }

    #[test]
    fn services_with_the_same_tls_settings_share_one_client() {
        let dir = std::env::temp_dir().join(format!("healthsweep-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("cert");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).expect("write");
        let c = parse_str(&format!(
            r#"
            [defaults]
            ca_file = "{0}"
            [[service]]
            name = "a"
            url = "https://a.test/health"
            [[service]]
            name = "b"
            url = "https://b.test/health"
            [[service]]
            name = "c"
            url = "https://c.test/health"
            insecure_skip_verify = true
            [[service]]
            name = "plain"
            url = "http://d.test/health"
            "#,
            ca_file.display()
        ))
        .expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        let (a, b, c_, plain) = (
            &c.services[0],
            &c.services[1],
            &c.services[2],
            &c.services[3],
        );
        let (a, b) = (a.tls.as_ref().expect("own"), b.tls.as_ref().expect("own"));
        assert!(Arc::ptr_eq(a, b), "one client for identical settings");
        let c_ = c_.tls.as_ref().expect("own");
        assert!(c_.insecure_skip_verify && !Arc::ptr_eq(a, c_));
        assert!(
            plain.tls.is_none(),
            "inherited TLS settings do not apply to http://"
        );
        assert_eq!(
            a.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
