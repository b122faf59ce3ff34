//! Service URLs: where one points ([`target_of`], also for redirects), the credentials in it
//! (basic auth, redaction for display) and its scheme, read as the URL parser reads it.

use std::net::IpAddr;

use base64::Engine as _;
use http::header::HeaderValue;
use url::Url;

use super::{ProbeKind, Target};

/// Where `url` points: the connection target and the kind of check. Also used for the
/// `Location` of a redirect. Errors never echo the URL (it may hold a password).
pub fn target_of(url: &Url) -> Result<(Target, ProbeKind), String> {
    let (tls, kind) = match url.scheme() {
        "http" => (false, ProbeKind::Http),
        "https" => (true, ProbeKind::Http),
        "tcp" => (false, ProbeKind::Tcp),
        "dns" => (false, ProbeKind::Dns),
        "grpc" => (false, ProbeKind::Grpc),
        "grpcs" => (true, ProbeKind::Grpc),
        other => {
            return Err(format!(
                "url scheme {other:?} is not supported: use http, https, tcp, dns, grpc or grpcs"
            ));
        }
    };
    let (host, mut ip) = match url.host() {
        Some(url::Host::Domain(d)) => (d.to_string(), None),
        // The URL's own text of the address is its dotted form already (no formatting).
        Some(url::Host::Ipv4(a)) => (
            url.host_str().map_or_else(|| a.to_string(), str::to_string),
            Some(IpAddr::V4(a)),
        ),
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
        (None, ProbeKind::Dns) => 53,
        (None, ProbeKind::Grpc) => return Err("a grpc:// url needs a port".into()),
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
    if kind == ProbeKind::Grpc && (!matches!(url.path(), "" | "/") || url.query().is_some()) {
        return Err(
            "a grpc:// url has only a host and a port; the service checked is grpc_service".into(),
        );
    }
    if kind == ProbeKind::Dns && (!matches!(url.path(), "" | "/") || url.query().is_some()) {
        return Err(
            "a dns:// url names only the server (host and port); the name asked for is dns_query"
                .into(),
        );
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

/// `http://user:pass@host/` becomes an `Authorization: Basic` header, sent like curl does.
pub(super) fn basic_auth(url: &Url) -> Option<HeaderValue> {
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
pub(super) fn has_userinfo(url: &Url) -> bool {
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
pub(super) fn scheme_of(raw: &str) -> Option<String> {
    let (scheme, _) = raw.trim_start().split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}
