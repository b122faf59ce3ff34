//! A discovery template (`[discover.service]`): how a discovered target becomes a
//! [`Service`]. Validated with the config, so instantiating one per target costs a few string
//! substitutions and a URL parse, never a config parse: a refresh of 100,000 targets is cheap.
//!
//! `url`, `name` and `group` may hold placeholders: `{target}` (the target as discovered,
//! `host:port` for DNS), `{host}`, `{port}`, and `{label:NAME}` (a label of the target).
//! `name` defaults to `{target}`; `url` to the target itself when it is a URL, else
//! `http://{target}/health`.

use std::collections::BTreeMap;
use std::sync::Arc;

use url::Url;

use super::service::{MAX_NAME_LEN, Naming, assemble};
use super::{CheckOptions, ProbeKind, Service, TlsClient, target_of};

/// A target as a discovery source found it: the target string and its group's labels (meta
/// labels already dropped, names valid and not reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Discovered<'a> {
    pub target: &'a str,
    /// Shared by the group's targets, and by their services when the template adds none.
    pub labels: &'a Arc<BTreeMap<String, String>>,
}

/// Text with placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Target,
    Host,
    Port,
    Label(String),
}

impl Pattern {
    /// Parses `text`; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let brace = &rest[i..];
            if let Some(after) = brace.strip_prefix("{{") {
                literal.push('{');
                rest = after;
                continue;
            }
            if let Some(after) = brace.strip_prefix("}}") {
                literal.push('}');
                rest = after;
                continue;
            }
            if brace.starts_with('}') {
                return Err("a '}' without its '{' (write \"}}\" for a literal one)".into());
            }
            let end = brace
                .find('}')
                .ok_or("a '{' without its '}' (write \"{{\" for a literal one)")?;
            let name = &brace[1..end];
            let segment = match name {
                "target" => Segment::Target,
                "host" => Segment::Host,
                "port" => Segment::Port,
                n => match n.strip_prefix("label:") {
                    Some(label) if !label.is_empty() => Segment::Label(label.to_string()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use {{target}}, {{host}}, {{port}} or {{label:NAME}}"
                        ));
                    }
                },
            };
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal)));
            }
            segments.push(segment);
            rest = &brace[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Pattern(segments))
    }

    /// The labels the pattern needs a target to have.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::Label(l) => Some(l.as_str()),
            _ => None,
        })
    }

    /// The text for `target`.
    pub fn render(&self, target: &Discovered<'_>) -> Result<String, String> {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Target => out.push_str(target.target),
                Segment::Host => out.push_str(host_port(target.target).0),
                Segment::Port => match host_port(target.target).1 {
                    Some(p) => out.push_str(p),
                    None => return Err(format!("target {:?} has no port", target.target)),
                },
                Segment::Label(l) => match target.labels.get(l) {
                    Some(v) => out.push_str(v),
                    None => return Err(format!("target {:?} has no label {l}", target.target)),
                },
            }
        }
        Ok(out)
    }
}

