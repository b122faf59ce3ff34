//! `/-/maintenance`: maintenance windows through the API, authenticated like reload.
//! `GET` lists the windows in force and the next of each scheduled one, `POST` opens an ad-hoc
//! window (`{"targets": {...}, "duration": "30m", "reason": "..."}`, optionally `"start"` as
//! RFC 3339) and answers its id, `DELETE /-/maintenance/{id}` ends one early. Ad-hoc windows
//! are kept in the state store, so a restart keeps them; each ends by itself.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Api, HttpResponse, error, json_response};
use crate::config::Targets;
use crate::maintenance::{AdHoc, new_id, now_ms};

/// Bytes of a request body read at most.
const MAX_BODY: usize = 64 * 1024;

/// Longest a client may take to send the body.
const BODY_WAIT: Duration = Duration::from_secs(10);

/// Characters of a reason kept at most.
const MAX_REASON: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Open {
    targets: Targets,
    duration: String,
    #[serde(default)]
    reason: String,
    /// RFC 3339; now when left out.
    start: Option<String>,
}

#[derive(Serialize)]
struct WindowDoc {
    name: String,
    kind: &'static str,
    id: Option<String>,
    targets: Targets,
    /// Whether it is in force now.
    active: bool,
    start: String,
    end: String,
    reason: Option<String>,
    /// Scheduled windows: when, and in which time zone.
    schedule: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    crate::timestamp::rfc3339(crate::history::system_time(ms))
}

/// `GET /-/maintenance`.
pub(super) fn list(api: &Api) -> HttpResponse {
    let now = now_ms();
    let snapshot = api.snapshot();
    let mut windows = Vec::new();
    for m in &snapshot.config.maintenance {
        let current = m.at(now);
        let Some((start, end)) = current.or_else(|| m.next_after(now)) else {
            continue;
        };
        windows.push(WindowDoc {
            name: m.name.clone(),
            kind: "scheduled",
            id: None,
            targets: m.targets.clone(),
            active: current.is_some(),
            start: rfc3339(start),
            end: rfc3339(end),
            reason: None,
            schedule: Some(format!(
                "{} at {} for {} ({})",
                m.days.map_or("every day".to_string(), |d| {
                    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
                        .iter()
                        .zip(d)
                        .filter(|(_, on)| *on)
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
                m.start.strftime("%H:%M"),
                humantime::format_duration(m.duration),
                m.timezone_name
            )),
        });
    }
    for w in api.windows.ad_hoc().into_iter().filter(|w| w.end > now) {
        windows.push(WindowDoc {
            name: "ad-hoc".into(),
            kind: "ad_hoc",
            id: Some(w.id),
            targets: w.targets,
            active: w.start <= now,
            start: rfc3339(w.start),
            end: rfc3339(w.end),
            reason: Some(w.reason),
            schedule: None,
        });
    }
    windows.sort_by(|a, b| b.active.cmp(&a.active).then(a.start.cmp(&b.start)));
    json_response(StatusCode::OK, &json!({ "windows": windows }))
}

/// `POST /-/maintenance`.
pub(super) async fn open<B>(api: &Api, body: B) -> HttpResponse
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_WAIT, limited.collect()).await {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the body did not come in time"),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is longer than {MAX_BODY} bytes"),
            );
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        Ok(Ok(c)) => c.to_bytes(),
    };
    let open: Open = match serde_json::from_slice(&bytes) {
        Ok(o) => o,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"targets\": {{\"names\": [\"billing\"]}}, \"duration\": \"30m\", \"reason\": \"...\"}}: {e}"
                ),
            );
        }
    };
    if let Some(p) = open.targets.problem() {
        return error(StatusCode::BAD_REQUEST, p);
    }
    let duration = match humantime::parse_duration(&open.duration) {
        Ok(d) if d >= Duration::from_secs(1) && d <= crate::config::MAX_WINDOW => d,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "duration = {:?} must be a duration from \"1s\" to \"7d\"",
                    cut(&open.duration)
                ),
            );
        }
    };
    if open.reason.chars().count() > MAX_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            format!("reason is longer than {MAX_REASON} characters"),
        );
    }
    let now = now_ms();
    let start = match &open.start {
        None => now,
        Some(s) => match s.parse::<jiff::Timestamp>() {
            Ok(t) if t.as_millisecond() < now + 7 * 86_400_000 => t.as_millisecond().max(now),
            Ok(_) => return error(StatusCode::BAD_REQUEST, "start is more than 7 days away"),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "start = {:?} is not an RFC 3339 time (e.g. \"2026-12-24T02:00:00Z\")",
                        cut(s)
                    ),
                );
            }
        },
    };
    let window = AdHoc {
        id: new_id(),
        targets: open.targets,
        start,
        end: start.saturating_add(duration.as_millis() as i64),
        reason: open.reason,
    };
    let keep = api.snapshot().config.daemon.history_retention;
    let (id, start, end) = (window.id.clone(), window.start, window.end);
    if let Err(e) = api.windows.add(window, now, keep) {
        return error(StatusCode::TOO_MANY_REQUESTS, e);
    }
    tracing::info!(id, start = %rfc3339(start), end = %rfc3339(end), "maintenance window opened");
    json_response(
        StatusCode::CREATED,
        &json!({"id": id, "start": rfc3339(start), "end": rfc3339(end)}),
    )
}

/// `DELETE /-/maintenance/{id}`.
pub(super) fn end(api: &Api, id: &str) -> HttpResponse {
    if api.windows.end(id, now_ms()) {
        tracing::info!(id, "maintenance window ended early");
        json_response(StatusCode::OK, &json!({"ended": id}))
    } else if api
        .snapshot()
        .config
        .maintenance
        .iter()
        .any(|m| m.name == id)
    {
        error(
            StatusCode::CONFLICT,
            format!(
                "{:?} is scheduled in the config; change the config to end it",
                cut(id)
            ),
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no open ad-hoc maintenance window {:?}", cut(id)),
        )
    }
}

/// What of a client's string an error quotes back: its first 100 bytes.
fn cut(s: &str) -> &str {
    &s[..crate::probe::prefix_len(s, 100)]
}
