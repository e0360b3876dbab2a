//! The compiled, immutable half: a cluster's endpoints, weights and policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use omnirelay_abstractions::topology::{
    Member, TopologyStrategy, TopologyTable,
    hash::{hash_socket_addr, mix64},
};

use super::{EndpointId, Health, Strategies};

/// The most endpoints one cluster may have.
pub const MAX_ENDPOINTS: usize = 1 << 20;

/// How a cluster chooses an endpoint for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin (nginx's algorithm): over every run of `sum(weights)`
    /// picks each endpoint is chosen exactly `weight` times, interleaved as evenly as
    /// possible (weights 5,1,1 give `a a b a c a a`).
    RoundRobin,
    /// Power of two choices: two distinct random endpoints, the one with the lower
    /// `(in_flight + 1) / weight` wins.
    LeastRequest,
    /// Consistent hashing on a ring, built once per snapshot by [`Strategies::ring_hash`].
    RingHash,
    /// Weighted rendezvous (highest random weight) hashing, by
    /// [`Strategies::rendezvous`].
    Rendezvous,
}

/// Why a cluster could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// Weights start at 1; remove an endpoint instead of giving it weight 0.
    #[error("endpoint {index} ({addr}) has weight 0; weights start at 1")]
    ZeroWeight {
        /// Position in the endpoint list.
        index: usize,
        /// Its address.
        addr: SocketAddr,
    },
    /// The same address appears twice; hash policies could not tell the two apart.
    #[error("endpoint {addr} is listed twice (positions {first} and {second})")]
    DuplicateEndpoint {
        /// The repeated address.
        addr: SocketAddr,
        /// Its first position.
        first: usize,
        /// Its second position.
        second: usize,
    },
    /// More than [`MAX_ENDPOINTS`] endpoints.
    #[error("{0} endpoints in one cluster; at most {MAX_ENDPOINTS} are supported")]
    TooManyEndpoints(usize),
    /// A strategy built a table over another number of members than it was given (a
    /// provider bug; lookups would name endpoints that do not exist).
    #[error("strategy {strategy} built a table of {built} members for {endpoints} endpoints")]
    TableSize {
        /// The strategy's name.
        strategy: &'static str,
        /// Members in the table it built.
        built: usize,
        /// Endpoints it was given.
        endpoints: usize,
    },
}

/// One endpoint as compiled: address and weight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
}

/// What the policy precomputed: hash-based policies look keys up in a table built by
/// their strategy, shared by every worker.
#[derive(Debug, Clone)]
pub(crate) enum Algorithm {
    RoundRobin,
    LeastRequest,
    Table(Arc<dyn TopologyTable>),
}

/// A compiled cluster: built once per config snapshot, immutable, `Send + Sync`, shared by
/// every worker. Per-worker mutable state lives in [`super::LbState`].
#[derive(Debug, Clone)]
pub struct ClusterLb {
    endpoints: Vec<Endpoint>,
    policy: Policy,
    algorithm: Algorithm,
    fingerprint: u64,
    /// The endpoints active health checks took out, when the cluster is checked.
    health: Option<Arc<Health>>,
}

impl ClusterLb {
    /// Compiles `endpoints` (address, weight ≥ 1; position i becomes `EndpointId(i)`) for
    /// `policy`, building the lookup table with the policy's provider from `strategies`
    /// when it needs one. Each endpoint is identified by the stable hash of its address
    /// ([`hash_socket_addr`]), so tables map keys alike on every proxy whatever the list
    /// order. An empty list is valid: every pick then returns `None`.
    pub fn new(
        endpoints: &[(SocketAddr, u32)],
        policy: Policy,
        strategies: &Strategies,
    ) -> Result<Self, LbError> {
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(LbError::TooManyEndpoints(endpoints.len()));
        }
        let mut seen = HashMap::with_capacity(endpoints.len());
        let mut compiled = Vec::with_capacity(endpoints.len());
        let mut members = Vec::with_capacity(endpoints.len());
        // The fingerprint identifies the endpoint list (addresses, weights, order), so a
        // worker can keep its LbState across snapshots that did not change this cluster.
        let mut fingerprint = mix64(endpoints.len() as u64);
        for (index, &(addr, weight)) in endpoints.iter().enumerate() {
            if weight == 0 {
                return Err(LbError::ZeroWeight { index, addr });
            }
            if let Some(first) = seen.insert(addr, index) {
                return Err(LbError::DuplicateEndpoint {
                    addr,
                    first,
                    second: index,
                });
            }
            let hash = hash_socket_addr(addr);
            fingerprint = mix64(fingerprint ^ hash).wrapping_add(u64::from(weight));
            compiled.push(Endpoint { addr, weight });
            members.push(Member::new(hash, weight));
        }
        let algorithm = match policy {
            Policy::RoundRobin => Algorithm::RoundRobin,
            Policy::LeastRequest => Algorithm::LeastRequest,
            Policy::RingHash => table(strategies.ring_hash.as_ref(), &members)?,
            Policy::Rendezvous => table(strategies.rendezvous.as_ref(), &members)?,
        };
        Ok(Self {
            endpoints: compiled,
            policy,
            algorithm,
            fingerprint,
            health: None,
        })
    }

    /// The cluster with its endpoints' active health kept in `health` (one flag per
    /// endpoint, in list order; a `health` of another length is not taken).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        if health.len() == self.endpoints.len() {
            self.health = Some(health);
        }
        self
    }

    /// The endpoints active health checks took out, when the cluster is checked.
    pub fn health(&self) -> Option<&Arc<Health>> {
        self.health.as_ref()
    }

    /// The id of the endpoint at `addr` (a linear search: for the health checker, not
    /// for requests).
    pub fn id_of(&self, addr: SocketAddr) -> Option<EndpointId> {
        let i = self.endpoints.iter().position(|e| e.addr == addr)?;
        // len ≤ MAX_ENDPOINTS, so every index fits in u32.
        Some(EndpointId::new(i as u32))
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the cluster has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The policy this cluster was compiled for.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The address of endpoint `id`, `None` if out of range.
    pub fn addr(&self, id: EndpointId) -> Option<SocketAddr> {
        self.endpoints.get(id.index()).map(|e| e.addr)
    }

    /// The weight of endpoint `id`, `None` if out of range.
    pub fn weight(&self, id: EndpointId) -> Option<u32> {
        self.endpoints.get(id.index()).map(|e| e.weight)
    }

    /// Every endpoint id, in list order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = EndpointId> + '_ {
        // len ≤ MAX_ENDPOINTS, so every index fits in u32.
        (0..self.endpoints.len() as u32).map(EndpointId::new)
    }

    /// Equal for two clusters compiled from the same endpoint list (addresses, weights,
    /// order), whatever their policy.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub(crate) fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }
}

/// Builds `strategy`'s table over `members`, refusing a table of the wrong size.
fn table(strategy: &dyn TopologyStrategy, members: &[Member]) -> Result<Algorithm, LbError> {
    let table: Arc<dyn TopologyTable> = Arc::from(strategy.build(members));
    if table.members() != members.len() {
        return Err(LbError::TableSize {
            strategy: strategy.name(),
            built: table.members(),
            endpoints: members.len(),
        });
    }
    Ok(Algorithm::Table(table))
}

#[cfg(test)]
mod tests;
