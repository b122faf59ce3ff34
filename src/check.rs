//! `healthsweep check`: one sweep with the daemon's own engine, printed as a table (or JSON),
//! exit status 1 if any service is down. The blog's script, as a command for cron and CI.

use std::io::Write;
use std::sync::Arc;

use crate::config::Config;
use crate::discovery::{SourceStatus, compose_once, fetch_once};
use crate::probe::Prober;
use crate::snapshot::{SweepReport, SweepSummary};
use crate::sweep::{Plan, run_sweep};

/// Runs one sweep of `config` within `connection_budget` connections, after asking every
/// discovery source once for its targets.
pub async fn sweep_once(config: Config, connection_budget: usize) -> SweepReport {
    let prober = Arc::new(Prober::new(connection_budget));
    let (config, _, _) = discover_once(config, &prober).await;
    let max_in_flight = crate::limits::max_in_flight(&config, connection_budget);
    run_sweep(prober, Plan::new(Arc::new(config), max_in_flight)).await
}

/// `config` with what every `[[discover]]` source answers now added (each asked once, all at
/// once), every source's status, and the targets left out (duplicates, rejected).
pub async fn discover_once(
    config: Config,
    prober: &Prober,
) -> (Config, Vec<SourceStatus>, Vec<String>) {
    if config.discover.is_empty() {
        return (config, Vec::new(), Vec::new());
    }
    let updates =
        futures_util::future::join_all(config.discover.iter().map(|d| fetch_once(d, prober))).await;
    compose_once(&config, &updates)
}

/// What `validate --discover` prints: each source, how its fetch went, and every service
/// that would be checked.
pub fn discovered(config: &Config, statuses: &[SourceStatus], skipped: &[String]) -> String {
    let mut out = String::new();
    for s in statuses {
        let outcome = match &s.error {
            None => "ok".to_string(),
            Some(e) => format!("error: {e}"),
        };
        out.push_str(&format!(
            "source {} ({}): {} service{} ({outcome})\n",
            s.name,
            s.kind,
            s.targets,
            if s.targets == 1 { "" } else { "s" }
        ));
        for svc in config
            .services
            .iter()
            .filter(|svc| svc.extra.source.as_deref() == Some(&*s.name))
        {
            out.push_str(&format!("  {}  {}\n", svc.name, svc.redacted_url()));
        }
    }
    for s in skipped {
        out.push_str(&format!("left out: {s}\n"));
    }
    out
}

/// The report as an aligned table: name, state, status, latency, reason, error.
pub fn table(report: &SweepReport) -> String {
    let rows: Vec<[String; 6]> = report
        .config
        .services
        .iter()
        .zip(&report.outcomes)
        // `healthsweep check` checks every service: none is skipped for its interval.
        .filter_map(|(s, o)| Some((s, o.as_ref()?)))
        .map(|(s, o)| {
            [
                s.name.clone(),
                match (o.ok(), o.degraded) {
                    (false, _) => "down",
                    (true, true) => "degraded",
                    (true, false) => "up",
                }
                .to_string(),
                o.http_status.map_or("-".into(), |c| c.to_string()),
                format!("{:.3}s", o.duration.as_secs_f64()),
                o.reason.map_or("-".into(), |r| r.to_string()),
                o.error.as_deref().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "STATUS", "LATENCY", "REASON", "ERROR"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&footer(&report.summary()));
    out
}

fn footer(s: &SweepSummary) -> String {
    format!(
        "\n{} up, {} down; sweep took {:.3} s (deadline {} s{})\n",
        s.checks - s.failed,
        s.failed,
        s.duration.as_secs_f64(),
        s.deadline.as_secs_f64(),
        if s.deadline_exceeded > 0 {
            format!(", {} check(s) cut off", s.deadline_exceeded)
        } else {
            String::new()
        }
    )
}

/// The report as JSON lines-free JSON: `{"services": [...], "summary": {...}}`.
pub fn json(report: &SweepReport) -> String {
    let services: Vec<_> = report
        .config
        .services
        .iter()
        .zip(&report.outcomes)
        // `healthsweep check` checks every service: none is skipped for its interval.
        .filter_map(|(s, o)| Some((s, o.as_ref()?)))
        .map(|(s, o)| {
            serde_json::json!({
                "name": s.name,
                "url": s.redacted_url(),
                "ok": o.ok(),
                "reason": o.reason,
                "http_status": o.http_status,
                "duration_seconds": o.duration.as_secs_f64(),
                "error": o.error.as_deref(),
            })
        })
        .collect();
    let s = report.summary();
    let doc = serde_json::json!({
        "summary": {
            "up": s.checks - s.failed,
            "down": s.failed,
            "duration_seconds": s.duration.as_secs_f64(),
            "deadline_seconds": s.deadline.as_secs_f64(),
            "deadline_exceeded": s.deadline_exceeded,
        },
        "services": services,
    });
    let mut out = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    out.push('\n');
    out
}

/// Writes `text` to stdout, ignoring a closed pipe (`healthsweep check | head`).
pub fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
