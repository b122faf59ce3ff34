//! The TCP probe (`tcp://host:port`): a connection, and with `tls = true` a TLS handshake;
//! nothing is sent. Passes when the service accepts connections (and presents a certificate
//! that verifies).

use tokio::time::Instant;

use super::progress::{Clock, Failure, Phase, Progress};
use super::{Outcome, Prober, net, tls};
use crate::config::Service;

/// Checks `svc` once; over by `sweep_deadline` or by its own timeout, whichever is first.
pub(super) async fn check(prober: &Prober, svc: &Service, sweep_deadline: Instant) -> Outcome {
    let progress = Progress::default();
    let clock = Clock::start(svc, sweep_deadline);
    let result = clock.bound(attempt(prober, svc, &progress)).await;
    clock.outcome(svc, &progress, result)
}

async fn attempt(prober: &Prober, svc: &Service, progress: &Progress) -> Result<(), Failure> {
    let (tcp, _slot) = net::connect(prober, svc, &svc.target, progress).await?;
    if svc.target.tls {
        progress.enter(Phase::Tls);
        let name = svc.extra.server_name.as_deref().unwrap_or(&svc.target.host);
        let client = prober.tls(svc).await?;
        let (_stream, facts) = Box::pin(tls::handshake(&client.config, name, tcp)).await?;
        progress.tls(facts);
    }
    Ok(())
}
