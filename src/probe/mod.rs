//! Checking one service: the [`Outcome`] of a check and the [`Prober`] that produces it.
//!
//! A failing service is data, never an error: every check returns an [`Outcome`], whose
//! [`Reason`] comes from a closed set so it can be a metric label and an alert condition.
//! Each probe kind lives in a file of its own behind the same function shape
//! (`check(prober, service, deadline) -> Outcome`).

mod dns;
mod dns_query;
mod expect;
mod grpc;
mod h2conn;
mod http;
mod http1;
mod http2;
mod net;
mod pool;
mod progress;
mod redirect;
mod request;
mod tcp;
mod tls;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{ProbeKind, Service, TlsClient, TlsOptions};

pub use http::Fetched;
pub use progress::{Bounded, Failure};
pub use tls::TlsFacts;

/// Why a check failed. A closed set: each is a metric label value and a documented meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection could be made (refused, unreachable).
    Connect,
    /// The TLS handshake failed (a protocol error, an alert from the server such as a missing
    /// client certificate, or the peer is not speaking TLS).
    TlsHandshake,
    /// The server's certificate (or one in its chain) has expired or is not valid yet.
    TlsCertExpired,
    /// The server's certificate does not chain to a trusted CA.
    TlsUnknownIssuer,
    /// The server's certificate is not valid for the name checked.
    TlsHostnameMismatch,
    /// The check's own `timeout` ran out.
    Timeout,
    /// The sweep deadline arrived before the check finished (or started).
    DeadlineExceeded,
    /// The peer closed or reset the connection before a complete response.
    ConnectionClosed,
    /// What came back is not valid HTTP (garbage, oversized header block).
    InvalidResponse,
    /// The status code is not one of `expect_status`.
    HttpStatus,
    /// The body does not satisfy `expect_json` / `expect_body_contains`.
    BodyMismatch,
    /// The body is longer than `max_body_bytes`.
    BodyTooLarge,
    /// A response header in `expect_header` is missing or has another value.
    HeaderMismatch,
    /// More redirects than `follow_redirects` allows (a redirect loop, say).
    TooManyRedirects,
    /// A `dns://` answer's response code is not one of `expect_rcode`.
    DnsRcode,
    /// A `dns://` answer has no record of the type asked for.
    DnsNoAnswer,
    /// A `dns://` answer's records do not match `expect_answer`.
    DnsAnswerMismatch,
    /// The gRPC health check answered NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN.
    GrpcNotServing,
    /// The gRPC server does not know `grpc_service` (NOT_FOUND).
    GrpcServiceUnknown,
    /// The gRPC server has no health service (UNIMPLEMENTED).
    GrpcUnimplemented,
    /// Any other gRPC status than OK (or an HTTP status other than 200).
    GrpcStatus,
}

impl Reason {
    /// Every reason, in a stable order (for docs and exhaustive tests).
    pub const ALL: [Reason; 22] = [
        Reason::Dns,
        Reason::Connect,
        Reason::TlsHandshake,
        Reason::TlsCertExpired,
        Reason::TlsUnknownIssuer,
        Reason::TlsHostnameMismatch,
        Reason::Timeout,
        Reason::DeadlineExceeded,
        Reason::ConnectionClosed,
        Reason::InvalidResponse,
        Reason::HttpStatus,
        Reason::BodyMismatch,
        Reason::BodyTooLarge,
        Reason::HeaderMismatch,
        Reason::TooManyRedirects,
        Reason::DnsRcode,
        Reason::DnsNoAnswer,
        Reason::DnsAnswerMismatch,
        Reason::GrpcNotServing,
        Reason::GrpcServiceUnknown,
        Reason::GrpcUnimplemented,
        Reason::GrpcStatus,
    ];

