//! `[daemon]`, `[daemon.auth]` and `[daemon.tls]`: how the process runs, validated.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use toml::Spanned;

use super::raw::{RawAuth, RawDaemon, RawTls};
use super::{Auth, Daemon, DurationKey, Protected, ServerTls, Validator, access};
use crate::shard::Shard;

/// Upper bound for `max_in_flight`: far above any open-file limit, catches typos.
pub(super) const MAX_IN_FLIGHT_LIMIT: i64 = 1_000_000;
impl Validator<'_> {
    pub(super) fn daemon(&mut self, raw: RawDaemon) -> Daemon {
        let mut d = Daemon::default();
        if let Some(listen) = raw.listen {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => d.listen = addr,
                Err(_) => self.report(
                    Some(&listen.span()),
                    format!(
                        "listen = {:?} is not an IP:PORT address (e.g. \"127.0.0.1:9915\")",
                        listen.get_ref()
                    ),
                ),
            }
        }
        if let Some(v) = raw.interval {
            d.interval = self
                .duration(DurationKey::Interval, &v)
                .unwrap_or(d.interval);
        }
        if let Some(v) = &raw.deadline {
            d.deadline = self
                .duration(DurationKey::Deadline, v)
                .unwrap_or(d.deadline);
        }
        if d.deadline > d.interval {
            let span = raw.deadline.as_ref().map(|s| s.span());
            self.report(
                span.as_ref(),
                format!(
                    "deadline ({}) must not be longer than interval ({}): a sweep must end before the next one starts",
                    humantime::format_duration(d.deadline),
                    humantime::format_duration(d.interval)
                ),
            );
        }
        if let Some(v) = raw.max_in_flight {
            match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_IN_FLIGHT_LIMIT).contains(v.get_ref()) => {
                    d.max_in_flight = NonZeroUsize::new(n)
                }
                _ => self.report(
                    Some(&v.span()),
                    format!(
                        "max_in_flight = {} must be between 1 and {MAX_IN_FLIGHT_LIMIT}",
                        v.get_ref()
                    ),
                ),
            }
        }
        if let Some(r) = raw.reload_api {
            d.reload_api = r;
        }
        if let Some(s) = raw.shard {
            match s.get_ref().parse::<Shard>() {
                Ok(shard) => d.shard = shard,
                Err(e) => self.report(Some(&s.span()), e.to_string()),
            }
        }
        if let Some(v) = raw.history_retention {
            d.history_retention = self
                .duration(DurationKey::HistoryRetention, &v)
                .unwrap_or(d.history_retention);
        }
        if let Some(dir) = raw.state_dir {
            if dir.get_ref().trim().is_empty() {
                self.report(
                    Some(&dir.span()),
                    "state_dir must not be empty; leave it out to keep history in memory only",
                );
            } else {
                // Relative to the config file, like every path in it; created at start if
                // missing. Whether it is writable is found out then (and logged, not fatal).
                d.state_dir = Some(access::resolve(&self.base_dir, dir.get_ref()));
            }
        }
        d.auth = raw.auth.and_then(|a| self.auth(a));
        d.tls = raw.tls.and_then(|t| self.server_tls(t));
        d
    }

    /// `[daemon.auth]`: reads the token file now, so a reload rotates the token.
    pub(super) fn auth(&mut self, raw: Spanned<RawAuth>) -> Option<Auth> {
        let RawAuth {
            token_file,
            protect,
        } = raw.into_inner();
        let mut set = BTreeSet::new();
        match &protect {
            None => {
                set.insert(Protected::Reload);
            }
            Some(list) => {
                for name in list.get_ref() {
                    match Protected::parse(name) {
                        Some(p) if set.insert(p) => {}
                        Some(_) => self.report(
                            Some(&list.span()),
                            format!("protect lists {name:?} twice"),
                        ),
                        None => self.report(
                            Some(&list.span()),
                            format!(
                                "protect entry {name:?} is not one of reload, status, metrics (/healthz and /readyz are always open)"
                            ),
                        ),
                    }
                }
                if list.get_ref().is_empty() {
                    self.report(
                        Some(&list.span()),
                        "protect must name at least one of reload, status, metrics; leave out [daemon.auth] for no auth",
                    );
                }
            }
        }
        let path = access::resolve(&self.base_dir, token_file.get_ref());
        let token = match access::read_token(&path) {
            Ok(t) => t,
            Err(e) => {
                self.report(Some(&token_file.span()), e);
                return None;
            }
        };
        Some(Auth {
            token_file: path,
            token,
            protect: set,
        })
    }

    /// `[daemon.tls]`: reads and checks the certificate and key now, so a reload rotates them.
    pub(super) fn server_tls(&mut self, raw: Spanned<RawTls>) -> Option<ServerTls> {
        let RawTls {
            cert_file,
            key_file,
        } = raw.into_inner();
        let cert_path = access::resolve(&self.base_dir, cert_file.get_ref());
        let key_path = access::resolve(&self.base_dir, key_file.get_ref());
        match access::read_server_tls(&cert_path, &key_path) {
            Ok(key) => Some(ServerTls {
                cert_file: cert_path,
                key_file: key_path,
                key: Arc::new(key),
            }),
            Err(e) => {
                let span = if e.starts_with("cert_file") {
                    cert_file.span()
                } else {
                    key_file.span()
                };
                self.report(Some(&span), e);
                None
            }
        }
    }
}
