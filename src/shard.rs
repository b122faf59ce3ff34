//! Sharding: which replica checks which service when one host is not enough.
//!
//! `N` replicas run with the same config and `--shard 0/N` .. `--shard N-1/N`. Each service
//! belongs to exactly one shard, chosen by **rendezvous (highest random weight) hashing**: for
//! every shard `i` in `0..N` the service name gets the weight `XXH64(name, seed = i)`, and the
//! shard with the highest weight owns it (a tie, which needs a 64-bit collision, goes to the
//! lower index). So:
//!
//! - every replica computes the same owner from the name alone: no coordination;
//! - going from `N` to `N+1` shards moves only the services whose new weight for shard `N`
//!   beats all their old ones, about `1/(N+1)` of them, and they all move *to the new shard*;
//!   nothing else changes hands (consistent hashing's guarantee, without a ring to tune).
//!
//! XXH64 is a specified hash (<https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md>)
//! with the same output on every platform and release, unlike std's `DefaultHasher`, whose
//! algorithm may change with any Rust release. The name is hashed as its UTF-8 bytes; the seed
//! is the shard index. Any XXH64 implementation reproduces an assignment, e.g. Python's
//! `xxhash.xxh64_intdigest(name, seed=i)`.

use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh64::xxh64;

/// The most shards a fleet may be split into. Far beyond any real deployment; it bounds the
/// per-service work (one hash per shard) and catches typos like `1/30000`.
pub const MAX_COUNT: u32 = 1024;

/// One replica's share of the fleet: shard `index` of `count` (`0 <= index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?} is not INDEX/COUNT (e.g. \"0/3\")")]
    Syntax(String),
    #[error("shard count must be between 1 and {MAX_COUNT}, not {0}")]
    Count(u32),
    #[error("shard index {index} is out of range: shards of {count} are numbered 0 to {}", count - 1)]
    Index { index: u32, count: u32 },
}

impl Shard {
    /// The whole fleet: one replica checks everything (the default).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Shard { index, count })
    }

    /// This shard's number, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards the fleet is split into.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this shard checks the service called `name`.
    pub fn owns(self, name: &str) -> bool {
        // One shard owns everything; skip the hashing.
        self.count == 1 || owner(name, self.count) == self.index
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// Parses `INDEX/COUNT`, e.g. `"2/5"`.
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (index, count) = s.trim().split_once('/').ok_or_else(syntax)?;
        let index = index.trim().parse().map_err(|_| syntax())?;
        let count = count.trim().parse().map_err(|_| syntax())?;
        Shard::new(index, count)
    }
}

/// The shard (in `0..count`) that owns the service called `name`: the one with the highest
/// rendezvous weight. `count` must be at least 1.
pub fn owner(name: &str, count: u32) -> u32 {
    // `max_by_key` keeps the last maximum; iterating in reverse makes a tie go to the lowest index.
    (0..count.max(1))
        .rev()
        .max_by_key(|&i| weight(name, i))
        .expect("the range holds at least shard 0")
}

/// The rendezvous weight of `name` for shard `index`.
fn weight(name: &str, index: u32) -> u64 {
    xxh64(name.as_bytes(), u64::from(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("svc-{i:04}")).collect()
    }

    #[test]
    fn parses_index_over_count_and_rejects_the_rest() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard::WHOLE));
        assert_eq!(
            "3/3".parse::<Shard>(),
            Err(ShardError::Index { index: 3, count: 3 })
        );
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::Count(0)));
        assert_eq!("0/5000".parse::<Shard>(), Err(ShardError::Count(5000)));
        for bad in ["", "1", "1/", "/3", "a/3", "-1/3", "1/3/4", "1.0/3"] {
            assert!(
                matches!(bad.parse::<Shard>(), Err(ShardError::Syntax(_))),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(Shard { index: 1, count: 4 }.to_string(), "1/4");
    }

    /// The hash is XXH64 as specified: these are the reference vectors of the xxHash project, so
    /// a dependency update that changed the output (and so every assignment) would fail here.
    #[test]
    fn the_weight_is_specified_xxh64() {
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        assert_eq!(weight("abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    /// Assignments must never change between releases: replicas of different versions running
    /// side by side during a rolling upgrade must still split the fleet exactly. The expected
    /// owners were cross-checked with Python's `xxhash` package (an independent implementation).
    #[test]
    fn assignments_are_stable_across_releases() {
        let expected: &[(&str, u32, u32)] = &[
            ("orders-api", 3, 2),
            ("payments-api", 3, 1),
            ("search", 3, 1),
            ("orders-api", 7, 2),
            ("svc-0042", 4, 0),
        ];
        for &(name, count, shard) in expected {
            assert_eq!(owner(name, count), shard, "{name} over {count} shards");
        }
    }

    #[test]
    fn every_service_belongs_to_exactly_one_shard() {
        let names = names(2000);
        for count in [1, 2, 3, 5, 8] {
            let mut sizes = vec![0usize; count as usize];
            for name in &names {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).expect("valid").owns(name))
                    .collect();
                assert_eq!(owners.len(), 1, "{name} over {count} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            // Balanced: for a uniform hash each shard gets Binomial(2000, 1/count), whose
            // standard deviation is at most sqrt(2000 / 4) ~ 22; 5 of them is a generous bound
            // that a biased hash (e.g. one ignoring the seed) blows through.
            let ideal = names.len() / count as usize;
            for (i, &size) in sizes.iter().enumerate() {
                assert!(
                    size.abs_diff(ideal) <= 5 * 23,
                    "shard {i}/{count} got {size} of {} (ideal {ideal})",
                    names.len()
                );
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_only_services_to_it_and_about_one_in_n_plus_one() {
        let names = names(2000);
        for count in [1u32, 2, 3, 4, 9] {
            let mut moved = 0usize;
            for name in &names {
                let before = owner(name, count);
                let after = owner(name, count + 1);
                if before != after {
                    assert_eq!(after, count, "{name} moved between old shards");
                    moved += 1;
                }
            }
            // Ideal: 2000 / (count + 1). Binomial sd <= 22; allow 5 sd.
            let ideal = names.len() / (count as usize + 1);
            assert!(
                moved.abs_diff(ideal) <= 5 * 23,
                "{count} -> {}: {moved} moved, ideal {ideal}",
                count + 1
            );
        }
    }

    #[test]
    fn the_whole_fleet_shard_owns_everything() {
        assert!(names(100).iter().all(|n| Shard::WHOLE.owns(n)));
        assert_eq!(Shard::default(), Shard::WHOLE);
    }
}
