//! Getting a TCP connection to a target: a descriptor slot from the budget, the host's
//! addresses (of the service's `ip_family`), and each address tried in turn until one connects;
//! and for a TLS target the handshake on it ([`open_stream`], for HTTP/1.1, HTTP/2 and gRPC).

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::http1::Stream;
use super::pool::{Shape, Slot};
use super::progress::{Failure, Phase, Progress};
use super::{Prober, Reason, TlsFacts, tls};
use crate::config::{IpFamily, Service, Target, TlsClient};

/// A new connection of `shape`: TCP, then for a TLS target the handshake with `client` (its
/// identity presented to the service's own origin only), with the slot it holds and what the
/// handshake showed.
pub async fn open_stream(
    prober: &Prober,
    svc: &Service,
    shape: &Shape<'_>,
    client: Option<&TlsClient>,
    progress: &Progress,
) -> Result<(Stream, Slot, Option<std::sync::Arc<TlsFacts>>), Failure> {
    let (tcp, slot) = connect(prober, svc, shape.target, progress).await?;
    if !shape.target.tls {
        return Ok((Stream::Plain(tcp), slot, None));
    }
    let Some(client) = client else {
        return Err(Failure::new(Reason::TlsHandshake, "no TLS client"));
    };
    progress.enter(Phase::Tls);
    let (config, _) = client.for_origin(shape.same_origin);
    // Boxed: the handshake's state is large and brief.
    let (tls_stream, facts) = Box::pin(tls::handshake(config, shape.server_name(), tcp)).await?;
    progress.tls(facts.clone());
    Ok((Stream::Tls(Box::new(tls_stream)), slot, facts))
}

/// Whether the server of `stream` chose HTTP/2 by ALPN.
pub fn is_h2(stream: &Stream) -> bool {
    matches!(stream, Stream::Tls(t) if tls::negotiated_h2(t))
}

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
