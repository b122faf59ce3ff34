//! Points in time as the daemon shows them: RFC 3339 UTC text for JSON, seconds since the Unix
//! epoch for metrics. Total over every input.
//!
//! Times come from outside: a certificate's `notAfter` can be any year from 0000 to 9999 (or
//! before 1970, as in old certificates appended to a chain), and the wall clock itself can be
//! wrong. `humantime` panics on times before 1970 and after 9999, which once turned `/status`
//! into a 500 for the whole fleet. Here every instant renders: years 0000–9999 exactly,
//! anything outside clamped to the nearest end.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Seconds since (or, negative, before) 1970-01-01T00:00:00Z. Wide enough for any X.509 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime {
    /// Whole seconds, rounded down.
    pub secs: i64,
    /// Milliseconds into that second, 0–999.
    pub millis: u16,
}

/// 0000-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z.
const MAX_SECS: i64 = 253_402_300_799;

impl UnixTime {
    /// Whole seconds since the epoch (negative before it).
    pub fn from_secs(secs: i64) -> UnixTime {
        UnixTime { secs, millis: 0 }
    }

    /// Any `SystemTime`, before the epoch included.
    pub fn from_system(t: SystemTime) -> UnixTime {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => UnixTime {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                millis: (d.subsec_millis()) as u16,
            },
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let millis = d.subsec_millis();
                if millis == 0 {
                    UnixTime {
                        secs: -whole,
                        millis: 0,
                    }
                } else {
                    // Rounded down: 0.25 s before the epoch is second -1 plus 750 ms.
                    UnixTime {
                        secs: -whole.saturating_add(1),
                        millis: (1000 - millis) as u16,
                    }
                }
            }
        }
    }

    /// Seconds since the epoch as a float, as Prometheus takes timestamps.
    pub fn as_f64(self) -> f64 {
        self.secs as f64 + f64::from(self.millis) / 1000.0
    }

    /// Whole days from `now` until this time, rounded towards minus infinity (so an expiry
    /// an hour ago is day -1): how certificate days-left are counted.
    pub fn days_after(self, now: UnixTime) -> i64 {
        self.secs.saturating_sub(now.secs).div_euclid(86_400)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-24T16:20:15.123Z`.
    pub fn rfc3339(self) -> Rfc3339 {
        Rfc3339(self)
    }
}

impl From<SystemTime> for UnixTime {
    fn from(t: SystemTime) -> Self {
        UnixTime::from_system(t)
    }
}

/// A [`UnixTime`] written as RFC 3339 (see [`UnixTime::rfc3339`]).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(UnixTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let UnixTime { secs, millis } = self.0;
        let (secs, millis) = if secs < MIN_SECS {
            (MIN_SECS, 0)
        } else if secs > MAX_SECS {
            (MAX_SECS, 999)
        } else {
            (secs, millis.min(999))
        };
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// RFC 3339 text of `t` (any `SystemTime`).
pub fn rfc3339(t: SystemTime) -> String {
    UnixTime::from_system(t).rfc3339().to_string()
}

/// `t + d`, or the latest representable time if that overflows.
pub fn saturating_add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), for the clamped range only, so nothing here can overflow.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(secs: i64) -> String {
        UnixTime::from_secs(secs).rfc3339().to_string()
    }

    #[test]
    fn known_instants_render_as_rfc3339() {
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(text(2_082_758_400), "2036-01-01T00:00:00.000Z");
        assert_eq!(text(-1), "1969-12-31T23:59:59.000Z");
        assert_eq!(text(-2_208_988_800), "1900-01-01T00:00:00.000Z");
        assert_eq!(text(MIN_SECS), "0000-01-01T00:00:00.000Z");
        assert_eq!(text(MAX_SECS), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn times_outside_years_0000_to_9999_are_clamped_not_a_panic() {
        assert_eq!(text(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(text(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(text(MAX_SECS + 1), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn system_times_before_the_epoch_round_down() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_millis(250);
        let u = UnixTime::from_system(t);
        assert_eq!((u.secs, u.millis), (-1, 750));
        assert_eq!(u.rfc3339().to_string(), "1969-12-31T23:59:59.750Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn every_day_agrees_with_humantime_where_humantime_works() {
        for days in (0..(2_932_896 - 1)).step_by(997) {
            let secs = days * 86_400 + 12_345;
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64);
            assert_eq!(
                text(secs),
                humantime::format_rfc3339_millis(t).to_string(),
                "day {days}"
            );
        }
    }

    #[test]
    fn days_left_count_down_through_zero() {
        let now = UnixTime::from_secs(1_000_000);
        assert_eq!(
            UnixTime::from_secs(1_000_000 + 86_400 * 3 + 5).days_after(now),
            3
        );
        assert_eq!(UnixTime::from_secs(1_000_000 - 3600).days_after(now), -1);
        assert_eq!(
            UnixTime::from_secs(i64::MIN).days_after(now),
            i64::MIN.div_euclid(86_400)
        );
    }
}
