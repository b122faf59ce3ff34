//! Which services of a new service list are the very ones (the same `Arc`) of an old list.
//!
//! A discovery refresh keeps the `Arc<Service>` of every unchanged target and keeps their
//! order, so at 100,000 services with 1 % changed, walking both lists side by side finds
//! nearly every service by pointer, without reading a name or hashing anything. What carries
//! over a change (a snapshot's states, the prober's endpoints) starts from this.

use std::sync::Arc;

use super::Service;

/// How far ahead the walk looks for the next unchanged service: a few removed in a row are
/// skipped over; a longer run leaves the rest to be matched some other way (by name).
const LOOKAHEAD: usize = 4;

/// `new` aligned with `old`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alignment {
    /// For each service of `new`, the index in `old` of the same `Arc`, when the walk found it.
    pub found: Vec<Option<usize>>,
    /// For each service of `old`, whether a service of `new` was found to be it.
    pub claimed: Vec<bool>,
}

/// Aligns `new` with `old` by pointer. An `Arc` found is certainly the same service; one not
/// found may still be in `old` (moved far, or a different `Arc` of the same name), so callers
/// match the rest by name against the unclaimed part of `old` when that matters.
/// `service` gives the service of an element of `old` (a list of services, or of statuses).
pub fn align<T>(
    old: &[T],
    new: &[Arc<Service>],
    service: impl Fn(&T) -> &Arc<Service>,
) -> Alignment {
    let mut claimed = vec![false; old.len()];
    let mut found = Vec::with_capacity(new.len());
    let mut j = 0;
    for svc in new {
        let ahead = old.len().min(j + LOOKAHEAD);
        let hit = (j..ahead).find(|&k| Arc::ptr_eq(service(&old[k]), svc));
        if let Some(k) = hit {
            claimed[k] = true;
            j = k + 1;
        }
        found.push(hit);
    }
    Alignment { found, claimed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse_str;

    fn services(n: usize) -> Vec<Arc<Service>> {
        let src: String = (0..n)
            .map(|i| format!("[[service]]\nname = \"s{i}\"\nurl = \"http://127.0.0.1/{i}\"\n"))
            .collect();
        parse_str(&src).expect("valid").services
    }

    #[test]
    fn unchanged_services_are_found_across_removals_and_insertions() {
        let old = services(10);
        let fresh = services(3);
        // Remove s2, insert a new one after s4, remove s6..s9 (more than the lookahead).
        let new = vec![
            old[0].clone(),
            old[1].clone(),
            old[3].clone(),
            old[4].clone(),
            fresh[0].clone(),
            old[5].clone(),
        ];
        let a = align(&old, &new, |s| s);
        assert_eq!(a.found, [Some(0), Some(1), Some(3), Some(4), None, Some(5)]);
        assert_eq!(
            a.claimed,
            [
                true, true, false, true, true, true, false, false, false, false
            ]
        );
    }

    #[test]
    fn a_service_moved_far_is_not_found_by_pointer() {
        let old = services(10);
        let mut new = old.clone();
        let last = new.pop().expect("ten");
        new.insert(0, last);
        let a = align(&old, &new, |s| s);
        assert_eq!(a.found[0], None, "s9 moved to the front");
        assert!(!a.claimed[9]);
        assert_eq!(a.found[1..], (0..9).map(Some).collect::<Vec<_>>()[..]);
    }
}