    /// Position in [`Reason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|&r| r == self)
            .expect("every reason is in ALL")
    }

    /// The label value, as in `/status` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::TlsHandshake => "tls_handshake",
            Reason::TlsCertExpired => "tls_cert_expired",
            Reason::TlsUnknownIssuer => "tls_unknown_issuer",
            Reason::TlsHostnameMismatch => "tls_hostname_mismatch",
            Reason::Timeout => "timeout",
            Reason::DeadlineExceeded => "deadline_exceeded",
            Reason::ConnectionClosed => "connection_closed",
            Reason::InvalidResponse => "invalid_response",
            Reason::HttpStatus => "http_status",
            Reason::BodyMismatch => "body_mismatch",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeaderMismatch => "header_mismatch",
            Reason::TooManyRedirects => "too_many_redirects",
            Reason::DnsRcode => "dns_rcode",
            Reason::DnsNoAnswer => "dns_no_answer",
            Reason::DnsAnswerMismatch => "dns_answer_mismatch",
            Reason::GrpcNotServing => "grpc_not_serving",
            Reason::GrpcServiceUnknown => "grpc_service_unknown",
            Reason::GrpcUnimplemented => "grpc_unimplemented",
            Reason::GrpcStatus => "grpc_status",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of checking one service once.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `None` when the check passed.
    pub reason: Option<Reason>,
    /// The response status, when a response arrived.
    pub http_status: Option<u16>,
    /// When the check started (wall clock).
    pub at: SystemTime,
    /// How long the check took.
    pub duration: Duration,
    /// A short explanation when the check failed.
    pub error: Option<Box<str>>,
    /// Whether the check ran on a connection kept from an earlier check.
    pub reused_connection: bool,
    /// Passed, but slower than the service's `max_latency`.
    pub degraded: bool,
    /// The HTTP version of the (last) response.
    pub http_version: Option<HttpVersion>,
    /// Redirects followed.
    pub redirects: u8,
    /// What the TLS handshake showed (certificate expiry), when there was one. Boxed: most
    /// outcomes have none, and a snapshot holds one outcome per service.
    pub tls: Option<Arc<TlsFacts>>,
    /// What a `dns://` query's answer said, when one came.
    pub dns: Option<Arc<DnsFacts>>,
    /// What a gRPC health check's answer said, when one came.
    pub grpc: Option<Arc<GrpcFacts>>,
}

/// What a gRPC health check's answer said.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcFacts {
    /// The gRPC status code (0 OK, 5 NOT_FOUND, 12 UNIMPLEMENTED, ...).
    pub status_code: u32,
    /// The serving status in an OK answer (0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3
    /// SERVICE_UNKNOWN).
    pub serving_status: Option<u64>,
    /// `grpc-message`, decoded.
    pub message: Option<Box<str>>,
}

impl GrpcFacts {
    /// The serving status by name, as in `/status` and the metric's label.
    pub fn serving_name(&self) -> Option<&'static str> {
        self.serving_status.map(|s| {
            grpc::SERVING_STATUSES
                .get(s as usize)
                .copied()
                .unwrap_or("UNKNOWN")
        })
    }
}

/// What a `dns://` check's answer said.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsFacts {
    /// The response code, as named in `expect_rcode` (`NOERROR`, `NXDOMAIN`, ...).
    pub rcode: &'static str,
    /// Records in the answer section (of any type: a CNAME chain counts).
    pub answer_rrs: usize,
    /// The data of the answer records of the type asked for, as text; at most
    /// [`MAX_DNS_ANSWERS_SHOWN`] of them, each cut at 256 bytes.
    pub answers: Vec<Box<str>>,
    /// From sending the query to its answer (over TCP too when the UDP answer was truncated).
    pub lookup: Duration,
    /// Whether the answer came over TCP.
    pub tcp: bool,
}

/// Answers kept per `dns://` outcome for `/status`.
pub const MAX_DNS_ANSWERS_SHOWN: usize = 16;

/// An HTTP version a response came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl HttpVersion {
    /// As in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "1.0",
            HttpVersion::Http11 => "1.1",
            HttpVersion::Http2 => "2",
        }
    }

    /// As blackbox_exporter's `probe_http_version`.
    pub fn as_f64(self) -> f64 {
        match self {
            HttpVersion::Http10 => 1.0,
            HttpVersion::Http11 => 1.1,
            HttpVersion::Http2 => 2.0,
        }
    }
}

impl Outcome {
    /// Whether the check passed.
    pub fn ok(&self) -> bool {
        self.reason.is_none()
    }

    /// A passed outcome, without anything a response would add.
    pub fn passed(at: SystemTime, duration: Duration) -> Self {
        Outcome {
            reason: None,
            http_status: None,
            at,
            duration,
            error: None,
            reused_connection: false,
            degraded: false,
            http_version: None,
            redirects: 0,
            tls: None,
            dns: None,
            grpc: None,
        }
    }

    /// A failed outcome.
    pub fn failed(
        reason: Reason,
        at: SystemTime,
        duration: Duration,
        error: impl Into<String>,
    ) -> Self {
        Outcome {
            reason: Some(reason),
            http_status: None,
            at,
            duration,
            error: Some(truncate(error.into()).into_boxed_str()),
            reused_connection: false,
            degraded: false,
            http_version: None,
            redirects: 0,
            tls: None,
            dns: None,
            grpc: None,
        }
    }
}

/// Error messages end up in JSON and logs for every failing service: keep them short.
const MAX_ERROR_LEN: usize = 300;

fn truncate(s: String) -> String {
    truncate_to(s, MAX_ERROR_LEN)
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn truncate_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(prefix_len(&s, max));
        s.push('…');
    }
    s
}

