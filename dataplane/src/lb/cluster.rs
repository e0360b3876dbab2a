//! The compiled, immutable half: a cluster's endpoints, weights and policy.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::EndpointId;
use super::hash::{hash_socket_addr, mix64};
use super::ring_hash::Ring;

/// The default [`Policy::RingHash`] minimum ring size (Envoy's default too).
pub const DEFAULT_MIN_RING_SIZE: usize = 1024;
/// The largest accepted `min_ring_size`. A ring has fewer than `2 * min_ring_size +
/// endpoints` points (12 bytes each), so at most about 110 MB.
pub const MAX_MIN_RING_SIZE: usize = 1 << 22;
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
    /// Consistent hashing on a ring of at least `min_ring_size` points, built once here.
    RingHash {
        /// The ring has at least this many points (and fewer than about twice as many).
        min_ring_size: usize,
    },
    /// Weighted rendezvous (highest random weight) hashing: the endpoint with the highest
    /// `weight / -ln(u)` wins, `u` a uniform (0, 1) value hashed from endpoint and key.
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
    /// `min_ring_size` is 0 or above [`MAX_MIN_RING_SIZE`].
    #[error("min_ring_size {0} is outside 1..={MAX_MIN_RING_SIZE}")]
    InvalidRingSize(usize),
}

/// One endpoint as compiled: address, weight and the stable hash of its address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) hash: u64,
}

/// The policy with whatever it precomputed.
#[derive(Debug, Clone)]
pub(crate) enum Algorithm {
    RoundRobin,
    LeastRequest,
    RingHash { min_ring_size: usize, ring: Ring },
    Rendezvous,
}

/// A compiled cluster: built once per config snapshot, immutable, `Send + Sync`, shared by
/// every worker. Per-worker mutable state lives in [`super::LbState`].
#[derive(Debug, Clone)]
pub struct ClusterLb {
    endpoints: Vec<Endpoint>,
    algorithm: Algorithm,
    fingerprint: u64,
}

impl ClusterLb {
    /// Compiles `endpoints` (address, weight ≥ 1; position i becomes `EndpointId(i)`) for
    /// `policy`, building the hash ring when the policy needs one. An empty list is valid:
    /// every pick then returns `None`.
    pub fn new(endpoints: &[(SocketAddr, u32)], policy: Policy) -> Result<Self, LbError> {
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(LbError::TooManyEndpoints(endpoints.len()));
        }
        let mut seen = HashMap::with_capacity(endpoints.len());
        let mut compiled = Vec::with_capacity(endpoints.len());
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
            compiled.push(Endpoint { addr, weight, hash });
        }
        let algorithm = match policy {
            Policy::RoundRobin => Algorithm::RoundRobin,
            Policy::LeastRequest => Algorithm::LeastRequest,
            Policy::RingHash { min_ring_size } => {
                let ring = Ring::build(&compiled, min_ring_size)?;
                Algorithm::RingHash {
                    min_ring_size,
                    ring,
                }
            }
            Policy::Rendezvous => Algorithm::Rendezvous,
        };
        Ok(Self {
            endpoints: compiled,
            algorithm,
            fingerprint,
        })
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
        match self.algorithm {
            Algorithm::RoundRobin => Policy::RoundRobin,
            Algorithm::LeastRequest => Policy::LeastRequest,
            Algorithm::RingHash { min_ring_size, .. } => Policy::RingHash { min_ring_size },
            Algorithm::Rendezvous => Policy::Rendezvous,
        }
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

    /// The number of points on the hash ring (`None` unless the policy is `RingHash`).
    pub fn ring_len(&self) -> Option<usize> {
        self.ring().map(Ring::len)
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

    pub(crate) fn ring(&self) -> Option<&Ring> {
        match &self.algorithm {
            Algorithm::RingHash { ring, .. } => Some(ring),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
