//! Consistent hashing on a ring, built once per snapshot; lookups are a binary search.
//!
//! **Sizing.** Every endpoint gets `weight * 2^s` points (rounded, at least one), with `s`
//! the smallest integer (possibly negative) such that `sum(weights) * 2^s >= min_ring_size`.
//! So the ring has between `min_ring_size` and about twice that many points, and shares are
//! proportional to weight. Because the scale is a power of two, it only changes when the
//! total weight crosses a power-of-two boundary relative to `min_ring_size`; otherwise
//! adding or removing an endpoint leaves every other endpoint's points exactly where they
//! were, and the only keys that move are those taken by (or freed from) that endpoint.
//!
//! **Points.** Point `r` of an endpoint whose address hashes to `h` (see
//! [`super::hash_socket_addr`]) is `mix64(h + (r + 1) * G)`: it depends on the address,
//! never on the list position, and the first `k` points are the same whatever the count.
//!
//! **Lookup.** The key is mixed (`mix64(key)`, so sequential keys spread out), the first
//! point at or after it wins, wrapping around. If that point's endpoint is not eligible
//! (ejected, or already tried by this request), the walk continues clockwise to the next
//! eligible one, so keys of an ejected endpoint spread over its ring successors while
//! every other key stays put.

use super::cluster::{Endpoint, LbError, MAX_MIN_RING_SIZE};
use super::hash::{GOLDEN, mix64};

/// The sorted ring: `hashes[i]` is a point, `owners[i]` the endpoint index owning it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    hashes: Vec<u64>,
    owners: Vec<u32>,
}

/// The points each endpoint gets (see the module documentation).
fn points_per_endpoint(endpoints: &[Endpoint], min_ring_size: usize) -> Vec<u64> {
    let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
    let min = min_ring_size as u64;
    if total >= min {
        // Scale down by 2^k, k the largest with total / 2^k >= min.
        let mut k = 0;
        while total >> (k + 1) >= min {
            k += 1;
        }
        let half = if k == 0 { 0 } else { 1u64 << (k - 1) };
        endpoints
            .iter()
            .map(|e| ((u64::from(e.weight) + half) >> k).max(1))
            .collect()
    } else {
        // Scale up by 2^s, s the smallest with total * 2^s >= min.
        let mut s = 0;
        while total << s < min {
            s += 1;
        }
        endpoints.iter().map(|e| u64::from(e.weight) << s).collect()
    }
}

