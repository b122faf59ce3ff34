//! The [`Validator`]: turns the raw TOML into a [`Config`], collecting every problem with its
//! file, line and service instead of stopping at the first. Each section's rules live beside
//! it: `daemon` ([daemon]), `check` (check options, [defaults]), `service` ([[service]]),
//! `secrets`, `files` (services_dir).

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::HeaderMap;
use toml::Spanned;

use super::raw::RawConfig;
use super::{
    CheckOptions, Config, DEFAULT_CONNECTION, DEFAULT_MAX_BODY_BYTES, DEFAULT_RESOLVER, Env,
    Expect, IpFamily, LineIndex, Problem, SourceFile, Sources, StatusMatcher, TlsClient,
    TlsOptions, TlsSettings, files,
};

/// Shortest sweep interval. Below it a daemon would spend its CPU sweeping (`"1ns"` ran 221,003
/// sweeps in 3 s at 75 % CPU) and a fleet could not be checked before the next sweep anyway.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest sweep interval: a day. Longer is a typo (and overflowed the clock before it was
/// bounded: `"300000000000y"` panicked the sweeper).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest check `timeout` and `max_latency`: an hour; every check is cut by the sweep
/// deadline anyway, so anything longer only hides a typo.
pub const MAX_CHECK_DURATION: Duration = Duration::from_secs(3600);
/// Longest `interval` of a service: an hour. A check rarer than that is not monitoring, and the
/// status page's strip of recent results would span days.
pub const MAX_SERVICE_INTERVAL: Duration = Duration::from_secs(3600);

/// The duration keys, each with its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DurationKey {
    Interval,
    /// A service's own `interval`.
    ServiceInterval,
    Deadline,
    Timeout,
    MaxLatency,
    /// A discovery source's `refresh`.
    Refresh,
    HistoryRetention,
}

impl DurationKey {
    fn name(self) -> &'static str {
        match self {
            DurationKey::Interval | DurationKey::ServiceInterval => "interval",
            DurationKey::Deadline => "deadline",
            DurationKey::Timeout => "timeout",
            DurationKey::MaxLatency => "max_latency",
            DurationKey::Refresh => "refresh",
            DurationKey::HistoryRetention => "history_retention",
        }
    }

    /// The shortest and longest value accepted.
    fn bounds(self) -> (Duration, Duration) {
        match self {
            DurationKey::Interval => (MIN_INTERVAL, MAX_INTERVAL),
            DurationKey::ServiceInterval => (MIN_INTERVAL, MAX_SERVICE_INTERVAL),
            DurationKey::Deadline => (Duration::from_millis(1), MAX_INTERVAL),
            DurationKey::Timeout | DurationKey::MaxLatency => {
                (Duration::from_millis(1), MAX_CHECK_DURATION)
            }
            DurationKey::Refresh => (Duration::from_secs(1), MAX_INTERVAL),
            DurationKey::HistoryRetention => (
                Duration::from_secs(86_400),
                Duration::from_secs(400 * 86_400),
            ),
        }
    }

    fn why(self) -> &'static str {
        match self {
            DurationKey::Interval => " (shorter would spend the CPU on sweeping)",
            DurationKey::ServiceInterval => " (and a whole multiple of [daemon] interval)",
            DurationKey::Deadline => " (and at most the interval)",
            DurationKey::Timeout | DurationKey::MaxLatency => {
                " (a check is cut by the sweep deadline anyway)"
            }
            DurationKey::Refresh => {
                " (files are also watched; DNS and HTTP are asked every refresh)"
            }
            DurationKey::HistoryRetention => " (the status page shows 30 days)",
        }
    }
}

/// Collects problems while turning raw values into typed ones. On a bad value it records the
/// problem and carries on with a placeholder, so that every problem is found in one pass.
pub(super) struct Validator<'a> {
    /// Every file read: the main file first, then the files of `services_dir`.
    pub(super) files: Vec<SourceText<'a>>,
    /// Index in `files` of the file being validated, named in every problem.
    pub(super) current: usize,
    /// Relative file names in the config (token, certificate, header files) are relative to
    /// the directory of the file being validated.
    pub(super) base_dir: PathBuf,
    /// The service being validated, named in every problem.
    pub(super) service: Option<String>,
    pub(super) problems: Vec<Problem>,
    /// TLS clients built so far: services with the same TLS options share one.
    pub(super) tls_clients: HashMap<TlsOptions, Arc<TlsClient>>,
    /// Where `${NAME}` in header values and URL passwords takes its value.
    pub(super) env: Env<'a>,
    /// `[daemon] interval`, once read: a service's `interval` is a multiple of it.
    pub(super) sweep_interval: Duration,
    /// The running config's services, for a reload to take the unchanged ones from.
    pub(super) reuse: super::reuse::Reuse,
    /// The digest of the current file's text outside its service tables (see `reuse`);
    /// `None` while its services may not be reused.
    pub(super) context: Option<super::reuse::Key>,
}

