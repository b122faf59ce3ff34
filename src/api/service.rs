//! `/status/{name}`: one service as in `/status`, plus what the service page shows: its recent
//! results, its events (with how long each state lasted), uptime per day, and its config as
//! checked, secrets left out.

use std::time::SystemTime;

use serde::Serialize;

use super::status::{ServiceDoc, UptimeDoc};
use crate::config::{ProbeKind, Service};
use crate::history::{self, Millis, ServiceHistory};
use crate::probe::Reason;
use crate::snapshot::{Snapshot, State};

/// Days of daily uptime on the service page.
pub(super) const DAYS: u32 = 30;

#[derive(Serialize)]
pub(super) struct ServiceDetail<'a> {
    #[serde(flatten)]
    service: ServiceDoc<'a>,
    /// The latest results, oldest first (at most [`history::RECENT`]).
    history: Vec<ResultDoc>,
    /// State changes, newest first (the latest 500).
    events: Vec<EventDoc>,
    /// Uptime per UTC day, oldest first, `null` for days nothing was known.
    daily_uptime: Vec<DayDoc>,
    config: ConfigView<'a>,
}

#[derive(Serialize)]
pub(super) struct ResultDoc {
    pub(super) at: crate::timestamp::Rfc3339,
    pub(super) state: State,
    pub(super) reason: Option<Reason>,
    pub(super) duration_seconds: f64,
}

impl ResultDoc {
    pub(super) fn new(r: history::Result) -> Self {
        let v = r.verdict();
        ResultDoc {
            at: crate::timestamp::UnixTime::from_system(r.at()).rfc3339(),
            state: v.state(),
            reason: v.reason(),
            duration_seconds: r.latency().as_secs_f64(),
        }
    }
}

#[derive(Serialize)]
struct EventDoc {
    at: crate::timestamp::Rfc3339,
    from: State,
    to: State,
    reason: Option<Reason>,
    error: Option<Box<str>>,
    /// How long the state it entered lasted; for the latest event, until now.
    lasted_seconds: f64,
    /// Whether it still holds.
    current: bool,
}

#[derive(Serialize)]
struct DayDoc {
    day: String,
    uptime: Option<f64>,
}

/// How the service is checked, as the page shows it. Header values, the request body and URL
/// credentials may be secrets: only header names, the body's size, the redacted URL.
#[derive(Serialize)]
struct ConfigView<'a> {
    kind: &'static str,
    method: &'a str,
    url: &'a str,
    timeout_seconds: f64,
    max_latency_seconds: Option<f64>,
    failure_threshold: u32,
    success_threshold: u32,
    follow_redirects: u8,
    connection: &'static str,
    resolver: &'static str,
    ip_family: &'static str,
    header_names: Vec<&'a str>,
    body_bytes: Option<usize>,
    expect_status: Vec<String>,
    expect_body_contains: bool,
    expect_body_regex: Option<&'a str>,
    expect_json: Vec<&'a str>,
    tls_server_name: Option<&'a str>,
    grpc_service: Option<&'a str>,
    depends_on: Vec<&'a str>,
}

impl<'a> ConfigView<'a> {
    fn new(s: &'a Service) -> Self {
        ConfigView {
            kind: match s.kind {
                ProbeKind::Http => "http",
                ProbeKind::Tcp => "tcp",
                ProbeKind::Dns => "dns",
                ProbeKind::Grpc => "grpc",
            },
            method: s.method.as_str(),
            url: s.redacted_url(),
            timeout_seconds: s.timeout.as_secs_f64(),
            max_latency_seconds: s.extra.max_latency.map(|d| d.as_secs_f64()),
            failure_threshold: s.failure_threshold,
            success_threshold: s.success_threshold,
            follow_redirects: s.follow_redirects,
            connection: s.connection.as_str(),
            resolver: s.resolver.as_str(),
            ip_family: s.ip_family.as_str(),
            header_names: s.extra.headers.iter().map(|(n, _)| n.as_str()).collect(),
            body_bytes: s.extra.body.as_ref().map(|b| b.len()),
            expect_status: s.expect.status.iter().map(|m| m.to_string()).collect(),
            // Whether one is set, not what it is: an expected body may hold a token.
            expect_body_contains: s.expect.body_contains.is_some(),
            expect_body_regex: s.expect.body_regex.as_ref().map(|r| r.as_str()),
            expect_json: s.expect.json.iter().map(|(p, _)| p.as_str()).collect(),
            tls_server_name: s.extra.server_name.as_deref(),
            grpc_service: s.extra.grpc_service.as_deref(),
            depends_on: s
                .extra
                .depends_on
                .iter()
                .flat_map(|d| d.names.iter().map(|n| &**n))
                .collect(),
        }
    }
}

impl<'a> ServiceDetail<'a> {
    pub(super) fn new(
        snapshot: &'a Snapshot,
        i: usize,
        maintenance: Option<super::status::MaintenanceDoc>,
        excluded: &[(i64, i64)],
        h: Option<&ServiceHistory>,
        now: SystemTime,
    ) -> Self {
        let now_ms = history::millis(now);
        let events = h.map(|h| events(h.events(), now_ms)).unwrap_or_default();
        ServiceDetail {
            service: ServiceDoc::new(snapshot, i, UptimeDoc::of(h, now_ms, excluded), maintenance),
            history: h
                .map(|h| h.recent().map(ResultDoc::new).collect())
                .unwrap_or_default(),
            events,
            daily_uptime: h
                .map(|h| h.daily(now_ms, DAYS, excluded))
                .unwrap_or_default()
                .into_iter()
                .map(|(day, uptime)| DayDoc {
                    day: crate::timestamp::rfc3339(history::system_time(day))[..10].to_string(),
                    uptime: uptime.map(|u| (u * 1e6).round() / 1e6),
                })
                .collect(),
            config: ConfigView::new(&snapshot.services[i].service),
        }
    }
}

/// Events shown at most (the latest).
const EVENTS_SHOWN: usize = 500;

fn events(events: &[history::Event], now: Millis) -> Vec<EventDoc> {
    events
        .iter()
        .enumerate()
        .rev()
        .take(EVENTS_SHOWN)
        .map(|(i, e)| {
            let end = events.get(i + 1).map_or(now, |n| n.at);
            EventDoc {
                at: crate::timestamp::UnixTime::from_system(history::system_time(e.at)).rfc3339(),
                from: e.from,
                to: e.to,
                reason: e.reason,
                error: e.error.clone(),
                lasted_seconds: end.saturating_sub(e.at).max(0) as f64 / 1000.0,
                current: i + 1 == events.len(),
            }
        })
        .collect()
}