impl Ring {
    pub(crate) fn build(endpoints: &[Endpoint], min_ring_size: usize) -> Result<Self, LbError> {
        if min_ring_size == 0 || min_ring_size > MAX_MIN_RING_SIZE {
            return Err(LbError::InvalidRingSize(min_ring_size));
        }
        if endpoints.is_empty() {
            return Ok(Self::default());
        }
        let counts = points_per_endpoint(endpoints, min_ring_size);
        let total: u64 = counts.iter().sum();
        let mut points = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (index, (endpoint, &count)) in endpoints.iter().zip(&counts).enumerate() {
            for r in 0..count {
                let point = mix64(endpoint.hash.wrapping_add((r + 1).wrapping_mul(GOLDEN)));
                // Endpoint count ≤ MAX_ENDPOINTS, so the index fits in u32.
                points.push((point, endpoint.hash, index as u32));
            }
        }
        // Ties on a point (astronomically rare) break by address hash, not list position.
        points.sort_unstable_by_key(|&(point, hash, _)| (point, hash));
        Ok(Self {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The endpoint index for `key`: the owner of the first point at or after `mix64(key)`
    /// that satisfies `eligible`, walking clockwise; `None` if no point does.
    pub(crate) fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let target = mix64(key);
        let start = self.hashes.partition_point(|&p| p < target);
        let (before, after) = self.owners.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|&owner| owner as usize)
            .find(|&owner| eligible(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::test_util::{cluster_with, endpoints};
    use crate::lb::{ClusterLb, Policy};

    fn ring(weights: &[u32], min_ring_size: usize) -> ClusterLb {
        cluster_with(&endpoints(weights), Policy::RingHash { min_ring_size })
    }

    fn lookup(c: &ClusterLb, key: u64) -> usize {
        c.ring().unwrap().pick(key, |_| true).unwrap()
    }

    fn owned_points(c: &ClusterLb) -> Vec<usize> {
        let mut counts = vec![0; c.len()];
        for &o in &c.ring().unwrap().owners {
            counts[o as usize] += 1;
        }
        counts
    }

    #[test]
    fn ring_size_is_power_of_two_scaled_and_proportional_to_weight() {
        let c = ring(&[1, 2, 3], 1024); // 6 * 256 = 1536 >= 1024 > 6 * 128
        assert_eq!(c.ring_len(), Some(1536));
        assert_eq!(owned_points(&c), [256, 512, 768]);
        let big = ring(&[1_000_000, 3_000_000], 1024); // scaled down by 2^11
        let counts = owned_points(&big);
        assert_eq!(counts, [488, 1465]);
        let total: usize = counts.iter().sum();
        assert!((1024..2048).contains(&total));
        // A tiny weight next to a huge one still gets a point.
        assert_eq!(owned_points(&ring(&[1, 1 << 30], 1024))[0], 1);
    }

    #[test]
    fn rejects_invalid_ring_sizes() {
        let list = endpoints(&[1, 1]);
        for bad in [0, MAX_MIN_RING_SIZE + 1] {
            let err = ClusterLb::new(&list, Policy::RingHash { min_ring_size: bad });
            assert_eq!(err.unwrap_err(), LbError::InvalidRingSize(bad));
        }
    }

    #[test]
    fn same_key_same_endpoint_independent_of_list_order() {
        let list = endpoints(&[1, 2, 3, 4]);
        let c = cluster_with(
            &list,
            Policy::RingHash {
                min_ring_size: 1024,
            },
        );
        let mut reversed = list.clone();
        reversed.reverse();
        let r = cluster_with(
            &reversed,
            Policy::RingHash {
                min_ring_size: 1024,
            },
        );
        for key in 0..2_000u64 {
            let first = lookup(&c, key);
            assert_eq!(first, lookup(&c, key));
            assert_eq!(list[first].0, reversed[lookup(&r, key)].0);
        }
    }

    #[test]
    fn distribution_is_proportional_to_weight() {
        let weights = [1, 2, 3, 4];
        let c = ring(&weights, 16_384);
        let mut hits = [0u32; 4];
        let n = 50_000u32;
        for key in 0..n {
            hits[lookup(&c, u64::from(key))] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let expected = f64::from(n) * f64::from(*w) / 10.0;
            let ratio = f64::from(hits[i]) / expected;
            assert!((0.9..1.1).contains(&ratio), "endpoint {i}: {hits:?}");
        }
    }

    #[test]
    fn adding_an_endpoint_moves_only_keys_to_it_about_one_in_n_plus_one() {
        for n in [4usize, 10, 25] {
            let list = endpoints(&vec![1; n + 1]);
            let before = cluster_with(
                &list[..n],
                Policy::RingHash {
                    min_ring_size: 1024,
                },
            );
            let after = cluster_with(
                &list,
                Policy::RingHash {
                    min_ring_size: 1024,
                },
            );
            let keys = 10_000u64;
            let mut moved = 0;
            for key in 0..keys {
                let (old, new) = (lookup(&before, key), lookup(&after, key));
                if old != new {
                    assert_eq!(new, n, "key {key} moved between old endpoints");
                    moved += 1;
                }
            }
            let share = moved as f64 / keys as f64;
            let ideal = 1.0 / (n + 1) as f64;
            assert!(share > 0.5 * ideal && share < 1.5 * ideal, "n={n}: {share}");
        }
    }

    #[test]
    fn ineligible_owner_walks_clockwise_and_leaves_other_keys_alone() {
        let c = ring(&[1, 1, 1, 1], 256);
        let r = c.ring().unwrap();
        let mut rehomed = [0u32; 4];
        for key in 0..4_000u64 {
            let home = lookup(&c, key);
            let without_2 = r.pick(key, |i| i != 2).unwrap();
            if home == 2 {
                assert_ne!(without_2, 2);
                rehomed[without_2] += 1;
            } else {
                assert_eq!(without_2, home);
            }
        }
        // Endpoint 2's keys spread over the others rather than all landing on one.
        assert!(
            rehomed.iter().filter(|&&h| h > 50).count() == 3,
            "{rehomed:?}"
        );
        assert_eq!(r.pick(1, |_| false), None);
        assert_eq!(Ring::default().pick(1, |_| true), None);
    }
}
