//! Name resolution for checks: the system resolver, or an asynchronous one with a cache.
//!
//! The system resolver (getaddrinfo, which honours nsswitch: /etc/hosts, LDAP, mDNS, ...) blocks,
//! so it runs on tokio's blocking thread pool. A check cut off by the deadline cannot stop its
//! lookup: a DNS server that hangs keeps a thread busy for the resolver's full timeout after the
//! check is gone, and with many names those threads pile up and delay every other lookup. The
//! asynchronous resolver (hickory) reads the same /etc/resolv.conf and /etc/hosts, is cancelled
//! with the check, and caches answers for their TTL. The benchmark compares the two
//! (`healthsweep bench --hostnames`); see the README for the numbers behind the default.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;

pub use crate::config::ResolverKind;

/// Lookups in flight at once, across all checks. A sweep of thousands of new host names would
/// otherwise send thousands of queries in one burst: a DNS server drops what its socket buffer
/// cannot hold, and each dropped query costs the resolver's full timeout (5 s). It also bounds
/// the system resolver's blocking threads.
pub const MAX_CONCURRENT_LOOKUPS: usize = 256;

/// How long a lookup counts against [`MAX_CONCURRENT_LOOKUPS`]. Answers normally take
/// milliseconds; a lookup still waiting after this goes on outside the bound, so names whose DNS
/// server hangs cannot hold every turn and starve the lookups of healthy services.
pub const SLOW_LOOKUP: std::time::Duration = std::time::Duration::from_millis(250);

/// Names cached at most by the asynchronous resolver: room for a large fleet's distinct hosts,
/// a few hundred bytes each, allocated only as names are seen.
const CACHE_SIZE: usize = 65_536;

/// A resolver ready to use.
pub enum Resolver {
    System,
    Async(Box<TokioResolver>),
}

impl Resolver {
    /// Builds the resolver of `kind`. The asynchronous one reads /etc/resolv.conf; if that fails
    /// the system resolver is used instead, and the reason logged.
    pub fn new(kind: ResolverKind) -> Resolver {
        match kind {
            ResolverKind::System => Resolver::System,
            ResolverKind::Async => match TokioResolver::builder_tokio() {
                Ok(mut builder) => {
                    let opts = builder.options_mut();
                    opts.cache_size = CACHE_SIZE;
                    // Both families: `ip_family = "any"` tries every address until one connects,
                    // and the per-service family is applied to the answer.
                    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                    Resolver::Async(Box::new(builder.build()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system DNS configuration; using the system resolver");
                    Resolver::System
                }
            },
        }
    }

    /// The addresses of `host`, with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = match self {
            Resolver::System => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| e.to_string())?
                .collect(),
            Resolver::Async(r) => r
                .lookup_ip(host)
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addrs.is_empty() {
            return Err("no addresses".into());
        }
        Ok(addrs)
    }
}
