//! The process's open-file limit, and the in-flight bound derived from it.
//!
//! Every check in flight holds a socket. Thousands of services must never exhaust file
//! descriptors, so the default bound on concurrent checks comes from the limit, after raising
//! the soft limit as far as the hard limit allows.

/// Descriptors kept back from checks: the HTTP server's connections (see
/// [`crate::server::MAX_CONNECTIONS`]), the listener, stdio, log and config files, the runtime's
/// own (epoll, eventfd), with room to spare.
pub const RESERVED_FDS: u64 = crate::server::MAX_CONNECTIONS as u64 + 64;

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

/// The default number of checks in flight for an open-file limit of `nofile`: everything not
/// reserved for the daemon itself, and at least a few so tiny limits still make progress.
pub fn default_max_in_flight(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(RESERVED_FDS).max(8);
    usize::try_from(usable).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_room_for_the_daemon_and_never_reaches_zero() {
        assert_eq!(
            default_max_in_flight(20_000),
            20_000 - RESERVED_FDS as usize
        );
        assert_eq!(default_max_in_flight(100), 8);
        assert_eq!(default_max_in_flight(0), 8);
    }
}
