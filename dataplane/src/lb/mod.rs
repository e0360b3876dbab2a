//! Sans-IO load balancing and endpoint health for the data plane.
//!
//! Two halves, split by who may touch them:
//!
//! * [`ClusterLb`] is the compiled, immutable description of one upstream cluster: its
//!   endpoints, their weights, the [`Policy`] and anything the policy precomputes. It is
//!   built once per config snapshot and is `Send + Sync`, so every worker can read the
//!   same `Arc<ClusterLb>`.
//! * The hash-based policies ([`Policy::RingHash`], [`Policy::Rendezvous`]) are not
//!   implemented here: their tables come from providers of the `TopologyStrategy`
//!   contract (`omnirelay_abstractions::topology`), chosen by whoever starts the data plane
//!   and passed in as [`Strategies`]. Round robin and least request need per-worker state
//!   and stay here.
//! * [`LbState`] is the mutable per-worker half: smooth weighted round-robin counters,
//!   in-flight request counts, the passive [`OutlierDetector`]. Each worker thread owns its
//!   own (it is `!Send`/`!Sync`: in-flight counts are shared with [`RequestGuard`]s through
//!   an `Rc`), so nothing in it locks or uses atomics. A [`RetryBudget`] is per worker too.
//! * [`Health`] is the one shared, written half: the endpoints a cluster's active health
//!   checks took out, set by the data plane's checker and read by every worker's picks
//!   (a `ClusterLb` carries it when its cluster is health-checked).
//!
//! Nothing in this module reads a clock, opens a socket or draws from a global random
//! source:
//!
//! * **Time** is a caller-supplied [`std::time::Instant`] (`now`). Tests build one base
//!   instant and add durations to it, so every schedule is deterministic.
//! * **Randomness** is a caller-supplied `&mut impl FnMut() -> u64` returning uniformly
//!   distributed 64-bit values. [`SplitMix64`] is a small seeded generator for that:
//!   `let mut rng = SplitMix64::new(seed); state.pick(&cluster, None, now, &mut || rng.next_u64())`.
//! * **Hash keys** for [`Policy::RingHash`] and [`Policy::Rendezvous`] are `u64`s the caller
//!   derives from the request, with [`hash_key`] (bytes, e.g. a header value) or [`hash_ip`]
//!   (client address). Both are stable across processes and releases (pinned by tests), so
//!   every proxy in a fleet maps a key to the same endpoint. They are re-exported from
//!   `omnirelay_abstractions::topology::hash`, the one definition strategies use too.
//!
//! A request's life with retries:
//!
//! ```
//! use std::{sync::Arc, time::{Duration, Instant}};
//! use omnirelay_dataplane::lb::{
//!     ClusterLb, FailureKind, LbState, OutlierConfig, Outcome, Policy, RetryBudget,
//!     RetryBudgetConfig, SplitMix64, Strategies, backoff, hash_key,
//! };
//! // The first-party providers, as the binary wires them (main.rs).
//! use omnirelay_plugin_topology::{RendezvousStrategy, RingHashStrategy};
//!
//! // Once per process:
//! let strategies = Strategies {
//!     ring_hash: Arc::new(RingHashStrategy::default()),
//!     rendezvous: Arc::new(RendezvousStrategy),
//! };
//! // Once per config snapshot, shared by all workers:
//! let endpoints = [("10.0.0.1:80".parse()?, 2), ("10.0.0.2:80".parse()?, 1)];
//! let cluster = ClusterLb::new(&endpoints, Policy::RingHash, &strategies)?;
//! // Once per worker:
//! let mut state = LbState::new(&cluster, OutlierConfig::default());
//! let mut budget = RetryBudget::new(RetryBudgetConfig::default(), Instant::now());
//! let mut rng = SplitMix64::new(1);
//!
//! // Per request:
//! let now = Instant::now();
//! let key = hash_key(b"session-42");
//! budget.record_request(now);
//! let first = state.pick(&cluster, Some(key), now, &mut || rng.next_u64()).expect("endpoints");
//! let in_flight = state.start_request(first);
//! // ... the attempt times out ...
//! drop(in_flight);
//! state.report(first, Outcome::Failure(FailureKind::Timeout), now);
//! if budget.try_acquire_retry(now) {
//!     let base = Duration::from_millis(25);
//!     let delay = backoff(0, base, Duration::from_secs(1), &mut || rng.next_u64());
//!     let later = now + delay;
//!     let retry = state.pick_excluding(&cluster, Some(key), later, &mut || rng.next_u64(), &[first]);
//!     assert!(retry.is_some_and(|other| other != first));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod cluster;
mod health;
mod least_request;
mod outlier;
mod retry_budget;
mod rng;
mod round_robin;
mod state;
mod strategies;

use std::fmt;

pub use backoff::{backoff, backoff_ceiling};
pub use cluster::{ClusterLb, LbError, MAX_ENDPOINTS, Policy};
pub use health::{Checked, Health};
pub use omnirelay_abstractions::topology::hash::{
    hash_ip, hash_key, hash_key_seeded, hash_socket_addr, mix64,
};
pub use outlier::{FailureKind, Outcome, OutlierConfig, OutlierDetector, OutlierStats};
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
pub use rng::SplitMix64;
pub use state::{LbState, RequestGuard};
pub use strategies::Strategies;

/// An endpoint of a cluster: its index in the endpoint list the [`ClusterLb`] was built
/// from. Only meaningful together with that cluster (and states built for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(u32);

impl EndpointId {
    /// The endpoint at `index` of the cluster's endpoint list.
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// The index into the cluster's endpoint list.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint#{}", self.0)
    }
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_id_round_trips_its_index() {
        let id = EndpointId::new(7);
        assert_eq!(id.index(), 7);
        assert_eq!(id.to_string(), "endpoint#7");
        assert!(EndpointId::new(1) < EndpointId::new(2));
    }
}
