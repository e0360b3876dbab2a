//! Smooth weighted round robin, as in nginx's upstream module.
//!
//! Every endpoint `i` carries a current weight `c_i` (starting at 0). A pick adds each
//! eligible endpoint's configured weight to its `c_i`, chooses the eligible endpoint with
//! the largest `c_i` (the first on ties) and subtracts the sum of the eligible weights from
//! the chosen one. Over any `sum(weights)` consecutive picks with a fixed eligible set,
//! every endpoint is chosen exactly `weight` times and all `c_i` return to 0; within that
//! cycle the picks of a heavy endpoint are spread out rather than bunched (weights 5,1,1
//! give `a a b a c a a`, not `a a a a a b c`). Ineligible endpoints keep their `c_i`
//! frozen until they come back.

use super::cluster::Endpoint;

/// Per-worker smooth WRR counters, one per endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmoothWrr {
    current: Vec<i64>,
}

impl SmoothWrr {
    pub(crate) fn new(endpoints: usize) -> Self {
        Self {
            current: vec![0; endpoints],
        }
    }

    pub(crate) fn pick(
        &mut self,
        endpoints: &[Endpoint],
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.current.len() != endpoints.len() {
            self.current = vec![0; endpoints.len()];
        }
        // |c_i| stays below the sum of weights (< 2^52), far from i64 overflow.
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, endpoint) in endpoints.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let weight = i64::from(endpoint.weight);
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::test_util::cluster;
    use crate::lb::{Policy, SplitMix64};

    fn run(weights: &[u32], picks: usize, eligible: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let c = cluster(weights, Policy::RoundRobin);
        let mut wrr = SmoothWrr::new(c.len());
        (0..picks)
            .map(|_| wrr.pick(c.endpoints(), eligible).unwrap())
            .collect()
    }

    #[test]
    fn weights_5_1_1_give_the_smooth_nginx_sequence_every_cycle() {
        let seq = run(&[5, 1, 1], 14, |_| true);
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(run(&[3, 3, 3], 7, |_| true), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn every_cycle_is_exactly_proportional_for_random_weights() {
        let mut rng = SplitMix64::new(2024);
        for _ in 0..200 {
            let n = 1 + (rng.next_u64() % 8) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + (rng.next_u64() % 20) as u32).collect();
            let cycle: usize = weights.iter().map(|&w| w as usize).sum();
            let c = cluster(&weights, Policy::RoundRobin);
            let mut wrr = SmoothWrr::new(n);
            for _ in 0..3 {
                let mut counts = vec![0u32; n];
                for _ in 0..cycle {
                    counts[wrr.pick(c.endpoints(), |_| true).unwrap()] += 1;
                }
                assert_eq!(counts, weights);
                assert!(wrr.current.iter().all(|&x| x == 0), "{:?}", wrr.current);
            }
        }
    }

    #[test]
    fn ineligible_endpoints_are_skipped_and_the_rest_stay_proportional() {
        assert_eq!(run(&[5, 1, 1], 4, |i| i != 0), [1, 2, 1, 2]);
        let seq = run(&[4, 2, 1], 6, |i| i != 2);
        assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
        let c = cluster(&[1, 1], Policy::RoundRobin);
        assert_eq!(SmoothWrr::new(2).pick(c.endpoints(), |_| false), None);
    }

    #[test]
    fn state_resizes_when_the_endpoint_list_changes() {
        let c = cluster(&[1, 1, 1], Policy::RoundRobin);
        let mut wrr = SmoothWrr::new(1);
        let seq: Vec<usize> = (0..3)
            .map(|_| wrr.pick(c.endpoints(), |_| true).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 2]);
    }
}
