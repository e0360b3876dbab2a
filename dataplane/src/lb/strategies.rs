//! The providers behind the hash-based policies.
//!
//! The data plane knows the [`TopologyStrategy`] contract only, never a provider crate:
//! whoever starts it (the binary's `main.rs`, a test) fills a [`Strategies`] and hands it
//! to the [`crate::snapshot::SnapshotHolder`], which builds every cluster's table with it.
//! Swapping a provider is then a change in that one place.

use std::{fmt, sync::Arc};

use omnirelay_abstractions::topology::TopologyStrategy;

/// The [`TopologyStrategy`] that builds the table of each hash-based
/// [`super::Policy`]. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct Strategies {
    /// Builds the tables of [`super::Policy::RingHash`] clusters.
    pub ring_hash: Arc<dyn TopologyStrategy>,
    /// Builds the tables of [`super::Policy::Rendezvous`] clusters.
    pub rendezvous: Arc<dyn TopologyStrategy>,
}

impl fmt::Debug for Strategies {
    /// The providers' names: strategies themselves need not be `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Strategies")
            .field("ring_hash", &self.ring_hash.name())
            .field("rendezvous", &self.rendezvous.name())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::lb::test_util::strategies;

    #[test]
    fn debug_names_the_providers() {
        assert_eq!(
            format!("{:?}", strategies()),
            r#"Strategies { ring_hash: "ring_hash", rendezvous: "rendezvous" }"#
        );
    }
}
