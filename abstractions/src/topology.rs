//! `TopologyStrategy`: maps a key (a request hash, a shard id) onto one of a weighted set of
//! members. The data plane uses it for ring-hash and rendezvous balancing; the control
//! plane for shard assignment. First-party strategies: ring hash and rendezvous.
//!
//! A strategy builds an immutable table once per snapshot; lookups are then cheap, pure and
//! shareable across worker threads.

/// A strategy that builds lookup tables.
pub trait TopologyStrategy: Send + Sync {
    /// The strategy's name as config spells it (`"ring_hash"`, `"rendezvous"`).
    fn name(&self) -> &'static str;

    /// Builds a table over members with these weights (index = member id). Members with
    /// weight 0 are never chosen.
    fn build(&self, weights: &[u32]) -> Box<dyn TopologyTable>;
}

/// An immutable table built by a [`TopologyStrategy`].
pub trait TopologyTable: Send + Sync + std::fmt::Debug {
    /// The member for `key`, skipping members for which `skip` returns true (ejected or
    /// already tried); `None` if every member is skipped or has weight 0.
    fn lookup(&self, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// Number of members the table was built over.
    fn members(&self) -> usize;
}