/// The host and port of a target: `host:port`, `[v6]:port`, a bare host, or a URL.
fn host_port(target: &str) -> (&str, Option<&str>) {
    let authority = match target.split_once("://") {
        Some((_, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let a = &rest[..end];
            a.rsplit_once('@').map_or(a, |(_, h)| h)
        }
        None => target,
    };
    if let Some(v6) = authority.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// A validated `[discover.service]`.
pub struct Template {
    pub(super) source: Arc<str>,
    pub(super) name: Pattern,
    /// `None`: the target itself when it is a URL, else `http://{target}/health`.
    pub(super) url: Option<Pattern>,
    pub(super) group: Option<Pattern>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) options: CheckOptions,
    /// The TLS clients of the template's TLS settings, for HTTPS and for `tcp://` with
    /// `tls = true`; `None` uses the system's roots.
    pub(super) tls_http: Option<Arc<TlsClient>>,
    pub(super) tls_tcp: Option<Arc<TlsClient>>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Template {
    /// The service checking `target`, or why there is none (reported once per target).
    pub fn instantiate(&self, target: &Discovered<'_>) -> Result<Service, String> {
        let name = self.name.render(target)?;
        check_name(&name)?;
        let url = match &self.url {
            Some(p) => p.render(target)?,
            None if target.target.contains("://") => target.target.to_string(),
            None => format!("http://{}/health", target.target),
        };
        let url = Url::parse(&url).map_err(|e| format!("url is not a valid URL: {e}"))?;
        let (mut t, kind) = target_of(&url)?;
        if kind == ProbeKind::Tcp {
            t.tls = self.options.tls.tcp_tls;
        }
        if kind == ProbeKind::Dns && self.options.dns.query.is_none() {
            return Err("a dns:// service needs dns_query: the name to ask the server for".into());
        }
        if let Some(ip) = t.ip
            && !self.options.ip_family.allows(&ip)
        {
            return Err(format!(
                "the address is not {} as ip_family requires",
                self.options.ip_family.as_str()
            ));
        }
        let group = match &self.group {
            Some(p) => {
                let g = p.render(target)?;
                check_name(&g)?;
                Some(g)
            }
            None => None,
        };
        let labels = if self.labels.is_empty() {
            target.labels.clone()
        } else {
            let mut labels = (**target.labels).clone();
            labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(labels)
        };
        let tls = match (t.tls, kind) {
            (false, _) => None,
            (true, ProbeKind::Http) => self.tls_http.clone(),
            (true, ProbeKind::Tcp) => self.tls_tcp.clone(),
            (true, ProbeKind::Dns) => None,
            (true, ProbeKind::Grpc) => self.tls_http.clone(),
        };
        Ok(assemble(
            Naming {
                name,
                group,
                labels,
                source: Some(self.source.clone()),
            },
            url,
            t,
            kind,
            &self.options,
            tls,
        ))
    }
}

/// Names and groups end up in URLs, labels and logs (as for a `[[service]]`).
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("the name comes out empty".into())
    } else if s.chars().count() > MAX_NAME_LEN {
        Err(format!("the name is longer than {MAX_NAME_LEN} characters"))
    } else if s.chars().any(|c| c.is_control() || c == '/') {
        Err(format!("the name {s:?} contains '/' or control characters"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `p` rendered for target `t` with `labels`.
    fn render(p: &Pattern, t: &str, labels: &[(&str, &str)]) -> Result<String, String> {
        let labels = Arc::new(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.render(&Discovered {
            target: t,
            labels: &labels,
        })
    }

    #[test]
    fn placeholders_render_from_the_target_and_its_labels() {
        let p = Pattern::parse("https://{host}:{port}/{label:env}/health?t={target}&b={{x}}")
            .expect("valid");
        assert_eq!(
            render(&p, "db-1.internal:5432", &[("env", "prod")]).expect("renders"),
            "https://db-1.internal:5432/prod/health?t=db-1.internal:5432&b={x}"
        );
        let p = Pattern::parse("{host}|{port}").expect("valid");
        assert_eq!(render(&p, "[::1]:8080", &[]).expect("renders"), "::1|8080");
        assert_eq!(
            render(&p, "https://user@x.test:8443/h", &[]).expect("renders"),
            "x.test|8443"
        );
    }

    #[test]
    fn bad_placeholders_are_errors_and_missing_labels_or_ports_fail_the_target() {
        assert!(Pattern::parse("{nope}").is_err());
        assert!(Pattern::parse("{label:}").is_err());
        assert!(Pattern::parse("{target").is_err());
        assert!(Pattern::parse("a}b").is_err());
        let p = Pattern::parse("{label:team}").expect("valid");
        assert!(render(&p, "a:1", &[]).is_err());
        let p = Pattern::parse("{port}").expect("valid");
        assert!(render(&p, "bare-host", &[]).is_err());
    }
}
