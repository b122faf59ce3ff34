//! `[[discover]]`: where targets come from (Prometheus file_sd files, an http_sd endpoint, DNS
//! SRV/A/AAAA), which of them are kept, and the template that makes services of them. Checked
//! at load without fetching anything; the `discovery` module does the fetching.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::HeaderMap;
use regex::Regex;
use toml::Spanned;

use super::check::MAX_BODY_BYTES_LIMIT;
use super::raw::{RawCheck, RawDiscover, RawDnsSd, RawFileSd, RawHttpSd, RawIdentity};
use super::template::{Discovered, Pattern, Template};
use super::{
    CheckOptions, DurationKey, Expect, IpFamily, ProbeKind, Service, StatusMatcher, TlsSettings,
    Validator, access, scheme_of,
};

/// Refresh intervals unless configured: Prometheus' own defaults for each kind.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(300);
pub const DEFAULT_HTTP_REFRESH: Duration = Duration::from_secs(60);
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Targets a source may list unless configured, and at most: more is taken for a generator
/// gone wrong (the refresh fails and the last good list stays), not a fleet to sweep.
pub const DEFAULT_MAX_TARGETS: usize = 200_000;
pub const MAX_TARGETS_LIMIT: usize = 1_000_000;

/// An http_sd request's time limit unless configured (and never more than the refresh).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated `[[discover]]` block.
#[derive(Debug)]
pub struct Discover {
    /// Unique; the `source` of every service it finds, and the `source` label of its metrics.
    pub name: Arc<str>,
    pub refresh: Duration,
    /// More targets than this in one refresh fail it (the last good ones stay).
    pub max_targets: usize,
    pub spec: SourceSpec,
    /// Label -> pattern (anchored, as Prometheus' relabeling): a target group is kept only if
    /// every one matches.
    pub keep: Vec<(String, Regex)>,
    /// Label -> pattern: a target group is dropped if any one matches.
    pub drop: Vec<(String, Regex)>,
    pub template: Template,
}

impl Discover {
    /// Whether a target group with `labels` passes `keep` and `drop` (a missing label is the
    /// empty string, as in Prometheus).
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = |l: &str| labels.get(l).map_or("", String::as_str);
        self.keep.iter().all(|(l, re)| re.is_match(value(l)))
            && !self.drop.iter().any(|(l, re)| re.is_match(value(l)))
    }
}

/// Where a source's targets come from.
#[derive(Debug)]
pub enum SourceSpec {
    /// file_sd files: each pattern is a directory and a glob for the file names in it.
    File(Vec<FilePattern>),
    /// http_sd: the request, built like a service (headers, secrets, TLS).
    Http(Arc<Service>),
    Dns(DnsSpec),
}

impl SourceSpec {
    /// `file`, `http` or `dns`, as in `/status` and the docs.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File(_) => "file",
            SourceSpec::Http(_) => "http",
            SourceSpec::Dns(_) => "dns",
        }
    }
}

/// One `paths` entry of a file source.
#[derive(Debug, Clone)]
pub struct FilePattern {
    /// As written, for messages.
    pub written: String,
    pub dir: PathBuf,
    pub pattern: glob::Pattern,
}

impl FilePattern {
    /// Whether a file named `name` (directly in `dir`) is one of this pattern's.
    pub fn matches(&self, name: &str) -> bool {
        !name.starts_with('.') && self.pattern.matches(name)
    }
}

/// A DNS source.
#[derive(Debug, Clone)]
pub struct DnsSpec {
    pub names: Vec<String>,
    pub record: DnsRecord,
    /// The server to ask; `None`: the system's resolvers (/etc/resolv.conf).
    pub server: Option<SocketAddr>,
    /// For A and AAAA: the port of every target.
    pub port: Option<u16>,
}

/// The records a DNS source asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// Each record gives `host:port` (Kubernetes headless Services, Consul).
    Srv,
    A,
    Aaaa,
}

