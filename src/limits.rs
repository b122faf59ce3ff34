//! The process's open-file limit, and the connection budget derived from it.
//!
//! Every connection a check holds (in flight, or idle for reuse) is a descriptor. Thousands of
//! services must never exhaust them, so the budget of connections for checks (and the default
//! bound on checks in flight) comes from the limit, after raising the soft limit as far as the
//! hard limit allows.

/// Connections our HTTP server serves at once. Scrapers and on-call engineers need a handful;
/// the bound keeps a flood of idle connections from taking the descriptors the checks need (the
/// server decides who gives way when it is reached).
pub const SERVER_CONNECTIONS: usize = 256;

/// Connections beyond [`SERVER_CONNECTIONS`] that answer only `/healthz` and `/readyz`, for when
/// every regular one is busy (see `server::limit`), so a liveness probe is never locked out.
pub const SERVER_PROBE_CONNECTIONS: usize = 16;

/// Descriptors kept back from checks: the HTTP server's connections ([`SERVER_CONNECTIONS`] and
/// [`SERVER_PROBE_CONNECTIONS`]),
/// the listener, stdio, log and config files, the runtime's own (epoll, eventfd), with room to
/// spare. Under a small limit a quarter of it is kept back instead, so checks still get most of
/// what there is.
pub const RESERVED_FDS: u64 = (SERVER_CONNECTIONS + SERVER_PROBE_CONNECTIONS) as u64 + 64;

/// Raises the soft open-file limit to the hard limit and returns the soft limit now in force.
///
/// Failing to raise it is not fatal: the daemon carries on with what it has, and says so.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            let current = rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024);
            tracing::warn!(error = %e, limit = current, "could not raise the open-file limit");
            current
        }
    }
}

/// Connections checks may hold at once under an open-file limit of `nofile`: everything not
/// reserved for the daemon itself, and at least a few so tiny limits still make progress. Also
/// the default `max_in_flight`.
pub fn connection_budget(nofile: u64) -> usize {
    let reserve = RESERVED_FDS.min(nofile / 4);
    let usable = nofile.saturating_sub(reserve).max(8);
    usize::try_from(usable).unwrap_or(usize::MAX)
}

/// Checks in flight at once: the config's `max_in_flight`, or else four fifths of the connection
/// budget. The fifth held back is slack for idle connections: when a fleet does not fit in
/// flight at once, a check that finds no idle connection to its endpoint would otherwise close
/// one of another endpoint's to open its own, and that churn cascades (at 100,000 services over
/// a budget of 19,680 only 27% of checks reused a connection without the slack).
pub fn max_in_flight(config: &crate::config::Config, connection_budget: usize) -> usize {
    config
        .daemon
        .max_in_flight
        .map_or((connection_budget * 4 / 5).max(1), |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_for_the_daemon_and_never_reaches_zero() {
        assert_eq!(connection_budget(20_000), 20_000 - RESERVED_FDS as usize);
        assert_eq!(connection_budget(1024), 768);
        assert_eq!(
            connection_budget(256),
            192,
            "a small limit keeps back a quarter"
        );
        assert_eq!(connection_budget(0), 8);
    }
}