/// The length of the longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn prefix_len(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Runs checks. One per daemon, shared by every sweep: it holds what outlives a check (the
/// connection budget and idle connections, the TLS trust roots) so a check never rebuilds it.
pub struct Prober {
    /// The default TLS client (system roots, offering HTTP/2), for the one request that has no
    /// client of its own: an `http://` service redirected to `https://`. Every TLS service has
    /// its own, built when the config is loaded.
    tls_default: tokio::sync::OnceCell<Arc<TlsClient>>,
    pool: pool::Pool,
    /// Built on first use: a fleet of IP addresses never needs it.
    async_resolver: OnceLock<dns::Resolver>,
    /// getaddrinfo on threads of its own, started on first use.
    system_resolver: dns::Resolver,
    /// Bounds lookups in flight (see [`dns::MAX_CONCURRENT_LOOKUPS`]).
    lookups: tokio::sync::Semaphore,
    /// The endpoints of the config in use, for [`Prober::tidy`].
    used: std::sync::Mutex<Option<Used>>,
    /// HTTP/2 connections shared by the gRPC checks of each connection shape.
    h2: h2conn::Connections,
}

/// The config in use and how many of its services use each endpoint: a change is counted in
/// by what it changed (a discovery refresh of 1 % of 100,000 services hashes 2,000 shapes, not
/// 100,000).
struct Used {
    config: Arc<crate::config::Config>,
    endpoints: foldhash::HashMap<pool::Endpoint, usize>,
}

/// How many of `services` use each endpoint.
fn count_endpoints(services: &[Arc<Service>]) -> foldhash::HashMap<pool::Endpoint, usize> {
    let mut endpoints = foldhash::HashMap::default();
    for s in services {
        *endpoints.entry(endpoint_of(s)).or_default() += 1;
    }
    endpoints
}

/// The endpoint of a service's own connections.
fn endpoint_of(s: &Service) -> pool::Endpoint {
    pool::Endpoint::of(&pool::Shape::of(s, &s.target, true, s.tls.as_deref()))
}

impl Prober {
    /// A prober that keeps at most `connection_budget` connections open at once (in use or
    /// idle): the descriptors the daemon may spend on checks.
    pub fn new(connection_budget: usize) -> Self {
        Prober {
            tls_default: tokio::sync::OnceCell::new(),
            pool: pool::Pool::new(connection_budget),
            async_resolver: OnceLock::new(),
            system_resolver: dns::Resolver::new(crate::config::ResolverKind::System),
            lookups: tokio::sync::Semaphore::new(dns::MAX_CONCURRENT_LOOKUPS),
            used: std::sync::Mutex::new(None),
            h2: h2conn::Connections::default(),
        }
    }

    /// Takes note of the endpoints (and connection shapes) the services of `config` use, and
    /// closes idle connections of any other (after a reload).
    pub fn use_config(&self, config: &Arc<crate::config::Config>) {
        let previous = self.used.lock().unwrap_or_else(|e| e.into_inner()).take();
        let endpoints = match previous {
            Some(Used {
                config: old,
                mut endpoints,
            }) => {
                let a = crate::config::align(&old.services, &config.services, |s| s);
                let kept = a.found.iter().filter(|f| f.is_some()).count();
                if kept < config.services.len() / 2 {
                    // A reload makes every service anew: counting them all is cheaper.
                    count_endpoints(&config.services)
                } else {
                    let gone = old.services.iter().zip(&a.claimed).filter(|(_, c)| !**c);
                    for (s, _) in gone {
                        if let std::collections::hash_map::Entry::Occupied(mut e) =
                            endpoints.entry(endpoint_of(s))
                        {
                            *e.get_mut() -= 1;
                            if *e.get() == 0 {
                                e.remove();
                            }
                        }
                    }
                    let new = config
                        .services
                        .iter()
                        .zip(&a.found)
                        .filter(|(_, f)| f.is_none());
                    for (s, _) in new {
                        *endpoints.entry(endpoint_of(s)).or_default() += 1;
                    }
                    endpoints
                }
            }
            None => count_endpoints(&config.services),
        };
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(Used {
            config: config.clone(),
            endpoints,
        });
        self.tidy();
    }

    /// Closes idle connections no service will take again: of shapes the config in use has
    /// none of (put back by a sweep that straddled a reload, or to a redirect's target), and
    /// those past the pool's age limit. The sweeper calls it after every sweep.
    pub fn tidy(&self) {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        match &*used {
            Some(used) => {
                self.pool.retain(|e| used.endpoints.contains_key(&e));
                self.h2.retain(|e| used.endpoints.contains_key(&e));
            }
            None => self.pool.retain(|_| true),
        }
    }

