//! The per-worker half: picks, in-flight accounting and endpoint health.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use super::cluster::{Algorithm, ClusterLb};
use super::outlier::{Outcome, OutlierConfig, OutlierDetector};
use super::round_robin::SmoothWrr;
use super::{EndpointId, least_request};

/// Mutable load-balancing state of one worker for one cluster.
///
/// Not `Send`/`Sync` (in-flight counts are shared with [`RequestGuard`]s through an `Rc`):
/// create it on the worker that uses it. It is tied to the endpoint list of the
/// [`ClusterLb`] it was built for, identified by [`ClusterLb::fingerprint`]: a later
/// snapshot with the same endpoints keeps all state, while a pick with a cluster whose
/// endpoint list differs first resets this state to that cluster (counters and round-robin
/// position start over, guards of the old state keep counting their own, now unused,
/// counters; outlier state follows each endpoint that stays, by address, so an ejected
/// endpoint stays out across endpoint updates, as in Envoy).
///
/// **Eligibility and panic mode.** A pick considers the endpoints not in the caller's
/// exclusion list, not ejected by the outlier detector and not taken out by the
/// cluster's active health checks ([`ClusterLb::health`]). The detector itself never ejects
/// more than `max_ejection_percent` of the cluster. If every non-excluded endpoint is
/// ejected or out (possible with `max_ejection_percent` 100, when every endpoint fails its
/// health checks, or when a retry excludes the healthy ones), ejection and health are
/// ignored for that pick, as in Envoy's panic mode, and
/// [`LbState::panic_picks`] counts it: a possibly unhealthy endpoint beats none. Exclusions
/// are never ignored: if every endpoint is excluded the pick returns `None`.
#[derive(Debug)]
pub struct LbState {
    fingerprint: u64,
    /// The endpoints' addresses, to carry outlier state over when the list changes.
    addrs: Box<[SocketAddr]>,
    in_flight: Rc<[Cell<u32>]>,
    wrr: SmoothWrr,
    outlier: OutlierDetector,
    scratch: Vec<u32>,
    panic_picks: u64,
}

/// Counts one request in flight to an endpoint until dropped. Made by
/// [`LbState::start_request`]; equivalent to `on_request_start` now and `on_request_end`
/// on drop, so early returns and cancelled tasks cannot leak a count.
#[derive(Debug)]
#[must_use = "dropping the guard ends the request at once"]
pub struct RequestGuard {
    counts: Rc<[Cell<u32>]>,
    id: EndpointId,
}

impl RequestGuard {
    /// The endpoint this request went to.
    pub fn id(&self) -> EndpointId {
        self.id
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        decrement(&self.counts, self.id);
    }
}

fn decrement(counts: &[Cell<u32>], id: EndpointId) {
    if let Some(c) = counts.get(id.index()) {
        c.set(c.get().saturating_sub(1));
    }
}

impl LbState {
    /// Fresh state for `cluster`: nothing in flight, everything healthy.
    pub fn new(cluster: &ClusterLb, outlier: OutlierConfig) -> Self {
        let n = cluster.len();
        Self {
            fingerprint: cluster.fingerprint(),
            addrs: (0..n)
                .filter_map(|i| cluster.addr(EndpointId::new(i as u32)))
                .collect(),
            in_flight: (0..n).map(|_| Cell::new(0)).collect(),
            wrr: SmoothWrr::new(n),
            outlier: OutlierDetector::new(outlier, n),
            scratch: Vec::new(),
            panic_picks: 0,
        }
    }

    /// Picks an endpoint for a new request; see [`LbState::pick_excluding`].
    pub fn pick(
        &mut self,
        cluster: &ClusterLb,
        key: Option<u64>,
        now: Instant,
        rng: &mut impl FnMut() -> u64,
    ) -> Option<EndpointId> {
        self.pick_excluding(cluster, key, now, rng, &[])
    }

