//! A service's latest results in four bytes each: a fleet of 100,000 keeps 60 of them apiece
//! in 23 MiB. Each entry holds the verdict, the latency and the seconds since the entry before
//! it; the newest entry's time is kept whole, so every time is exact while results are at most
//! 68 minutes apart (beyond, gaps are kept to the minute).

use std::time::{Duration, SystemTime};

use super::{RECENT, Result};

/// Bits of an entry: verdict code (5), latency (14), gap to the previous entry (13).
const CODE_BITS: u32 = 5;
const LATENCY_BITS: u32 = 14;

#[derive(Debug, Clone, Default)]
pub(super) struct Recent {
    /// Entries in arrival order until full, then a ring whose oldest is at `head`.
    slots: Vec<u32>,
    head: u8,
    /// Unix seconds of the newest entry.
    newest: u32,
}

impl Recent {
    pub(super) fn push(&mut self, r: Result) {
        let secs = r.secs();
        let gap = secs.saturating_sub(self.newest);
        let entry = u32::from(r.code())
            | encode_latency(r.latency()) << CODE_BITS
            | encode_gap(gap) << (CODE_BITS + LATENCY_BITS);
        if self.slots.len() < RECENT {
            // Exactly the room needed: no doubling past 60.
            self.slots
                .reserve_exact(if self.slots.is_empty() { RECENT } else { 1 });
            self.slots.push(entry);
        } else {
            self.slots[usize::from(self.head)] = entry;
            self.head = ((usize::from(self.head) + 1) % RECENT) as u8;
        }
        self.newest = secs;
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Oldest first.
    pub(super) fn to_vec(&self) -> Vec<Result> {
        let n = self.slots.len();
        let ordered = (0..n).map(|i| self.slots[(usize::from(self.head) + i) % n.max(1)]);
        let entries: Vec<u32> = ordered.collect();
        // Times from the newest back.
        let mut times = vec![0u32; n];
        let mut t = self.newest;
        for i in (0..n).rev() {
            times[i] = t;
            t = t.saturating_sub(decode_gap(entries[i] >> (CODE_BITS + LATENCY_BITS)));
        }
        entries
            .iter()
            .zip(times)
            .map(|(&e, secs)| {
                Result::from_parts(
                    secs,
                    decode_latency((e >> CODE_BITS) & ((1 << LATENCY_BITS) - 1)),
                    (e & ((1 << CODE_BITS) - 1)) as u8,
                )
            })
            .collect()
    }
}

/// Milliseconds exact below 8.192 s, then in 64 ms steps up to 524 s (and capped there).
fn encode_latency(d: Duration) -> u32 {
    let ms = d.as_millis().min(u128::from(u32::MAX)) as u32;
    if ms < 1 << 13 {
        ms
    } else {
        (1 << 13) | (ms / 64).min((1 << 13) - 1)
    }
}

fn decode_latency(v: u32) -> Duration {
    if v & (1 << 13) == 0 {
        Duration::from_millis(u64::from(v))
    } else {
        Duration::from_millis(u64::from(v & ((1 << 13) - 1)) * 64)
    }
}

/// Seconds exact below 4096 s (68 min), then in minutes up to 68 hours (and capped there).
fn encode_gap(secs: u32) -> u32 {
    if secs < 1 << 12 {
        secs
    } else {
        (1 << 12) | (secs.saturating_add(30) / 60).min((1 << 12) - 1)
    }
}

fn decode_gap(v: u32) -> u32 {
    if v & (1 << 12) == 0 {
        v
    } else {
        (v & ((1 << 12) - 1)) * 60
    }
}

/// Seconds since the epoch, as results keep time.
pub(super) fn secs_of(t: SystemTime) -> u32 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;
    use crate::probe::Reason;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn times_latencies_and_verdicts_come_back_exact_at_sweep_intervals() {
        let mut r = Recent::default();
        let mut want = Vec::new();
        for i in 0..100u64 {
            let v = match i % 3 {
                0 => Verdict::Up,
                1 => Verdict::Degraded,
                _ => Verdict::Down(Reason::ALL[(i as usize) % Reason::ALL.len()]),
            };
            let res = Result::new(at(1_800_000_000 + i * 15), Duration::from_millis(i * 37), v);
            r.push(res);
            want.push(res);
        }
        assert_eq!(r.len(), RECENT);
        assert_eq!(r.slots.capacity(), RECENT, "no room wasted");
        assert_eq!(r.to_vec(), want[40..]);
    }

    #[test]
    fn long_latencies_and_gaps_are_kept_coarser_not_wrapped() {
        let mut r = Recent::default();
        r.push(Result::new(
            at(1_000_000),
            Duration::from_secs(100),
            Verdict::Up,
        ));
        r.push(Result::new(
            at(1_000_000 + 86_400),
            Duration::from_secs(86_400),
            Verdict::Up,
        ));
        let v = r.to_vec();
        assert_eq!(v[0].at(), at(1_000_000));
        assert_eq!(
            v[0].latency(),
            Duration::from_millis(99_968),
            "64 ms steps, down"
        );
        assert_eq!(v[1].at(), at(1_000_000 + 86_400), "the newest is exact");
        assert_eq!(v[1].latency(), Duration::from_millis(8191 * 64), "capped");
        for ms in [0u64, 1, 8191, 8192, 100_000] {
            let d = Duration::from_millis(ms);
            let back = decode_latency(encode_latency(d));
            assert!(back <= d && d - back < Duration::from_millis(64), "{ms}");
        }
        for s in [0u32, 4095, 4096, 7200, 86_400, 10_000_000] {
            let back = decode_gap(encode_gap(s));
            assert!(s >= 4096 || back == s, "{s}");
            assert!(back.abs_diff(s.min(4095 * 60)) <= 30, "{s} -> {back}");
        }
    }

    #[test]
    fn a_clock_that_goes_back_does_not_underflow() {
        let mut r = Recent::default();
        r.push(Result::new(at(2000), Duration::ZERO, Verdict::Up));
        r.push(Result::new(at(1000), Duration::ZERO, Verdict::Up));
        let v = r.to_vec();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].at(), at(1000));
    }
}
