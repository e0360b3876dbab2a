use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::lb::test_util::{Always, cluster, cluster_with, endpoints, strategies};
use crate::lb::{FailureKind, Policy, SplitMix64};

const FAIL: Outcome = Outcome::Failure(FailureKind::ConnectFailure);
const ALL_POLICIES: [Policy; 4] = [
    Policy::RoundRobin,
    Policy::LeastRequest,
    Policy::RingHash,
    Policy::Rendezvous,
];

fn id(i: u32) -> EndpointId {
    EndpointId::new(i)
}

struct Harness {
    cluster: ClusterLb,
    state: LbState,
    rng: SplitMix64,
    now: Instant,
}

impl Harness {
    fn new(weights: &[u32], policy: Policy, outlier: OutlierConfig) -> Self {
        let cluster = cluster(weights, policy);
        let state = LbState::new(&cluster, outlier);
        Self {
            cluster,
            state,
            rng: SplitMix64::new(5),
            now: Instant::now(),
        }
    }

    fn pick(&mut self, key: Option<u64>, exclude: &[EndpointId]) -> Option<EndpointId> {
        let rng = &mut self.rng;
        self.state.pick_excluding(
            &self.cluster,
            key,
            self.now,
            &mut || rng.next_u64(),
            exclude,
        )
    }

    fn eject(&mut self, e: u32) {
        let ejected = (0..5).any(|_| self.state.report(id(e), FAIL, self.now));
        assert!(ejected, "endpoint {e} was not ejected");
    }
}

#[test]
fn every_policy_picks_and_an_empty_cluster_gives_none() {
    for policy in ALL_POLICIES {
        let mut h = Harness::new(&[1, 1, 1], policy, OutlierConfig::default());
        let seen: HashSet<_> = (0..300).map(|_| h.pick(None, &[]).unwrap()).collect();
        assert_eq!(seen.len(), 3, "{policy:?}");
        let mut empty = Harness::new(&[], policy, OutlierConfig::default());
        assert_eq!(empty.pick(Some(1), &[]), None);
    }
    let mut rr = Harness::new(&[2, 1], Policy::RoundRobin, OutlierConfig::default());
    let seq: Vec<_> = (0..3)
        .map(|_| rr.pick(None, &[]).unwrap().index())
        .collect();
    assert_eq!(seq, [0, 1, 0]);
}

#[test]
fn hash_policies_map_a_key_to_one_endpoint_on_every_worker() {
    for policy in [Policy::RingHash, Policy::Rendezvous] {
        let mut a = Harness::new(&[1, 2, 3, 4], policy, OutlierConfig::default());
        let mut b = Harness::new(&[1, 2, 3, 4], policy, OutlierConfig::default());
        b.rng = SplitMix64::new(99);
        for key in 0..500 {
            assert_eq!(a.pick(Some(key), &[]), b.pick(Some(key), &[]), "{policy:?}");
        }
    }
}

#[test]
fn retries_get_a_different_endpoint_until_all_are_tried() {
    for policy in ALL_POLICIES {
        let mut h = Harness::new(&[3, 1, 2, 1], policy, OutlierConfig::default());
        for key in 0..50 {
            let mut tried = Vec::new();
            while let Some(next) = h.pick(Some(key), &tried) {
                assert!(!tried.contains(&next), "{policy:?} repeated {next}");
                tried.push(next);
            }
            assert_eq!(tried.len(), 4, "{policy:?}");
        }
    }
}

#[test]
fn ejected_endpoints_are_skipped_until_their_time_is_up() {
    for policy in ALL_POLICIES {
        let mut h = Harness::new(&[1, 1, 1, 1], policy, OutlierConfig::default());
        h.eject(2);
        for key in 0..400 {
            assert_ne!(h.pick(Some(key), &[]), Some(id(2)), "{policy:?}");
        }
        assert_eq!(h.state.panic_picks(), 0);
        h.now += Duration::from_secs(30);
        let back = (0..400).any(|key| h.pick(Some(key), &[]) == Some(id(2)));
        assert!(back, "{policy:?}");
        assert!(!h.state.outlier().is_ejected(id(2)));
    }
}

#[test]
fn panic_mode_ignores_ejection_when_every_candidate_is_ejected() {
    let all = OutlierConfig {
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    };
    for policy in ALL_POLICIES {
        let mut h = Harness::new(&[1, 1, 1], policy, all.clone());
        (0..3).for_each(|e| h.eject(e));
        let seen: HashSet<_> = (0..200).map(|k| h.pick(Some(k), &[]).unwrap()).collect();
        assert_eq!(seen.len(), 3, "{policy:?}");
        assert_eq!(h.state.panic_picks(), 200);
    }
    // A retry that excluded the healthy endpoints falls back to the ejected ones.
    let mut h = Harness::new(&[1, 1, 1, 1], Policy::RoundRobin, OutlierConfig::default());
    h.eject(0);
    h.eject(1);
    let picked = h.pick(None, &[id(2), id(3)]).unwrap();
    assert!(picked == id(0) || picked == id(1));
    assert_eq!(h.state.panic_picks(), 1);
    assert_eq!(h.pick(None, &[id(0), id(1), id(2), id(3)]), None);
    assert_eq!(h.state.panic_picks(), 1);
    assert_eq!(h.pick(None, &[id(2)]), Some(id(3)));
}

