//! `TopologyStrategy`: maps a key (a request hash, a shard id) onto one of a weighted set of
//! members. The data plane uses it for ring-hash and rendezvous balancing; the control
//! plane for shard assignment. First-party strategies: ring hash and rendezvous
//! (`plugins/internal/topology`).
//!
//! A strategy builds an immutable table once per snapshot; lookups are then cheap, pure and
//! shareable across worker threads.
//!
//! **Identity.** Members are identified by a stable [`Member::key`] the caller chooses (for
//! an endpoint, [`hash::hash_socket_addr`] of its address), never by their position. A
//! strategy derives its table from keys and weights only, so the member owning a lookup
//! key is the same whatever order the members are listed in, and on every process that
//! builds a table over the same members: that is what lets a fleet of proxies agree, and
//! what keeps keys in place when a snapshot reorders or adds endpoints. Lookups still
//! answer with positions (indexes into the slice given to `build`), so callers keep their
//! per-member state in plain vectors.

pub mod hash;

/// One member of a topology: its stable identity and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// A stable hash of the member's identity, chosen by the caller (see the module
    /// documentation). Distinct members need distinct keys: a strategy cannot tell two
    /// members with the same key apart.
    pub key: u64,
    /// The member's relative share of keys; weight 0 is never chosen.
    pub weight: u32,
}

impl Member {
    /// A member with this identity hash and weight.
    pub const fn new(key: u64, weight: u32) -> Self {
        Self { key, weight }
    }

    /// Members identified by their position (shard `i` of `weights.len()`), for callers
    /// whose members have no identity but their number: member `i` gets
    /// `hash_key(&(i as u64).to_le_bytes())` as its key.
    pub fn indexed(weights: &[u32]) -> Vec<Self> {
        (0u64..)
            .zip(weights)
            .map(|(i, &weight)| Self::new(hash::hash_key(&i.to_le_bytes()), weight))
            .collect()
    }
}

/// A strategy that builds lookup tables.
pub trait TopologyStrategy: Send + Sync {
    /// The strategy's name as config spells it (`"ring_hash"`, `"rendezvous"`).
    fn name(&self) -> &'static str;

    /// Builds a table over `members` (a lookup answers with an index into this slice).
    /// Members with weight 0 are never chosen. Which member owns a key depends on the
    /// members' keys and weights, never on their order.
    fn build(&self, members: &[Member]) -> Box<dyn TopologyTable>;
}

/// An immutable table built by a [`TopologyStrategy`].
pub trait TopologyTable: Send + Sync + std::fmt::Debug {
    /// The member for `key`, skipping members for which `skip` returns true (ejected or
    /// already tried); `None` if every member is skipped or has weight 0.
    fn lookup(&self, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// Number of members the table was built over.
    fn members(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_members_keep_weights_and_get_distinct_stable_keys() {
        let members = Member::indexed(&[3, 0, 1]);
        assert_eq!(
            members.iter().map(|m| m.weight).collect::<Vec<_>>(),
            [3, 0, 1]
        );
        assert_eq!(members[0].key, hash::hash_key(&0u64.to_le_bytes()));
        assert_ne!(members[0].key, members[1].key);
        // The key depends on the position only, not on the weights around it.
        assert_eq!(Member::indexed(&[7, 7])[1], Member::new(members[1].key, 7));
    }
}
