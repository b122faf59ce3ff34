//! The status page for people: the HTML shells (`/` for a browser, `/service/{name}`), their
//! script and style (embedded in the binary: data-platform hosts have no internet, so no CDN
//! and no fonts), and `/ui/overview`, the JSON the overview reads: one page of services,
//! filtered and ordered failing first, with their recent results and uptime.

use std::time::SystemTime;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::status::{SummaryDoc, UptimeDoc};
use super::{Api, HttpResponse, error, json_bytes, to_json};
use crate::body::Body;
use crate::history;
use crate::snapshot::{ServiceStatus, Snapshot, State};

const HTML: &str = include_str!("assets/page.html");
const SCRIPT: &str = include_str!("assets/page.js");
const STYLE: &str = include_str!("assets/page.css");

/// What the page's scripts and styles may do: only this daemon, no inline code, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Services per page of the overview unless asked, and at most.
const PER_PAGE: usize = 100;
const MAX_PER_PAGE: usize = 500;

/// Bytes of a service's error shown on the overview (the service page has it whole).
const ERROR_BYTES: usize = 300;

/// Which page a shell is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    Overview,
    Service,
}

/// The HTML shell of `page`; its script fills it from the JSON endpoints.
pub(super) fn shell(page: Page) -> HttpResponse {
    let html = HTML
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
        .replace(
            "{{PAGE}}",
            match page {
                Page::Overview => "overview",
                Page::Service => "service",
            },
        );
    let mut r = Response::new(Body::whole(html.into_bytes()));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// `/assets/{name}`: the embedded script and style, cached (their URLs carry the version).
pub(super) fn asset(name: &str) -> HttpResponse {
    let (body, kind) = match name {
        "page.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "page.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, format!("no such asset: {name}")),
    };
    let mut r = Response::new(Body::whole(body.as_bytes().to_vec()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether the client is a browser asking for a page (`Accept` names `text/html`).
pub(super) fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// The query of `/ui/overview`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct OverviewQuery {
    state: Option<State>,
    group: Option<String>,
    /// A part of the name, case-insensitive.
    name: Option<String>,
    page: usize,
    per_page: usize,
}

impl OverviewQuery {
    pub(super) fn parse(query: &str) -> Result<OverviewQuery, String> {
        let mut q = OverviewQuery {
            per_page: PER_PAGE,
            ..OverviewQuery::default()
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let number = |what: &str| {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{what}={value:?} is not a number"))
            };
            match key.as_ref() {
                "state" if value.is_empty() => {}
                "state" => {
                    q.state = Some(
                        State::ALL
                            .into_iter()
                            .find(|s| s.as_str() == value)
                            .ok_or_else(|| {
                                format!("state={value:?} is not one of up, degraded, down, unknown")
                            })?,
                    )
                }
                "group" => q.group = Some(value.into_owned()).filter(|g| !g.is_empty()),
                "q" => {
                    q.name = Some(value.to_lowercase()).filter(|n| !n.is_empty());
                }
                "page" => q.page = number("page")?.min(1_000_000),
                "per_page" => q.per_page = number("per_page")?.clamp(1, MAX_PER_PAGE),
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}; use state, group, q, page or per_page"
                    ));
                }
            }
        }
        Ok(q)
    }

    fn matches(&self, s: &ServiceStatus) -> bool {
        self.state.is_none_or(|st| s.state == st)
            && self
                .group
                .as_deref()
                .is_none_or(|g| s.service.extra.group.as_deref() == Some(g))
            && self
                .name
                .as_deref()
                .is_none_or(|n| contains_lowercase(&s.service.name, n))
    }
}

/// Whether `haystack`, lower-cased, contains `needle` (already lower-case), without a copy for
/// ASCII names.
fn contains_lowercase(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

/// Failing first: down, degraded, unknown, up.
fn rank(s: State) -> u8 {
    match s {
        State::Down => 0,
        State::Degraded => 1,
        State::Unknown => 2,
        State::Up => 3,
    }
}

#[derive(Serialize)]
struct OverviewDoc<'a> {
    /// The daemon's clock when it answered: the page compares the sweep's time with this, not
    /// with the browser's clock.
    now: crate::timestamp::Rfc3339,
    generation: u64,
    interval_seconds: f64,
    deadline_seconds: f64,
    sweep: Option<SweepBrief>,
    summary: SummaryDoc,
    groups: Vec<&'a str>,
    /// Services the filters keep (all pages).
    matching: usize,
    page: usize,
    per_page: usize,
    services: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct SweepBrief {
    number: u64,
    finished_at: crate::timestamp::Rfc3339,
}

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    group: Option<&'a str>,
    state: State,
    since: crate::timestamp::Rfc3339,
    /// Whether it has been checked since the daemon started.
    checked: bool,
    reason: Option<crate::probe::Reason>,
    error: Option<&'a str>,
    latency_seconds: Option<f64>,
    /// The states of the latest results, oldest first.
    recent: Vec<State>,
    /// 24 h, 7 d, 30 d, maintenance time left out.
    uptime: [Option<f64>; history::WINDOWS.len()],
    /// When the maintenance window it is in ends, if it is in one.
    maintenance_until: Option<crate::timestamp::Rfc3339>,
    /// Its down dependencies.
    blocked_by: Vec<&'a str>,
}