    /// Picks an endpoint by the cluster's policy among those not in `exclude` (for a retry,
    /// the endpoints already tried), honouring outlier ejection as described on the type.
    /// `key` is the request's hash key for `RingHash` and `Rendezvous` (ignored by the
    /// other policies); without one those pick by a random key from `rng`. `now` un-ejects
    /// endpoints whose ejection ended. `None` only for an empty cluster or when every
    /// endpoint is excluded. The pick does not count the request: call
    /// [`LbState::start_request`] or [`LbState::on_request_start`] when it is sent.
    pub fn pick_excluding(
        &mut self,
        cluster: &ClusterLb,
        key: Option<u64>,
        now: Instant,
        rng: &mut impl FnMut() -> u64,
        exclude: &[EndpointId],
    ) -> Option<EndpointId> {
        if !self.balances(cluster) {
            // A new endpoint list: the endpoints that stay keep their outlier state (an
            // ejected one stays out), the rest starts afresh.
            let old: HashMap<SocketAddr, usize> = self
                .addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, i))
                .collect();
            let outlier = self.outlier.remapped(cluster.len(), |i| {
                old.get(&cluster.addr(EndpointId::new(i as u32))?).copied()
            });
            *self = Self::new(cluster, outlier.config().clone());
            self.outlier = outlier;
        }
        self.outlier.refresh(now);
        let n = cluster.len();
        let excluded = |i: usize| exclude.iter().any(|e| e.index() == i);
        let outlier = &self.outlier;
        let checked = cluster.health();
        let healthy = |i: usize| {
            !outlier.is_ejected(EndpointId::new(i as u32)) && checked.is_none_or(|h| !h.is_down(i))
        };
        let honour_ejection = (0..n).any(|i| !excluded(i) && healthy(i));
        if !honour_ejection && (0..n).all(excluded) {
            return None;
        }
        let endpoints = cluster.endpoints();
        let (wrr, scratch, in_flight) = (&mut self.wrr, &mut self.scratch, &self.in_flight);
        let mut choose = |honour: bool| {
            let eligible = |i: usize| !excluded(i) && (!honour || healthy(i));
            match cluster.algorithm() {
                Algorithm::RoundRobin => wrr.pick(endpoints, eligible),
                Algorithm::LeastRequest => {
                    let all = exclude.is_empty()
                        && (!honour
                            || outlier.stats().currently_ejected == 0
                                && checked.is_none_or(|h| h.down_count() == 0));
                    least_request::pick(endpoints, in_flight, eligible, all, scratch, rng)
                }
                Algorithm::Table(table) => {
                    table.lookup(key.unwrap_or_else(&mut *rng), &|i| !eligible(i))
                }
            }
        };
        let mut chosen = choose(honour_ejection);
        // Health flags are written by another thread: the last eligible endpoint may have
        // gone out since it was counted. Then the pick is made as in panic mode.
        let panic = !honour_ejection || chosen.is_none();
        if honour_ejection && chosen.is_none() {
            chosen = choose(false);
        }
        if panic {
            self.panic_picks += 1;
        }
        // A table's answer comes from a provider: out of range means none. In range, the
        // index fits in u32 (the cluster has at most MAX_ENDPOINTS endpoints).
        chosen.filter(|&i| i < n).map(|i| EndpointId::new(i as u32))
    }

    /// Counts a request to `id` as in flight (unknown ids are ignored).
    pub fn on_request_start(&self, id: EndpointId) {
        if let Some(c) = self.in_flight.get(id.index()) {
            c.set(c.get().saturating_add(1));
        }
    }

    /// Ends a request counted by [`LbState::on_request_start`] (never below zero).
    pub fn on_request_end(&self, id: EndpointId) {
        decrement(&self.in_flight, id);
    }

    /// Counts a request to `id` as in flight until the returned guard is dropped.
    pub fn start_request(&self, id: EndpointId) -> RequestGuard {
        self.on_request_start(id);
        RequestGuard {
            counts: Rc::clone(&self.in_flight),
            id,
        }
    }

    /// Requests to `id` in flight from this worker.
    pub fn in_flight(&self, id: EndpointId) -> u32 {
        self.in_flight.get(id.index()).map_or(0, Cell::get)
    }

    /// Takes the outlier settings of a new snapshot, keeping the endpoints' state.
    pub fn set_outlier_config(&mut self, config: &OutlierConfig) {
        if self.outlier.config() != config {
            self.outlier.set_config(config.clone());
        }
    }

    /// Whether this state balances `cluster`'s endpoints (as last picked for).
    pub fn balances(&self, cluster: &ClusterLb) -> bool {
        cluster.fingerprint() == self.fingerprint && cluster.len() == self.in_flight.len()
    }

    /// Feeds a request's outcome to the outlier detector; true if it ejected `id`.
    pub fn report(&mut self, id: EndpointId, outcome: Outcome, now: Instant) -> bool {
        self.outlier.report(id, outcome, now)
    }

    /// The outlier detector (ejection state and its counters).
    pub fn outlier(&self) -> &OutlierDetector {
        &self.outlier
    }

    /// Picks made in panic mode (every candidate ejected, ejection ignored).
    pub fn panic_picks(&self) -> u64 {
        self.panic_picks
    }
}

#[cfg(test)]
mod tests;
