//! Weighted rendezvous (highest random weight) hashing.
//!
//! For a key `k` every eligible endpoint gets a score and the highest wins (the earlier in
//! the list on an exact tie, which needs two identical 52-bit hashes):
//!
//! ```text
//! h     = mix64(endpoint_hash ^ mix64(k))            endpoint_hash = hash of its address
//! u     = ((h >> 12) + 0.5) / 2^52                   uniform in (0, 1), never 0 or 1
//! score = weight / -ln(u)
//! ```
//!
//! `-ln(u)` is exponentially distributed with rate 1, so `-ln(u) / weight` is exponential
//! with rate `weight` and the smallest of those (the highest score) belongs to endpoint `i`
//! with probability `weight_i / sum(weights)` (Schindelhauer and Schomaker's weighted
//! distributed hash tables). A score depends only on the key and that endpoint's address
//! and weight, so removing an endpoint moves exactly the keys it held, adding one moves
//! only keys to it, and an ejected endpoint's keys go to their second-best endpoints while
//! every other key stays put. Cost: one hash and one logarithm per endpoint per pick, with
//! no precomputed state; prefer [`super::Policy::RingHash`] for clusters of hundreds.

use super::cluster::Endpoint;
use super::hash::mix64;

/// Maps a hash onto (0, 1). 52 bits plus one half fit an f64 mantissa exactly, so the
/// result is never rounded to 0 or 1 (which would make the score 0 or infinite).
fn unit(h: u64) -> f64 {
    ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

/// The score of one endpoint for an already mixed key.
fn score(endpoint: &Endpoint, mixed_key: u64) -> f64 {
    let u = unit(mix64(endpoint.hash ^ mixed_key));
    f64::from(endpoint.weight) / -u.ln()
}

/// The eligible endpoint with the highest score for `key`.
pub(crate) fn pick(
    endpoints: &[Endpoint],
    key: u64,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mixed_key = mix64(key);
    let mut best: Option<(usize, f64)> = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let s = score(endpoint, mixed_key);
        if best.is_none_or(|(_, top)| s > top) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::test_util::{cluster, cluster_with, endpoints};
    use crate::lb::{ClusterLb, Policy};

    fn lookup(c: &ClusterLb, key: u64) -> usize {
        pick(c.endpoints(), key, |_| true).unwrap()
    }

    #[test]
    fn unit_interval_is_open_so_scores_stay_finite_and_positive() {
        for h in [0, 1, 1 << 12, u64::MAX - 1, u64::MAX] {
            let u = unit(h);
            assert!(u > 0.0 && u < 1.0, "{h}: {u}");
            for weight in [1.0, f64::from(u32::MAX)] {
                let s = weight / -u.ln();
                assert!(s.is_finite() && s > 0.0, "{h}: {s}");
            }
        }
        let e = cluster(&[u32::MAX], Policy::Rendezvous).endpoints()[0];
        assert!(score(&e, 42).is_finite());
    }

    #[test]
    fn same_key_same_endpoint_independent_of_list_order() {
        let list = endpoints(&[1, 2, 3, 4, 5]);
        let c = cluster_with(&list, Policy::Rendezvous);
        let mut reversed = list.clone();
        reversed.reverse();
        let r = cluster_with(&reversed, Policy::Rendezvous);
        for key in 0..2_000 {
            assert_eq!(lookup(&c, key), lookup(&c, key));
            assert_eq!(list[lookup(&c, key)].0, reversed[lookup(&r, key)].0);
        }
    }

    #[test]
    fn distribution_is_proportional_to_weight() {
        let weights = [1, 2, 3, 4];
        let c = cluster(&weights, Policy::Rendezvous);
        let n = 50_000u32;
        let mut hits = [0u32; 4];
        for key in 0..n {
            hits[lookup(&c, u64::from(key))] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let expected = f64::from(n) * f64::from(*w) / 10.0;
            let ratio = f64::from(hits[i]) / expected;
            assert!((0.95..1.05).contains(&ratio), "endpoint {i}: {hits:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_exactly_its_keys() {
        let list = endpoints(&[3, 1, 2, 5, 1, 4]);
        let full = cluster_with(&list, Policy::Rendezvous);
        let removed = 3;
        let mut rest = list.clone();
        rest.remove(removed);
        let smaller = cluster_with(&rest, Policy::Rendezvous);
        let mut moved = 0;
        for key in 0..10_000 {
            let before = list[lookup(&full, key)].0;
            let after = rest[lookup(&smaller, key)].0;
            if before == list[removed].0 {
                moved += 1;
            } else {
                assert_eq!(before, after, "key {key} moved off a surviving endpoint");
            }
        }
        // The removed endpoint had weight 5 of 16.
        assert!((2_800..3_450).contains(&moved), "{moved}");
    }

    #[test]
    fn adding_an_endpoint_moves_only_keys_to_it_about_one_in_n_plus_one() {
        let n = 10;
        let list = endpoints(&[1; 11]);
        let before = cluster_with(&list[..n], Policy::Rendezvous);
        let after = cluster_with(&list, Policy::Rendezvous);
        let mut moved = 0;
        for key in 0..10_000 {
            let (old, new) = (lookup(&before, key), lookup(&after, key));
            if old != new {
                assert_eq!(new, n);
                moved += 1;
            }
        }
        assert!((10_000 / 22..10_000 * 3 / 22).contains(&moved), "{moved}");
    }

    #[test]
    fn ineligible_endpoints_hand_their_keys_to_the_runner_up() {
        let c = cluster(&[1, 1, 1, 1], Policy::Rendezvous);
        let mut rehomed = [0u32; 4];
        for key in 0..4_000 {
            let home = lookup(&c, key);
            let other = pick(c.endpoints(), key, |i| i != 1).unwrap();
            if home == 1 {
                rehomed[other] += 1;
            } else {
                assert_eq!(other, home);
            }
        }
        assert_eq!(rehomed[1], 0);
        assert!(
            rehomed.iter().filter(|&&h| h > 200).count() == 3,
            "{rehomed:?}"
        );
        assert_eq!(pick(c.endpoints(), 5, |_| false), None);
    }
}