    /// Idle connections kept for reuse right now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle() + self.h2.open_count()
    }

    /// A live count of idle connections, for `/metrics`.
    pub fn idle_gauge(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.pool.idle_gauge()
    }

    /// Checks `service` once. The check ends by `deadline` (the sweep's) at the latest, or by its
    /// own timeout if that comes first. The sweep deadline holds no timer (see [`Bounded`]): the
    /// caller polls the check once more at `deadline`, as the sweep's lanes do.
    pub async fn check(&self, service: &Service, deadline: Instant) -> Outcome {
        // The other kinds boxed: a check's future is as large as its largest variant for its
        // whole life, and most fleets are HTTP; with all four inline every HTTP check in flight
        // carried the DNS probe's 2.5 KB instead of its own 1.9 KB.
        match service.kind {
            ProbeKind::Http => http::check(self, service, deadline).await,
            ProbeKind::Tcp => Box::pin(tcp::check(self, service, deadline)).await,
            ProbeKind::Dns => Box::pin(dns_query::check(self, service, deadline)).await,
            ProbeKind::Grpc => Box::pin(grpc::check(self, service, deadline)).await,
        }
    }

    /// GETs `service` once and returns what came back (status, content type, body), within its
    /// timeout: for an http_sd endpoint, whose answer is data rather than a verdict.
    pub async fn fetch(&self, service: &Service) -> Result<http::Fetched, Failure> {
        http::fetch(self, service).await
    }

    /// The addresses of `host` (with `port`) by the resolver of `kind`.
    async fn resolve(
        &self,
        kind: crate::config::ResolverKind,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, String> {
        let turn = self
            .lookups
            .acquire()
            .await
            .expect("the lookup semaphore is never closed");
        let resolver = match kind {
            crate::config::ResolverKind::System => &self.system_resolver,
            crate::config::ResolverKind::Async => {
                self.async_resolver.get_or_init(|| dns::Resolver::new(kind))
            }
        };
        let lookup = resolver.lookup(host, port);
        tokio::pin!(lookup);
        tokio::select! {
            r = &mut lookup => return r,
            () = tokio::time::sleep(dns::SLOW_LOOKUP) => {}
        }
        drop(turn);
        lookup.await
    }

    /// The TLS client for a TLS connection of `service`: its own, or (for an `http://` service
    /// redirected to `https://`) the default one, built on first use off the async threads:
    /// reading the system's CA roots takes milliseconds of CPU.
    async fn tls(&self, service: &Service) -> Result<Arc<TlsClient>, progress::Failure> {
        if let Some(own) = &service.tls {
            return Ok(own.clone());
        }
        let build = || {
            let options = TlsOptions {
                alpn_http: true,
                ..TlsOptions::default()
            };
            crate::config::tls_build(&options).map(Arc::new)
        };
        self.tls_default
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(build)
                    .await
                    .unwrap_or_else(|_| build())
            })
            .await
            .cloned()
            .map_err(|e| progress::Failure::new(Reason::TlsHandshake, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hosts: &[&str]) -> Arc<crate::config::Config> {
        let src: String = hosts
            .iter()
            .map(|h| format!("[[service]]\nname = \"{h}\"\nurl = \"http://{h}/health\"\n"))
            .collect();
        Arc::new(crate::config::test_support::parse_str(&src).expect("valid"))
    }

    fn counted(p: &Prober) -> foldhash::HashMap<pool::Endpoint, usize> {
        let used = p.used.lock().expect("lock");
        used.as_ref().expect("a config in use").endpoints.clone()
    }

    #[test]
    fn endpoints_counted_by_the_change_are_those_counted_afresh() {
        let p = Prober::new(10);
        let first = config(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.2:81", "10.0.0.3:80"]);
        p.use_config(&first);
        // Keep the same services (the same `Arc`s, as discovery does), drop one, add two.
        let mut c = (*first).clone();
        let added = config(&["10.0.0.4:80", "10.0.0.1:80"]);
        c.services.remove(1);
        c.services.push(added.services[0].clone());
        c.services.insert(0, added.services[1].clone());
        let changed = Arc::new(c);
        p.use_config(&changed);
        let fresh = Prober::new(10);
        fresh.use_config(&changed);
        assert_eq!(counted(&p), counted(&fresh));
        assert_eq!(counted(&p).values().sum::<usize>(), 5);
        assert_eq!(
            counted(&p)[&endpoint_of(&changed.services[0])],
            2,
            "two services on 10.0.0.1:80"
        );
    }

    #[test]
    fn reason_labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(seen.insert(s), "duplicate {s}");
            assert_eq!(
                serde_json::to_value(r).expect("serializes"),
                serde_json::json!(s)
            );
        }
    }

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(400);
        let t = truncate(long);
        assert!(t.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short".into()), "short");
    }
}
