//! `[[maintenance]]`: scheduled maintenance windows, validated. A window names its targets
//! (groups, names, labels: a service in any of them), the days (`every`, default every day),
//! a local start time, a duration, and an IANA time zone (DST handled by `jiff`, with its own
//! copy of the time zone database, so a host without tzdata still knows `Europe/Berlin`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Service, Validator};

/// A window lasts at most this long.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// `[[maintenance]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub name: Spanned<String>,
    pub targets: Spanned<RawTargets>,
    pub every: Option<Spanned<Vec<String>>>,
    pub start: Spanned<String>,
    pub duration: Spanned<String>,
    pub timezone: Option<Spanned<String>>,
}

/// Which services a window covers: any service in one of the groups, of one of the names, or
/// with all of the labels.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The services a window covers.
pub type Targets = RawTargets;

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.names.is_empty() && self.labels.is_empty()
    }

    pub fn matches(&self, s: &Service) -> bool {
        s.extra
            .group
            .as_ref()
            .is_some_and(|g| self.groups.contains(g))
            || self.names.contains(&s.name)
            || (!self.labels.is_empty()
                && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }

    /// What is wrong with it as a window's targets, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.is_empty() {
            return Some("targets names no groups, names or labels: it would cover nothing".into());
        }
        let n = self.groups.len() + self.names.len() + self.labels.len();
        (n > 1000).then(|| format!("targets lists {n} entries; at most 1000"))
    }
}

/// A scheduled window.
#[derive(Debug, Clone)]
pub struct Maintenance {
    pub name: String,
    pub targets: Targets,
    /// Days it starts on, Monday first; `None`: every day.
    pub days: Option<[bool; 7]>,
    pub start: jiff::civil::Time,
    pub duration: Duration,
    pub timezone: jiff::tz::TimeZone,
    /// As written (`UTC` unless given).
    pub timezone_name: String,
}

impl Maintenance {
    /// The occurrence in force at `now` (Unix milliseconds), if any: its start and end.
    pub fn at(&self, now: i64) -> Option<(i64, i64)> {
        let now_ts = jiff::Timestamp::from_millisecond(now).ok()?;
        let today = now_ts.to_zoned(self.timezone.clone()).date();
        let back = self.duration.as_secs().div_ceil(86_400) as i64 + 1;
        (0..=back)
            .filter_map(|d| self.starting_on(today.checked_sub(jiff::Span::new().days(d)).ok()?))
            .find(|&(s, e)| s <= now && now < e)
    }

    /// The next occurrence to start after `now`.
    pub fn next_after(&self, now: i64) -> Option<(i64, i64)> {
        let now_ts = jiff::Timestamp::from_millisecond(now).ok()?;
        let today = now_ts.to_zoned(self.timezone.clone()).date();
        (0..9)
            .filter_map(|d| self.starting_on(today.checked_add(jiff::Span::new().days(d)).ok()?))
            .find(|&(s, _)| s > now)
    }

    /// Every occurrence overlapping `[from, to)`, oldest first.
    pub fn between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let Ok(first) = jiff::Timestamp::from_millisecond(from) else {
            return Vec::new();
        };
        let back = self.duration.as_secs().div_ceil(86_400) as i64 + 1;
        let mut day = first.to_zoned(self.timezone.clone()).date();
        day = day.checked_sub(jiff::Span::new().days(back)).unwrap_or(day);
        let mut out = Vec::new();
        for _ in 0..400 {
            if let Some((s, e)) = self.starting_on(day)
                && e > from
            {
                if s >= to {
                    break;
                }
                out.push((s, e));
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
            if jiff::civil::DateTime::from(day)
                .to_zoned(self.timezone.clone())
                .is_ok_and(|z| z.timestamp().as_millisecond() >= to)
            {
                break;
            }
        }
        out
    }

