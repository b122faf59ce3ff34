//! An http_sd source: the Prometheus HTTP service-discovery contract. A GET every `refresh`
//! (with `X-Prometheus-Refresh-Interval-Seconds`); only a 200 with `Content-Type:
//! application/json` and a valid body counts, and it is the full list every time. Any failure
//! (status, content type, body, timeout, TLS) keeps the last good list and says why.

use tokio_util::sync::CancellationToken;

use super::Reporter;
use super::groups::{self, Format, TargetGroup};
use crate::config::{Discover, Service, SourceSpec};
use crate::probe::Prober;

pub(super) async fn run(d: &Discover, prober: &Prober, to: &Reporter, stop: &CancellationToken) {
    let SourceSpec::Http(svc) = &d.spec else {
        return;
    };
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = fetch(prober, svc) => r,
        };
        match result {
            Ok(groups) => to.send(d, Some(std::sync::Arc::new(groups)), None).await,
            Err(e) => to.send(d, None, Some(e)).await,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(d.refresh) => {}
        }
    }
}

/// One request, and the groups it answered with, or why there are none.
pub(super) async fn fetch(prober: &Prober, svc: &Service) -> Result<Vec<TargetGroup>, String> {
    let got = prober
        .fetch(svc)
        .await
        .map_err(|f| format!("{}: {}", f.reason, f.message))?;
    if got.status != 200 {
        return Err(format!("status {}, expected 200", got.status));
    }
    let json = got.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(format!(
            "Content-Type {:?}, expected application/json",
            got.content_type.as_deref().unwrap_or("(none)")
        ));
    }
    groups::parse(&got.body, Format::Json).map_err(|e| format!("body is not target groups: {e}"))
}