/// A file the validator reads, and its line starts to locate spans with.
pub(super) struct SourceText<'a> {
    pub(super) path: PathBuf,
    pub(super) lines: LineIndex<'a>,
}

impl Validator<'_> {
    pub(super) fn report(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        let file = &self.files[self.current];
        self.problems.push(Problem {
            // `None` for the main file, which `ConfigError::Invalid` names already.
            file: (self.current > 0).then(|| file.path.clone()),
            location: span.map(|s| file.lines.locate(s.start)),
            service: self.service.clone(),
            message: message.into(),
        });
    }

    pub(super) fn config(&mut self, raw: RawConfig, dir: Option<&files::ServicesDir>) -> Config {
        let daemon = self.daemon(raw.daemon);
        self.sweep_interval = daemon.interval;
        let builtin = CheckOptions {
            method: Method::GET,
            headers: HeaderMap::new(),
            timeout: daemon.deadline,
            expect: Arc::new(Expect {
                status: vec![StatusMatcher::Class(2)],
                ..Expect::default()
            }),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connection: DEFAULT_CONNECTION,
            resolver: DEFAULT_RESOLVER,
            max_latency: None,
            body: None,
            follow_redirects: 0,
            ip_family: IpFamily::Any,
            failure_threshold: 1,
            success_threshold: 1,
            tls: TlsSettings::default(),
            dns: super::dns_check::DnsOptions::default(),
            grpc_service: None,
            depends_on: None,
            every: 1,
        };
        // `${NAME}` or a header file in the defaults reaches every service: none is reused.
        let defaults_read_outside = raw.defaults.header_files.is_some()
            || raw
                .defaults
                .headers
                .as_ref()
                .is_some_and(|h| h.get_ref().values().any(|v| super::reuse::reads_outside(v)));
        let defaults = self.check_options(raw.defaults, &builtin);
        let main_text = self.files[0].lines.text();
        let spans: Vec<Range<usize>> = raw.services.iter().map(Spanned::span).collect();
        let tables = super::reuse::tables(main_text, &spans);
        self.context = tables
            .as_ref()
            .filter(|_| !defaults_read_outside)
            .map(|t| super::reuse::context(main_text, t, 0));
        let tables = tables.unwrap_or_else(|| spans.clone());
        let main_context = self.context;

        // Name -> file and byte offset of its first table; turned into a line only for a
        // duplicate.
        let mut seen =
            files::Seen::with_capacity_and_hasher(raw.services.len(), Default::default());
        let mut services = Vec::with_capacity(raw.services.len());
        let mut sources = Sources {
            services_dir: None,
            files: vec![SourceFile {
                path: self.files[0].path.clone(),
                services: raw.services.len(),
            }],
        };
        for (table, extent) in raw.services.into_iter().zip(tables) {
            if let Some(service) = self.service_table(table, extent, &defaults, &mut seen) {
                services.push(service);
            }
        }
        if let Some(dir) = dir {
            self.services_dir(
                dir,
                &defaults,
                main_context,
                &mut seen,
                &mut services,
                &mut sources,
            );
        }
        self.context = None;
        self.current = 0;
        let discover = self.discovers(raw.discover, &defaults);
        self.dependencies(&services, &discover);
        let maintenance = self.maintenance(raw.maintenance);
        Config {
            maintenance,
            daemon,
            fleet_size: services.len(),
            services,
            sources,
            discover,
        }
    }
}

impl Validator<'_> {
    /// Parses a duration such as `"200ms"`, `"5s"` or `"1m"` for `key`, within the key's
    /// [`DurationKey::bounds`].
    pub(super) fn duration(&mut self, key: DurationKey, v: &Spanned<String>) -> Option<Duration> {
        let name = key.name();
        let (min, max) = key.bounds();
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.report(Some(&v.span()), format!("{name} must be greater than zero"));
                None
            }
            Ok(d) if d < min || d > max => {
                self.report(
                    Some(&v.span()),
                    format!(
                        "{name} = {:?} must be between {} and {}{}",
                        v.get_ref(),
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        key.why()
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.report(
                    Some(&v.span()),
                    format!(
                        "{name} = {:?} is not a duration ({e}); write e.g. \"200ms\", \"5s\", \"1m\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }
}