#[test]
fn in_flight_counts_follow_starts_ends_and_guards() {
    let h = Harness::new(&[1, 1], Policy::LeastRequest, OutlierConfig::default());
    let s = &h.state;
    s.on_request_start(id(0));
    s.on_request_start(id(0));
    assert_eq!(s.in_flight(id(0)), 2);
    s.on_request_end(id(0));
    s.on_request_end(id(0));
    s.on_request_end(id(0));
    assert_eq!(s.in_flight(id(0)), 0);
    {
        let guard = s.start_request(id(1));
        assert_eq!(guard.id(), id(1));
        assert_eq!(s.in_flight(id(1)), 1);
    }
    assert_eq!(s.in_flight(id(1)), 0);
    s.on_request_start(id(7));
    s.on_request_end(id(7));
    assert_eq!(s.in_flight(id(7)), 0);
}

#[test]
fn least_request_sees_the_in_flight_requests_of_this_worker() {
    let mut h = Harness::new(&[1, 1], Policy::LeastRequest, OutlierConfig::default());
    let mut guards = Vec::new();
    for _ in 0..100 {
        let e = h.pick(None, &[]).unwrap();
        guards.push(h.state.start_request(e));
    }
    // Each pick went to the less loaded endpoint, so the load stays balanced.
    assert_eq!(h.state.in_flight(id(0)), 50);
    assert_eq!(h.state.in_flight(id(1)), 50);
    guards.retain(|g| g.id() == id(1));
    for _ in 0..20 {
        assert_eq!(h.pick(None, &[]), Some(id(0)));
    }
}

#[test]
fn state_survives_snapshots_with_the_same_endpoints_and_outlier_state_follows_addresses() {
    let list = endpoints(&[1, 1, 1, 1]);
    let mut h = Harness::new(&[1, 1, 1, 1], Policy::RoundRobin, OutlierConfig::default());
    h.eject(1);
    let old_guard = h.state.start_request(id(0));
    // A new snapshot of the same endpoint list, even with another policy: state kept.
    h.cluster = cluster_with(&list, Policy::Rendezvous);
    assert!(h.pick(Some(3), &[]).is_some());
    assert!(h.state.outlier().is_ejected(id(1)));
    assert_eq!(h.state.in_flight(id(0)), 1);
    // Another endpoint list (a weight changed): fresh counters, but the endpoints that
    // stay keep their outlier state (the ejected one stays out).
    h.cluster = cluster_with(&endpoints(&[1, 1, 1, 2]), Policy::RoundRobin);
    assert!(h.pick(None, &[]).is_some());
    assert!(h.state.outlier().is_ejected(id(1)));
    assert_eq!(h.state.outlier().stats().currently_ejected, 1);
    assert_eq!(h.state.in_flight(id(0)), 0);
    // Endpoint 1 (10.0.0.1) gone, the others moved up: its ejection goes with it.
    let mut list = endpoints(&[1, 1, 1, 2]);
    list.remove(1);
    h.cluster = cluster_with(&list, Policy::RoundRobin);
    assert!(h.pick(None, &[]).is_some());
    assert_eq!(h.state.outlier().stats().currently_ejected, 0);
    // Ejected at its new place (10.0.0.2, index 1), it stays ejected back at index 2.
    h.eject(1);
    h.cluster = cluster_with(&endpoints(&[1, 1, 1, 2]), Policy::RoundRobin);
    assert!(h.pick(None, &[]).is_some());
    assert!(h.state.outlier().is_ejected(id(2)));
    assert!(!h.state.outlier().is_ejected(id(1)));
    drop(old_guard);
    assert_eq!(h.state.in_flight(id(0)), 0);
    h.state.on_request_start(id(0));
    h.cluster = cluster_with(&endpoints(&[1, 1]), Policy::RoundRobin);
    assert!(h.pick(None, &[]).is_some());
    assert_eq!(h.state.in_flight(id(0)), 0);
    assert_eq!(h.state.in_flight(id(3)), 0);
}

#[test]
fn a_table_answer_out_of_range_picks_nothing() {
    let mut s = strategies();
    s.rendezvous = std::sync::Arc::new(Always {
        member: 7,
        claim: None,
    });
    let mut h = Harness::new(&[1, 1], Policy::RoundRobin, OutlierConfig::default());
    h.cluster = ClusterLb::new(&endpoints(&[1, 1]), Policy::Rendezvous, &s).unwrap();
    assert_eq!(h.pick(Some(1), &[]), None);
}

/// An endpoint its health checks took out is skipped by every policy (a hash key that
/// maps to it moves on), comes back when it is brought back, and when every endpoint is
/// out the pick is made anyway (panic mode) and counted.
#[test]
fn endpoints_out_by_health_checks_are_skipped_until_back() {
    for policy in ALL_POLICIES {
        let mut h = Harness::new(&[1, 1, 1], policy, OutlierConfig::default());
        let health = std::sync::Arc::new(crate::lb::Health::new(3));
        h.cluster = h
            .cluster
            .clone()
            .with_health(std::sync::Arc::clone(&health));
        health.set(1, true);
        let seen: HashSet<_> = (0..300)
            .map(|k| h.pick(Some(k * 7919), &[]).unwrap())
            .collect();
        assert_eq!(seen, HashSet::from([id(0), id(2)]), "{policy:?}");
        health.set(1, false);
        let seen: HashSet<_> = (0..300)
            .map(|k| h.pick(Some(k * 7919), &[]).unwrap())
            .collect();
        assert_eq!(seen.len(), 3, "{policy:?}: {seen:?}");
        for i in 0..3 {
            health.set(i, true);
        }
        assert!(h.pick(None, &[]).is_some(), "{policy:?}");
        assert_eq!(h.state.panic_picks(), 1, "{policy:?}");
    }
}
