//! Getting a TCP connection to a target: a descriptor slot from the budget, the host's
//! addresses (of the service's `ip_family`), and each address tried in turn until one connects.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::pool::Slot;
use super::progress::{Failure, Phase, Progress};
use super::{Prober, Reason};
use crate::config::{IpFamily, Service, Target};

/// A new TCP connection to `target` for a check of `svc`, with the slot it holds.
pub async fn connect(
    prober: &Prober,
    svc: &Service,
    target: &Target,
    progress: &Progress,
) -> Result<(TcpStream, Slot), Failure> {
    progress.enter(Phase::Slot);
    let slot = prober.pool.slot().await;
    let addrs = addresses(prober, svc, target, progress).await?;
    progress.enter(Phase::Connect);
    Ok((connect_any(&addrs).await?, slot))
}

/// The addresses of `target` that `svc`'s `ip_family` allows, resolved unless an IP literal.
pub async fn addresses(
    prober: &Prober,
    svc: &Service,
    target: &Target,
    progress: &Progress,
) -> Result<Vec<SocketAddr>, Failure> {
    progress.enter(Phase::Resolve);
    let addrs = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => prober
            .resolve(svc.resolver, &target.host, target.port)
            .await
            .map_err(|e| Failure::new(Reason::Dns, format!("resolving {}: {e}", target.host)))?,
    };
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| svc.ip_family.allows(&a.ip()))
        .collect();
    if addrs.is_empty() {
        let family = match svc.ip_family {
            IpFamily::V4 => "IPv4 ",
            IpFamily::V6 => "IPv6 ",
            IpFamily::Any => "",
        };
        return Err(Failure::new(
            Reason::Dns,
            format!("resolving {}: no {family}address", target.host),
        ));
    }
    Ok(addrs)
}

/// Tries each address in turn until one connects (blackbox_exporter tries only the first); the
/// error names the last one tried.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            // No TCP_NODELAY: a request is one write on a connection with nothing unacknowledged,
            // which Nagle never delays, so the extra syscall per connection would buy nothing.
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => Failure::new(Reason::Connect, format!("connect {addr}: {e}")),
        None => Failure::new(Reason::Connect, "no address to connect to"),
    })
}
