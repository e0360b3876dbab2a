//! Least request by the power of two choices.
//!
//! Two distinct eligible endpoints are drawn uniformly at random; the one with the lower
//! load `(in_flight + 1) / weight` wins (compared exactly as `(a + 1) * w_b` against
//! `(b + 1) * w_a`), the first drawn on ties. Sampling two instead of scanning all keeps a
//! pick O(1) and avoids every worker herding onto the same momentarily idle endpoint; the
//! most loaded endpoint is never chosen while another is eligible.
//!
//! The `+ 1` makes weight count for idle endpoints too: between two idle endpoints the
//! heavier wins, and under concurrency the in-flight counts settle roughly in proportion to
//! the weights (weights 1 and 3: the heavier keeps winning until it has three times the
//! load). In-flight counts are per worker, like all [`super::LbState`].

use std::cell::Cell;

use super::cluster::Endpoint;
use super::rng::below;

/// Whether endpoint `a` is at most as loaded as `b`, weight-adjusted.
fn not_more_loaded(a: (u32, u32), b: (u32, u32)) -> bool {
    let ((active_a, weight_a), (active_b, weight_b)) = (a, b);
    (u64::from(active_a) + 1) * u64::from(weight_b)
        <= (u64::from(active_b) + 1) * u64::from(weight_a)
}

/// Picks by P2C. `all_eligible` lets the common case (nothing ejected or excluded) draw
/// straight from the endpoint list; otherwise the eligible indexes are gathered in
/// `scratch` (a per-worker buffer, so no allocation once it has grown).
pub(crate) fn pick(
    endpoints: &[Endpoint],
    in_flight: &[Cell<u32>],
    eligible: impl Fn(usize) -> bool,
    all_eligible: bool,
    scratch: &mut Vec<u32>,
    rng: &mut impl FnMut() -> u64,
) -> Option<usize> {
    let candidates: Option<&[u32]> = if all_eligible {
        None
    } else {
        scratch.clear();
        // Endpoint count ≤ MAX_ENDPOINTS, so indexes fit in u32.
        scratch.extend((0..endpoints.len() as u32).filter(|&i| eligible(i as usize)));
        Some(scratch)
    };
    let count = candidates.map_or(endpoints.len(), <[u32]>::len);
    let resolve = |k: usize| candidates.map_or(k, |c| c[k] as usize);
    match count {
        0 => return None,
        1 => return Some(resolve(0)),
        _ => {}
    }
    let first = below(rng(), count);
    let mut second = below(rng(), count - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (resolve(first), resolve(second));
    let load = |i: usize| {
        let active = in_flight.get(i).map_or(0, Cell::get);
        (active, endpoints[i].weight)
    };
    Some(if not_more_loaded(load(a), load(b)) {
        a
    } else {
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::test_util::cluster;
    use crate::lb::{ClusterLb, Policy, SplitMix64};

    fn counts(
        c: &ClusterLb,
        loads: &[u32],
        eligible: impl Fn(usize) -> bool + Copy,
        picks: u32,
    ) -> Vec<u32> {
        let in_flight: Vec<Cell<u32>> = loads.iter().copied().map(Cell::new).collect();
        let all = (0..c.len()).all(eligible);
        let mut rng = SplitMix64::new(77);
        let mut scratch = Vec::new();
        let mut hits = vec![0; c.len()];
        for _ in 0..picks {
            let mut next = || rng.next_u64();
            let i = pick(
                c.endpoints(),
                &in_flight,
                eligible,
                all,
                &mut scratch,
                &mut next,
            );
            hits[i.unwrap()] += 1;
        }
        hits
    }

    #[test]
    fn of_two_endpoints_the_less_loaded_always_wins() {
        let c = cluster(&[1, 1], Policy::LeastRequest);
        assert_eq!(counts(&c, &[10, 0], |_| true, 1000), [0, 1000]);
        assert_eq!(counts(&c, &[3, 4], |_| true, 1000), [1000, 0]);
    }

    #[test]
    fn prefers_less_loaded_endpoints_and_never_the_most_loaded() {
        let c = cluster(&[1; 10], Policy::LeastRequest);
        let loads: Vec<u32> = (0..10).collect();
        let hits = counts(&c, &loads, |_| true, 45_000);
        assert_eq!(hits[9], 0);
        // Endpoint i wins iff it is drawn with a more loaded one: (9 - i) of 45 pairs.
        for (i, &h) in hits.iter().enumerate() {
            let expected = 45_000.0 * (9 - i) as f64 / 45.0;
            assert!((f64::from(h) - expected).abs() <= 0.06 * 9000.0, "{hits:?}");
        }
    }

    #[test]
    fn load_is_weighted() {
        // (1 + 1) / 1 = 2 against (3 + 1) / 4 = 1: the heavier endpoint wins despite more
        // requests in flight.
        let c = cluster(&[1, 4], Policy::LeastRequest);
        assert_eq!(counts(&c, &[1, 3], |_| true, 100), [0, 100]);
        assert_eq!(counts(&c, &[0, 0], |_| true, 100), [0, 100]);
        assert_eq!(counts(&c, &[0, 4], |_| true, 100), [100, 0]);
        assert!(not_more_loaded((u32::MAX, u32::MAX), (u32::MAX, u32::MAX)));
    }

    #[test]
    fn ties_are_split_evenly() {
        let c = cluster(&[2, 2, 2], Policy::LeastRequest);
        for h in counts(&c, &[1, 1, 1], |_| true, 30_000) {
            assert!((9_400..10_600).contains(&h), "{h}");
        }
    }

    #[test]
    fn only_eligible_endpoints_are_drawn() {
        let c = cluster(&[1, 1, 1, 1], Policy::LeastRequest);
        let hits = counts(&c, &[0, 5, 5, 9], |i| i != 0, 3000);
        assert_eq!(hits[0], 0);
        assert_eq!(hits[3], 0);
        assert!(hits[1] > 1300 && hits[2] > 1300, "{hits:?}");
        assert_eq!(counts(&c, &[0, 0, 0, 0], |i| i == 2, 10), [0, 0, 10, 0]);
        let in_flight = vec![Cell::new(0); 4];
        let none = pick(
            c.endpoints(),
            &in_flight,
            |_| false,
            false,
            &mut Vec::new(),
            &mut || 0,
        );
        assert_eq!(none, None);
    }
}