impl Validator<'_> {
    /// Every `[[discover]]` block, each checked without fetching anything.
    pub(super) fn discovers(
        &mut self,
        blocks: Vec<Spanned<RawDiscover>>,
        defaults: &CheckOptions,
    ) -> Vec<Arc<Discover>> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for block in blocks {
            let span = block.span();
            let raw = block.into_inner();
            self.service = Some(format!("discover {}", raw.name.get_ref()));
            self.name_like("discover name", &raw.name);
            if !names.insert(raw.name.get_ref().clone()) {
                self.report(Some(&raw.name.span()), "duplicate [[discover]] name");
            }
            if let Some(d) = self.discover(raw, &span, defaults) {
                out.push(Arc::new(d));
            }
            self.service = None;
        }
        out
    }

    fn discover(
        &mut self,
        raw: RawDiscover,
        span: &Range<usize>,
        defaults: &CheckOptions,
    ) -> Option<Discover> {
        let RawDiscover {
            name,
            refresh,
            max_targets,
            file,
            http,
            dns,
            keep,
            drop,
            service,
        } = raw;
        let max_targets = match max_targets {
            None => DEFAULT_MAX_TARGETS,
            Some(m) => match usize::try_from(*m.get_ref()) {
                Ok(n) if (1..=MAX_TARGETS_LIMIT).contains(&n) => n,
                _ => {
                    self.report(
                        Some(&m.span()),
                        format!("max_targets must be between 1 and {MAX_TARGETS_LIMIT}"),
                    );
                    DEFAULT_MAX_TARGETS
                }
            },
        };
        let name: Arc<str> = Arc::from(name.into_inner());
        let default_refresh = match (&file, &http, &dns) {
            (None, Some(_), None) => DEFAULT_HTTP_REFRESH,
            (None, None, Some(_)) => DEFAULT_DNS_REFRESH,
            _ => DEFAULT_FILE_REFRESH,
        };
        let refresh = match &refresh {
            Some(r) => self
                .duration(DurationKey::Refresh, r)
                .unwrap_or(default_refresh),
            None => default_refresh,
        };
        let spec = match (file, http, dns) {
            (Some(f), None, None) => self.file_sd(f),
            (None, Some(h), None) => self.http_sd(&name, h, refresh),
            (None, None, Some(d)) => self.dns_sd(d),
            _ => {
                self.report(
                    Some(span),
                    "a [[discover]] block names exactly one source: file, http or dns",
                );
                None
            }
        };
        let keep = keep
            .map(|k| self.label_patterns("keep", &k))
            .unwrap_or_default();
        let drop = drop
            .map(|d| self.label_patterns("drop", &d))
            .unwrap_or_default();
        let template = self.template(&name, service, span, defaults)?;
        Some(Discover {
            name,
            refresh,
            max_targets,
            spec: spec?,
            keep,
            drop,
            template,
        })
    }

    fn file_sd(&mut self, raw: Spanned<RawFileSd>) -> Option<SourceSpec> {
        let paths = raw.into_inner().paths;
        let span = paths.span();
        if paths.get_ref().is_empty() {
            self.report(
                Some(&span),
                "file.paths must list at least one file or pattern",
            );
            return None;
        }
        let mut out = Vec::new();
        for written in paths.get_ref() {
            let path = access::resolve(&self.base_dir, written);
            let (Some(dir), Some(file)) =
                (path.parent(), path.file_name().and_then(|f| f.to_str()))
            else {
                self.report(
                    Some(&span),
                    format!("file.paths entry {written:?} names no file"),
                );
                continue;
            };
            if dir.to_string_lossy().contains(['*', '?', '[']) {
                self.report(
                    Some(&span),
                    format!("file.paths entry {written:?}: a pattern may only be in the file name, not in the directories"),
                );
                continue;
            }
            if ![".json", ".yml", ".yaml"].iter().any(|e| file.ends_with(e)) {
                self.report(
                    Some(&span),
                    format!("file.paths entry {written:?} must end in .json, .yml or .yaml (the file_sd format goes by extension)"),
                );
                continue;
            }
            match glob::Pattern::new(file) {
                Ok(pattern) => out.push(FilePattern {
                    written: written.clone(),
                    dir: dir.to_path_buf(),
                    pattern,
                }),
                Err(e) => self.report(
                    Some(&span),
                    format!("file.paths entry {written:?} is not a valid pattern: {e}"),
                ),
            }
        }
        (!out.is_empty()).then_some(SourceSpec::File(out))
    }

    fn http_sd(
        &mut self,
        name: &str,
        raw: Spanned<RawHttpSd>,
        refresh: Duration,
    ) -> Option<SourceSpec> {
        let span = raw.span();
        let RawHttpSd {
            url,
            timeout,
            headers,
            header_files,
            ca_file,
            client_cert,
            client_key,
            server_name,
            insecure_skip_verify,
            ip_family,
            resolver,
            max_body_bytes,
        } = raw.into_inner();
        if !matches!(scheme_of(url.get_ref()).as_deref(), Some("http" | "https")) {
            self.report(
                Some(&url.span()),
                "http.url must be an http:// or https:// URL",
            );
            return None;
        }
        let check = RawCheck {
            timeout,
            headers,
            header_files,
            ca_file,
            client_cert,
            client_key,
            server_name,
            insecure_skip_verify,
            ip_family,
            resolver,
            max_body_bytes,
            ..RawCheck::default()
        };
        // The request is not a check: it takes none of [defaults], only its own keys.
        let base = CheckOptions {
            method: Method::GET,
            headers: HeaderMap::new(),
            timeout: DEFAULT_HTTP_TIMEOUT,
            expect: Arc::new(Expect {
                status: vec![StatusMatcher::Code(200)],
                ..Expect::default()
            }),
            max_body_bytes: MAX_BODY_BYTES_LIMIT,
            connection: super::ConnectionPolicy::Fresh,
            resolver: super::DEFAULT_RESOLVER,
            max_latency: None,
            body: None,
            follow_redirects: 0,
            ip_family: IpFamily::Any,
            failure_threshold: 1,
            success_threshold: 1,
            tls: TlsSettings::default(),
            dns: super::dns_check::DnsOptions::default(),
            grpc_service: None,
            depends_on: None,
            every: 1,
        };
        let mut options = self.check_options(check, &base);
        // Prometheus' http_sd contract: the endpoint may shape its answer to the interval.
        options.headers.insert(
            http::HeaderName::from_static("x-prometheus-refresh-interval-seconds"),
            http::HeaderValue::from(refresh.as_secs()),
        );
        if options.timeout > refresh {
            options.timeout = refresh;
        }
        let identity = RawIdentity {
            name: Spanned::new(span.clone(), format!("discover:{name}")),
            url,
            group: None,
            labels: None,
        };
        self.service(identity, options)
            .map(|s| SourceSpec::Http(Arc::new(s)))
    }

    fn dns_sd(&mut self, raw: Spanned<RawDnsSd>) -> Option<SourceSpec> {
        let RawDnsSd {
            names,
            record,
            server,
            port,
        } = raw.into_inner();
        let mut ok = true;
        if names.get_ref().is_empty() {
            self.report(Some(&names.span()), "dns.names must list at least one name");
            ok = false;
        }
        for n in names.get_ref() {
            if hickory_resolver::Name::from_ascii(n).is_err() || n.is_empty() {
                self.report(
                    Some(&names.span()),
                    format!("dns.names entry {n:?} is not a DNS name"),
                );
                ok = false;
            }
        }
        let record = match record.as_ref().map(|r| r.get_ref().to_ascii_uppercase()) {
            None => DnsRecord::Srv,
            Some(r) if r == "SRV" => DnsRecord::Srv,
            Some(r) if r == "A" => DnsRecord::A,
            Some(r) if r == "AAAA" => DnsRecord::Aaaa,
            Some(other) => {
                let span = record.as_ref().map(|r| r.span());
                self.report(
                    span.as_ref(),
                    format!("dns.type {other:?} is not SRV, A or AAAA"),
                );
                return None;
            }
        };
        let port = match (&port, record) {
            (None, DnsRecord::Srv) => None,
            (Some(p), DnsRecord::Srv) => {
                self.report(
                    Some(&p.span()),
                    "dns.port is for A and AAAA records (SRV records carry their port)",
                );
                ok = false;
                None
            }
            (None, _) => {
                self.report(
                    Some(&names.span()),
                    "dns.port is needed for A and AAAA records",
                );
                ok = false;
                None
            }
            (Some(p), _) => match u16::try_from(*p.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    self.report(
                        Some(&p.span()),
                        format!("dns.port {} is not a port (1-65535)", p.get_ref()),
                    );
                    ok = false;
                    None
                }
            },
        };
        let server = match &server {
            None => None,
            Some(s) => {
                let text = s.get_ref();
                match text
                    .parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.report(
                            Some(&s.span()),
                            format!(
                                "dns.server {text:?} is not IP or IP:PORT (e.g. \"127.0.0.1:8600\")"
                            ),
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        ok.then(|| {
            SourceSpec::Dns(DnsSpec {
                names: names.into_inner(),
                record,
                server,
                port,
            })
        })
    }

    fn label_patterns(
        &mut self,
        key: &str,
        raw: &Spanned<BTreeMap<String, String>>,
    ) -> Vec<(String, Regex)> {
        let mut out = Vec::new();
        for (label, pattern) in raw.get_ref() {
            match Regex::new(&format!("^(?:{pattern})$")) {
                Ok(re) => out.push((label.clone(), re)),
                Err(e) => self.report(
                    Some(&raw.span()),
                    format!("{key} {label}: not a valid regular expression: {e}"),
                ),
            }
        }
        out
    }

    /// `[discover.service]`: resolved against `[defaults]` like a service, and tried once on a
    /// sample target so a template that cannot make a service is an error now, not later.
    fn template(
        &mut self,
        source: &Arc<str>,
        raw: Option<Spanned<super::raw::RawService>>,
        block: &Range<usize>,
        defaults: &CheckOptions,
    ) -> Option<Template> {
        let (span, raw) = match raw {
            Some(r) => (r.span(), r.into_inner()),
            None => (block.clone(), super::raw::RawService::template_default()),
        };
        let (naming, check) = raw.into_parts();
        let pattern = |v: &Option<Spanned<String>>, key: &str, this: &mut Self| {
            v.as_ref().map(|v| match Pattern::parse(v.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    this.report(Some(&v.span()), format!("{key}: {e}"));
                    None
                }
            })
        };
        let name = pattern(&naming.name, "name", self);
        let url = pattern(&naming.url, "url", self);
        let group = pattern(&naming.group, "group", self);
        if let Some(u) = &naming.url {
            // As for a service: keys that do not fit the URL's kind, when the template says.
            if let Some(scheme) = scheme_of(u.get_ref()) {
                self.keys_for_scheme(&scheme, &check, &span);
            }
        }
        let labels = naming.labels.map(|l| self.labels(&l)).unwrap_or_default();
        let o = self.check_options(check, defaults);
        let tls_http = self.tls_client(&o.tls, ProbeKind::Http);
        let tls_tcp = o
            .tls
            .tcp_tls
            .then(|| self.tls_client(&o.tls, ProbeKind::Tcp))
            .flatten();
        let template = Template {
            source: source.clone(),
            name: match name {
                Some(p) => p?,
                None => Pattern::parse("{target}").expect("a valid pattern"),
            },
            url: match url {
                Some(p) => Some(p?),
                None => None,
            },
            group: match group {
                Some(p) => Some(p?),
                None => None,
            },
            labels,
            options: o,
            tls_http,
            tls_tcp,
        };
        let sample_labels: BTreeMap<String, String> = template
            .name
            .labels()
            .chain(template.url.iter().flat_map(Pattern::labels))
            .chain(template.group.iter().flat_map(Pattern::labels))
            .map(|l| (l.to_string(), "x".to_string()))
            .collect();
        let sample_labels = Arc::new(sample_labels);
        let sample = Discovered {
            target: "discovered.example:8080",
            labels: &sample_labels,
        };
        if let Err(e) = template.instantiate(&sample) {
            self.report(
                Some(&span),
                format!(
                    "the template cannot make a service of a target (tried {:?}): {e}",
                    sample.target
                ),
            );
            return None;
        }
        Some(template)
    }
}
