//! Test fixtures for the load balancers. Like `tests.rs` files, this file may name a
//! provider crate; library code may not (`tests/wiring.rs` checks).

use super::{ClusterLb, Policy, Strategies};
use omnirelay_abstractions::topology::{Member, TopologyStrategy, TopologyTable};
use omnirelay_plugin_topology::{RendezvousStrategy, RingHashStrategy};
use std::{net::SocketAddr, sync::Arc};

/// The first-party providers, wired as `main.rs` wires them.
pub(crate) fn strategies() -> Strategies {
    Strategies {
        ring_hash: Arc::new(RingHashStrategy::default()),
        rendezvous: Arc::new(RendezvousStrategy),
    }
}

/// `(10.0.x.y:8080, weight)` for each weight, distinct addresses.
pub(crate) fn endpoints(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    (0..weights.len())
        .map(|i| {
            let ip = [10, 0, (i >> 8) as u8, i as u8];
            (SocketAddr::from((ip, 8080)), weights[i])
        })
        .collect()
}

/// The cluster over `list` with the first-party providers.
pub(crate) fn cluster_with(list: &[(SocketAddr, u32)], policy: Policy) -> ClusterLb {
    ClusterLb::new(list, policy, &strategies()).unwrap()
}

/// The cluster over `endpoints(weights)`.
pub(crate) fn cluster(weights: &[u32], policy: Policy) -> ClusterLb {
    cluster_with(&endpoints(weights), policy)
}

/// A fake provider: its tables send every key to `member` unless it is skipped (in range
/// or not) and report as many members as they were built over, or `claim` if set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Always {
    pub(crate) member: usize,
    pub(crate) claim: Option<usize>,
}

#[derive(Debug)]
struct AlwaysTable {
    member: usize,
    members: usize,
}

impl TopologyStrategy for Always {
    fn name(&self) -> &'static str {
        "always"
    }

    fn build(&self, members: &[Member]) -> Box<dyn TopologyTable> {
        Box::new(AlwaysTable {
            member: self.member,
            members: self.claim.unwrap_or(members.len()),
        })
    }
}

impl TopologyTable for AlwaysTable {
    fn lookup(&self, _: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        (!skip(self.member)).then_some(self.member)
    }

    fn members(&self) -> usize {
        self.members
    }
}
