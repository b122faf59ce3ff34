//! Maintenance windows at run time: the ad-hoc ones (`POST /-/maintenance`), kept here and in
//! the state store, and the [`View`] of which services are in a window now, computed from a
//! snapshot when something shows it (`/metrics`, `/status`, the page). Windows never stop a
//! check: the data stays true, only the alerts know to keep quiet.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Maintenance, Targets};
use crate::snapshot::Snapshot;

/// Ad-hoc windows kept at once (active, upcoming, and ended ones kept for uptime).
pub const MAX_AD_HOC: usize = 1000;

/// A window opened through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdHoc {
    pub id: String,
    pub targets: Targets,
    /// Unix milliseconds.
    pub start: i64,
    pub end: i64,
    pub reason: String,
}

/// The ad-hoc windows, shared by the API (which changes them) and every view.
#[derive(Debug, Default)]
pub struct Windows {
    ad_hoc: RwLock<Vec<AdHoc>>,
    /// Bumped on every change, so the recorder knows to store them.
    version: AtomicU64,
}

impl Windows {
    pub fn new(ad_hoc: Vec<AdHoc>) -> Self {
        Windows {
            ad_hoc: RwLock::new(ad_hoc),
            version: AtomicU64::new(1),
        }
    }

    pub fn ad_hoc(&self) -> Vec<AdHoc> {
        self.ad_hoc
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Adds `w`, dropping windows that ended more than `keep` ago; an error when too many
    /// windows are open.
    pub fn add(&self, w: AdHoc, now: i64, keep: Duration) -> Result<(), String> {
        let mut all = self.ad_hoc.write().unwrap_or_else(|e| e.into_inner());
        let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        all.retain(|a| a.end.saturating_add(keep) > now);
        if all.len() >= MAX_AD_HOC {
            return Err(format!(
                "{MAX_AD_HOC} maintenance windows are open or recent already; end some first"
            ));
        }
        all.push(w);
        self.version.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Ends window `id` now, if it has not ended; whether it was found.
    pub fn end(&self, id: &str, now: i64) -> bool {
        let mut all = self.ad_hoc.write().unwrap_or_else(|e| e.into_inner());
        let Some(w) = all.iter_mut().find(|w| w.id == id && w.end > now) else {
            return false;
        };
        w.end = now.max(w.start);
        if w.start > now {
            // Not started: it never happens.
            w.start = now;
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// A window as the views show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// The config's name, or `ad-hoc` for one opened through the API.
    pub name: String,
    /// For an ad-hoc window, its id.
    pub id: Option<String>,
    pub start: i64,
    pub end: i64,
    pub reason: Option<String>,
}

/// Which services are in a window at one instant, and which could be (covered by any window).
#[derive(Debug, Default)]
pub struct View {
    /// For each service of the snapshot: `None` not covered by any window; `Some(None)` covered
    /// but not in one now; `Some(Some(i))` in `active[i]`.
    per_service: Vec<Option<Option<u32>>>,
    pub active: Vec<Window>,
}

impl View {
    pub fn at(snapshot: &Snapshot, windows: &Windows, now: i64) -> View {
        let scheduled = &snapshot.config.maintenance;
        let ad_hoc = windows.ad_hoc();
        if scheduled.is_empty() && ad_hoc.is_empty() {
            return View::default();
        }
        // Each window: its targets, and its occurrence now if any.
        let mut all: Vec<(&Targets, Option<Window>)> = Vec::new();
        for m in scheduled {
            all.push((
                &m.targets,
                m.at(now).map(|(start, end)| Window {
                    name: m.name.clone(),
                    id: None,
                    start,
                    end,
                    reason: None,
                }),
            ));
        }
        for a in &ad_hoc {
            // Ended a day ago: it covers nobody any more.
            if a.end.saturating_add(86_400_000) <= now {
                continue;
            }
            let active = (a.start <= now && now < a.end).then(|| Window {
                name: "ad-hoc".into(),
                id: Some(a.id.clone()),
                start: a.start,
                end: a.end,
                reason: Some(a.reason.clone()),
            });
            all.push((&a.targets, active));
        }
        let mut active = Vec::new();
        let mut index = Vec::new();
        for (_, w) in &all {
            index.push(w.as_ref().map(|w| {
                active.push(w.clone());
                (active.len() - 1) as u32
            }));
        }
        let per_service = snapshot
            .services
            .iter()
            .map(|s| {
                let mut covered = false;
                let mut in_window: Option<u32> = None;
                for ((targets, _), i) in all.iter().zip(&index) {
                    if targets.matches(&s.service) {
                        covered = true;
                        // The window ending last is the one to show.
                        if let Some(i) = i
                            && in_window
                                .is_none_or(|j| active[*i as usize].end > active[j as usize].end)
                        {
                            in_window = Some(*i);
                        }
                    }
                }
                covered.then_some(in_window)
            })
            .collect();
        View {
            per_service,
            active,
        }
    }

    /// Whether the service at `i` is covered by any window (`None`), and if so the window it is
    /// in now.
    pub fn of(&self, i: usize) -> Option<Option<&Window>> {
        self.per_service
            .get(i)
            .copied()
            .flatten()
            .map(|w| w.map(|j| &self.active[j as usize]))
    }
}

/// Every window's occurrences over a span (the uptime windows: the last 30 days), computed
/// once per document, so each service only picks those that cover it.
#[derive(Debug, Default)]
pub struct Exclusions {
    windows: Vec<(Targets, Vec<(i64, i64)>)>,
}

impl Exclusions {
    pub fn new(
        scheduled: &[std::sync::Arc<Maintenance>],
        ad_hoc: &[AdHoc],
        from: i64,
        to: i64,
    ) -> Self {
        let mut windows: Vec<(Targets, Vec<(i64, i64)>)> = scheduled
            .iter()
            .map(|m| (m.targets.clone(), m.between(from, to)))
            .filter(|(_, o)| !o.is_empty())
            .collect();
        windows.extend(
            ad_hoc
                .iter()
                .filter(|a| a.end > from && a.start < to)
                .map(|a| (a.targets.clone(), vec![(a.start, a.end.min(to))])),
        );
        Exclusions { windows }
    }

    /// The daemon's: its config's windows and the ad-hoc ones, over the last 30 days.
    pub fn last_30_days(snapshot: &Snapshot, windows: &Windows, now: i64) -> Self {
        Exclusions::new(
            &snapshot.config.maintenance,
            &windows.ad_hoc(),
            now - 30 * 86_400_000,
            now,
        )
    }

    /// The maintenance time of `s`: every window covering it, merged, sorted.
    pub fn of(&self, s: &crate::config::Service) -> Vec<(i64, i64)> {
        if self.windows.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(i64, i64)> = self
            .windows
            .iter()
            .filter(|(t, _)| t.matches(s))
            .flat_map(|(_, o)| o.iter().copied())
            .collect();
        out.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }
}

/// Now, in Unix milliseconds, as windows keep time.
pub fn now_ms() -> i64 {
    crate::history::millis(std::time::SystemTime::now())
}

/// A new window id: 16 hex digits from the system's random source.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        // No randomness: the time will do, ids only need to be unique here.
        bytes = (crate::history::millis(std::time::SystemTime::now()) as u64).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad_hoc(id: &str, start: i64, end: i64) -> AdHoc {
        AdHoc {
            id: id.into(),
            targets: Targets {
                names: vec!["a".into()],
                ..Targets::default()
            },
            start,
            end,
            reason: "patching".into(),
        }
    }

    #[test]
    fn ad_hoc_windows_are_added_ended_and_bounded() {
        let w = Windows::default();
        let v0 = w.version();
        w.add(ad_hoc("x", 0, 1000), 0, Duration::from_secs(1))
            .expect("room");
        assert!(w.version() > v0);
        assert!(w.end("x", 500));
        assert_eq!(w.ad_hoc()[0].end, 500);
        assert!(!w.end("x", 600), "ended already");
        assert!(!w.end("nope", 600));
        for i in 0..MAX_AD_HOC - 1 {
            w.add(ad_hoc(&i.to_string(), 0, 10_000), 0, Duration::from_secs(1))
                .expect("room");
        }
        assert!(
            w.add(ad_hoc("full", 0, 10_000), 0, Duration::from_secs(1))
                .is_err()
        );
        // Long after they all ended, room again.
        assert!(
            w.add(
                ad_hoc("later", 100_000, 200_000),
                100_000,
                Duration::from_secs(1)
            )
            .is_ok()
        );
        assert_eq!(w.ad_hoc().len(), 1);
    }

    #[test]
    fn ids_are_sixteen_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
