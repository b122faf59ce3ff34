//! A DNS source: SRV records (each gives `host:port`: a Kubernetes headless Service's pods,
//! a Consul service's instances), or A/AAAA records (`ip:port`, with the source's port). Asked
//! every `refresh`, of the source's server or the system's resolvers, without a cache (each
//! refresh sees the zone as it is). A name whose query fails (timeout, SERVFAIL, refused) keeps
//! its last good targets; an authoritative empty answer or NXDOMAIN empties it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio_util::sync::CancellationToken;

use super::Reporter;
use super::groups::TargetGroup;
use crate::config::{Discover, DnsRecord, DnsSpec, SourceSpec};

/// A query's time limit (and one retry), well inside the shortest refresh.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Each name's last good targets.
pub(super) type Names = HashMap<String, Vec<String>>;

pub(super) async fn run(d: &Discover, to: &Reporter, stop: &CancellationToken) {
    let SourceSpec::Dns(spec) = &d.spec else {
        return;
    };
    let mut names = Names::new();
    loop {
        let (groups, error) = tokio::select! {
            () = stop.cancelled() => return,
            r = query_all(spec, &mut names) => r,
        };
        to.send(d, Some(std::sync::Arc::new(groups)), error).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(d.refresh) => {}
        }
    }
}

fn resolver(spec: &DnsSpec) -> Result<TokioResolver, String> {
    let mut builder = match spec.server {
        Some(server) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    opts.ndots = 0;
    Ok(builder.build())
}

/// Asks for every name of `spec`; names that fail keep their last good targets in `names`.
/// Returns one group per name (labelled with it, `__meta_dns_name` as Prometheus does) and the
/// errors.
pub(super) async fn query_all(
    spec: &DnsSpec,
    names: &mut Names,
) -> (Vec<TargetGroup>, Option<String>) {
    let resolver = match resolver(spec) {
        Ok(r) => r,
        Err(e) => return (groups_of(spec, names), Some(e)),
    };
    let mut errors = Vec::new();
    for name in &spec.names {
        let fqdn = if name.ends_with('.') {
            name.clone()
        } else {
            format!("{name}.")
        };
        match query(&resolver, spec, &fqdn).await {
            Ok(targets) => {
                names.insert(name.clone(), targets);
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    (groups_of(spec, names), error)
}

fn groups_of(spec: &DnsSpec, names: &Names) -> Vec<TargetGroup> {
    spec.names
        .iter()
        .filter_map(|n| {
            names.get(n).map(|targets| TargetGroup {
                targets: targets.clone(),
                labels: [("__meta_dns_name".to_string(), n.clone())].into(),
            })
        })
        .collect()
}

/// The targets `fqdn` has now: `Ok(empty)` for NXDOMAIN or an answer without records, `Err`
/// for anything that says nothing (timeout, SERVFAIL, refused).
async fn query(
    resolver: &TokioResolver,
    spec: &DnsSpec,
    fqdn: &str,
) -> Result<Vec<String>, String> {
    let mut targets = match spec.record {
        DnsRecord::Srv => resolver
            .srv_lookup(fqdn)
            .await
            .map(|l| {
                l.iter()
                    // A target of "." says the service is decidedly not available at this
                    // name (RFC 2782): no target, not an empty host.
                    .filter(|srv| !srv.target().is_root())
                    .map(|srv| {
                        let host = srv.target().to_utf8();
                        let host = host.trim_end_matches('.');
                        format!("{host}:{}", srv.port())
                    })
                    .collect::<Vec<_>>()
            })
            .or_else(empty_or_error)?,
        DnsRecord::A => resolver
            .ipv4_lookup(fqdn)
            .await
            .map(|l| l.iter().map(|a| addr(a.0.into(), spec)).collect::<Vec<_>>())
            .or_else(empty_or_error)?,
        DnsRecord::Aaaa => resolver
            .ipv6_lookup(fqdn)
            .await
            .map(|l| l.iter().map(|a| addr(a.0.into(), spec)).collect::<Vec<_>>())
            .or_else(empty_or_error)?,
    };
    targets.sort();
    targets.dedup();
    Ok(targets)
}

fn addr(ip: std::net::IpAddr, spec: &DnsSpec) -> String {
    SocketAddr::new(ip, spec.port.unwrap_or(0)).to_string()
}

/// NXDOMAIN and an empty NOERROR answer are an authoritative "none"; anything else is a
/// failure that says nothing about the zone.
fn empty_or_error(e: ResolveError) -> Result<Vec<String>, String> {
    if let Some(proto) = e.proto()
        && let ProtoErrorKind::NoRecordsFound { response_code, .. } = proto.kind()
        && matches!(
            response_code,
            ResponseCode::NXDomain | ResponseCode::NoError
        )
    {
        return Ok(Vec::new());
    }
    Err(e.to_string())
}