/// `/ui/overview`.
pub(super) fn overview(api: &Api, query: &str) -> HttpResponse {
    match overview_body(&api.snapshot(), &api.history, &api.windows, query) {
        Ok(body) => json_bytes(StatusCode::OK, body),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The `/ui/overview` document, or what is wrong with the query.
pub(super) fn overview_body(
    snapshot: &Snapshot,
    history: &history::Shared,
    windows: &crate::maintenance::Windows,
    query: &str,
) -> Result<Vec<u8>, String> {
    let q = OverviewQuery::parse(query)?;
    let now = history::millis(SystemTime::now());
    let view = crate::maintenance::View::at(snapshot, windows, now);
    let exclusions = crate::maintenance::Exclusions::last_30_days(snapshot, windows, now);
    // With their positions in the snapshot, for the dependency and maintenance views.
    let mut matching: Vec<(usize, &ServiceStatus)> = snapshot
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| q.matches(s))
        .collect();
    matching.sort_unstable_by(|(_, a), (_, b)| {
        (
            rank(a.state),
            a.service.extra.group.is_none(),
            &a.service.extra.group,
            &a.service.name,
        )
            .cmp(&(
                rank(b.state),
                b.service.extra.group.is_none(),
                &b.service.extra.group,
                &b.service.name,
            ))
    });
    let mut groups: Vec<&str> = snapshot
        .services
        .iter()
        .filter_map(|s| s.service.extra.group.as_deref())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let h = history::read(history);
    let services = matching
        .iter()
        .skip(q.page.saturating_mul(q.per_page))
        .take(q.per_page)
        .map(|&(i, s)| {
            let kept = h.services.get(s.service.name.as_str());
            let last = s.last.as_ref();
            Row {
                name: &s.service.name,
                group: s.service.extra.group.as_deref(),
                state: s.state,
                since: crate::timestamp::UnixTime::from_system(s.since).rfc3339(),
                checked: last.is_some(),
                reason: last.and_then(|o| o.reason),
                error: last
                    .and_then(|o| o.error.as_deref())
                    .map(|e| &e[..crate::probe::prefix_len(e, ERROR_BYTES)]),
                latency_seconds: last.map(|o| o.duration.as_secs_f64()),
                recent: kept
                    .map(|k| k.recent().map(|r| r.verdict().state()).collect())
                    .unwrap_or_default(),
                uptime: UptimeDoc::of(kept, now, &exclusions.of(&s.service)).0,
                blocked_by: super::status::blocked_by(snapshot, i),
                maintenance_until: view.of(i).flatten().map(|w| {
                    crate::timestamp::UnixTime::from_system(history::system_time(w.end)).rfc3339()
                }),
            }
        })
        .collect();
    drop(h);
    let doc = OverviewDoc {
        now: crate::timestamp::UnixTime::from_system(history::system_time(now)).rfc3339(),
        generation: snapshot.generation,
        interval_seconds: snapshot.config.daemon.interval.as_secs_f64(),
        deadline_seconds: snapshot.config.daemon.deadline.as_secs_f64(),
        sweep: snapshot.last_sweep.as_ref().map(|s| SweepBrief {
            number: snapshot.sweeps_total,
            finished_at: crate::timestamp::UnixTime::from_system(crate::timestamp::saturating_add(
                s.started_at,
                s.duration,
            ))
            .rfc3339(),
        }),
        summary: SummaryDoc::of(snapshot),
        groups,
        matching: matching.len(),
        page: q.page,
        per_page: q.per_page,
        services,
    };
    Ok(to_json(&doc, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_and_other_clients_json() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(wants_html(&h));
        h.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_html(&h), "curl sends */*");
    }

    #[test]
    fn the_overview_query_is_strict_and_bounded() {
        let q = OverviewQuery::parse("state=down&group=orders&q=Led&page=2&per_page=9999")
            .expect("valid");
        assert_eq!(q.state, Some(State::Down));
        assert_eq!(q.group.as_deref(), Some("orders"));
        assert_eq!(q.name.as_deref(), Some("led"));
        assert_eq!((q.page, q.per_page), (2, MAX_PER_PAGE));
        assert_eq!(
            OverviewQuery::parse("state=&group=&q=").expect("empty is no filter"),
            OverviewQuery::parse("").expect("valid")
        );
        for bad in ["state=sideways", "page=-1", "per_page=x", "sort=name"] {
            assert!(OverviewQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_match_case_insensitively() {
        assert!(contains_lowercase("Ledger-EU", "ger-e"));
        assert!(contains_lowercase("Ünïcode", "ünï"));
        assert!(!contains_lowercase("abc", "abcd"));
    }

    #[test]
    fn the_script_puts_service_data_in_as_text_only() {
        // Names and errors come from configs and services: never through innerHTML.
        assert!(!SCRIPT.contains("innerHTML"));
        assert!(!SCRIPT.contains("insertAdjacentHTML"));
        assert!(!SCRIPT.contains("document.write"));
        assert!(
            !SCRIPT.contains("http://") || SCRIPT.matches("http://").count() == 1,
            "only the SVG namespace"
        );
        assert!(!STYLE.contains("url("), "nothing fetched by the style");
    }
}