    /// The occurrence starting on local `day`, if the window starts on that weekday. A start
    /// in a DST gap moves forward with the clock; in a repeated hour it is the first one.
    fn starting_on(&self, day: jiff::civil::Date) -> Option<(i64, i64)> {
        if let Some(days) = self.days {
            let wd = day.weekday().to_monday_zero_offset() as usize;
            if !days[wd] {
                return None;
            }
        }
        let zoned = day
            .to_datetime(self.start)
            .to_zoned(self.timezone.clone())
            .ok()?;
        let s = zoned.timestamp().as_millisecond();
        Some((s, s.saturating_add(self.duration.as_millis() as i64)))
    }
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Validator<'_> {
    pub(super) fn maintenance(
        &mut self,
        raw: Vec<Spanned<RawMaintenance>>,
    ) -> Vec<std::sync::Arc<Maintenance>> {
        let mut out: Vec<std::sync::Arc<Maintenance>> = Vec::new();
        for table in raw {
            let table = table.into_inner();
            let name = table.name.get_ref().trim().to_string();
            if name.is_empty() {
                self.report(
                    Some(&table.name.span()),
                    "maintenance: name must not be empty",
                );
                continue;
            }
            if out.iter().any(|m| m.name == name) {
                self.report(
                    Some(&table.name.span()),
                    format!("maintenance {name:?} is defined twice"),
                );
                continue;
            }
            let mut ok = true;
            let targets = table.targets.get_ref().clone();
            if let Some(p) = targets.problem() {
                self.report(
                    Some(&table.targets.span()),
                    format!("maintenance {name:?}: {p}"),
                );
                ok = false;
            }
            let days = match &table.every {
                None => None,
                Some(every) => {
                    let mut mask = [false; 7];
                    for d in every.get_ref() {
                        let lower = d.trim().to_ascii_lowercase();
                        match DAYS.iter().position(|n| {
                            *n == lower || (lower.len() == 3 && n.starts_with(&lower))
                        }) {
                            Some(i) => mask[i] = true,
                            None => {
                                self.report(
                                    Some(&every.span()),
                                    format!("maintenance {name:?}: every = {d:?} is not a day of the week (Monday ... Sunday, or Mon ... Sun)"),
                                );
                                ok = false;
                            }
                        }
                    }
                    if every.get_ref().is_empty() {
                        self.report(
                            Some(&every.span()),
                            format!(
                                "maintenance {name:?}: every is empty; leave it out for every day"
                            ),
                        );
                        ok = false;
                    }
                    Some(mask)
                }
            };
            let start = match jiff::civil::Time::strptime("%H:%M", table.start.get_ref().trim()) {
                Ok(t) => t,
                Err(_) => {
                    self.report(
                        Some(&table.start.span()),
                        format!("maintenance {name:?}: start = {:?} is not a time of day as HH:MM (e.g. \"02:00\")", table.start.get_ref()),
                    );
                    ok = false;
                    jiff::civil::Time::midnight()
                }
            };
            let duration = match humantime::parse_duration(table.duration.get_ref()) {
                Ok(d) if d >= Duration::from_secs(60) && d <= MAX_WINDOW => d,
                _ => {
                    self.report(
                        Some(&table.duration.span()),
                        format!("maintenance {name:?}: duration = {:?} must be a duration from \"1m\" to \"7d\"", table.duration.get_ref()),
                    );
                    ok = false;
                    Duration::from_secs(60)
                }
            };
            let tz_name = table
                .timezone
                .as_ref()
                .map_or("UTC".to_string(), |t| t.get_ref().trim().to_string());
            let timezone = match jiff::tz::TimeZone::get(&tz_name) {
                Ok(tz) => tz,
                Err(_) => {
                    let span = table.timezone.as_ref().map(|t| t.span());
                    self.report(
                        span.as_ref(),
                        format!("maintenance {name:?}: timezone = {tz_name:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")"),
                    );
                    ok = false;
                    jiff::tz::TimeZone::UTC
                }
            };
            if ok {
                out.push(std::sync::Arc::new(Maintenance {
                    name,
                    targets,
                    days,
                    start,
                    duration,
                    timezone,
                    timezone_name: tz_name,
                }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    fn window(extra: &str) -> String {
        format!(
            "[[maintenance]]\nname = \"w\"\ntargets = {{ groups = [\"orders\"] }}\nstart = \"02:00\"\nduration = \"2h\"\n{extra}\n"
        )
    }

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>()
            .expect("a timestamp")
            .as_millisecond()
    }

    #[test]
    fn a_window_in_berlin_follows_daylight_saving_time() {
        let c = parse_str(&window(
            "every = [\"Sunday\"]\ntimezone = \"Europe/Berlin\"",
        ))
        .expect("valid");
        let w = &c.maintenance[0];
        // Sunday 2026-03-29 is the switch to summer time: 02:00 does not exist, the start
        // moves to 03:00 CEST (01:00 UTC); the window still lasts two hours.
        assert_eq!(
            w.at(ms("2026-03-29T01:30:00Z")),
            Some((ms("2026-03-29T01:00:00Z"), ms("2026-03-29T03:00:00Z")))
        );
        // A winter Sunday: 02:00 CET is 01:00 UTC; a summer one: 02:00 CEST is 00:00 UTC.
        assert!(w.at(ms("2026-01-04T01:59:00Z")).is_some());
        assert!(w.at(ms("2026-01-04T03:00:00Z")).is_none());
        assert!(w.at(ms("2026-07-05T00:00:00Z")).is_some());
        assert!(
            w.at(ms("2026-07-05T02:00:00Z")).is_none(),
            "ended at 04:00 CEST"
        );
        // Not on a Monday.
        assert!(w.at(ms("2026-07-06T00:30:00Z")).is_none());
        assert_eq!(
            w.next_after(ms("2026-07-06T00:00:00Z")).map(|(s, _)| s),
            Some(ms("2026-07-12T00:00:00Z"))
        );
        // Four Sundays in January 2026 after the 1st: 4, 11, 18, 25.
        assert_eq!(
            w.between(ms("2026-01-01T00:00:00Z"), ms("2026-02-01T00:00:00Z"))
                .len(),
            4
        );
    }

    #[test]
    fn a_window_across_midnight_is_in_force_the_next_day() {
        let c = parse_str(&window("").replace("02:00", "23:00")).expect("valid");
        let w = &c.maintenance[0];
        assert!(
            w.at(ms("2026-05-05T00:30:00Z")).is_some(),
            "from 23:00 the day before"
        );
        assert!(w.at(ms("2026-05-05T01:00:00Z")).is_none());
    }

    #[test]
    fn bad_windows_are_errors_naming_what_is_wrong() {
        for (bad, message) in [
            (window("every = [\"Sundae\"]"), "is not a day of the week"),
            (
                window("timezone = \"Mars/Olympus\""),
                "is not an IANA time zone",
            ),
            (window("").replace("02:00", "25:00"), "is not a time of day"),
            (
                window("").replace("\"2h\"", "\"8d\""),
                "from \"1m\" to \"7d\"",
            ),
            (
                window("").replace("groups = [\"orders\"]", ""),
                "would cover nothing",
            ),
            (window("") + &window(""), "defined twice"),
            (window("every = []"), "every is empty"),
        ] {
            let problems = problems(&bad);
            assert!(
                problems.iter().any(|p| p.message.contains(message)),
                "{message}: {problems:?}"
            );
        }
        let unknown = parse_str(&window("color = \"red\""));
        assert!(unknown.is_err());
    }
}
