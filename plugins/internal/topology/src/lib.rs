//! The first-party [`TopologyStrategy`] providers: consistent ring hashing
//! ([`RingHashStrategy`], `"ring_hash"`) and weighted rendezvous hashing
//! ([`RendezvousStrategy`], `"rendezvous"`).
//!
//! Both derive everything from the members' identity keys and weights
//! ([`omnirelay_abstractions::topology::Member`]), never from list positions, so proxies
//! that build a table over the same members agree on every key, and a snapshot that
//! reorders, adds or removes members moves as few keys as the algorithm allows. The data
//! plane uses them for its hash-based load-balancing policies; which provider backs which
//! policy is decided in one place per binary (the data plane's `main.rs`).
//!
//! [`TopologyStrategy`]: omnirelay_abstractions::topology::TopologyStrategy
#![forbid(unsafe_code)]

mod rendezvous;
mod ring_hash;

pub use rendezvous::RendezvousStrategy;
pub use ring_hash::{DEFAULT_MIN_RING_SIZE, MAX_MIN_RING_SIZE, RingHashStrategy};

#[cfg(test)]
pub(crate) mod test_util {
    use std::net::SocketAddr;

    use omnirelay_abstractions::topology::{Member, TopologyTable, hash::hash_socket_addr};

    /// Members keyed like the endpoints `10.0.x.y:8080`, one per weight.
    pub(crate) fn members(weights: &[u32]) -> Vec<Member> {
        (0..weights.len())
            .map(|i| {
                let ip = [10, 0, (i >> 8) as u8, i as u8];
                Member::new(hash_socket_addr(SocketAddr::from((ip, 8080))), weights[i])
            })
            .collect()
    }

    /// The owner of `key` with nothing skipped.
    pub(crate) fn lookup(table: &dyn TopologyTable, key: u64) -> usize {
        table.lookup(key, &|_| false).expect("a member")
    }
}

#[cfg(test)]
mod conformance {
    use super::{RendezvousStrategy, RingHashStrategy};
    use omnirelay_abstractions::topology::TopologyStrategy;

    omnirelay_abstractions::topology_strategy_conformance!(ring_hash, RingHashStrategy::default);
    omnirelay_abstractions::topology_strategy_conformance!(small_ring_hash, || {
        RingHashStrategy::new(16).expect("valid ring size")
    });
    omnirelay_abstractions::topology_strategy_conformance!(rendezvous, || RendezvousStrategy);

    #[test]
    fn names_are_the_config_names() {
        assert_eq!(RingHashStrategy::default().name(), "ring_hash");
        assert_eq!(RendezvousStrategy.name(), "rendezvous");
    }
}

/// The mapping itself is frozen like the hash: proxies of two releases in one fleet must
/// send a key to the same member. These answers were produced by the data plane's own ring
/// hash and rendezvous code before it moved here.
#[cfg(test)]
mod golden {
    use super::{RendezvousStrategy, RingHashStrategy, test_util::members};
    use omnirelay_abstractions::topology::{TopologyStrategy, hash::hash_key};

    fn answers(strategy: &dyn TopologyStrategy, skip: Option<usize>) -> Vec<usize> {
        let table = strategy.build(&members(&[3, 1, 2, 5, 1, 4, 7]));
        (0..24)
            .map(|k| hash_key(format!("user-{k}").as_bytes()))
            .map(|key| table.lookup(key, &|m| Some(m) == skip).expect("a member"))
            .collect()
    }

    #[test]
    fn ring_hash_answers_are_frozen() {
        let ring = RingHashStrategy::default();
        let expected = [
            5, 6, 3, 3, 2, 6, 3, 4, 2, 4, 2, 2, 4, 6, 2, 6, 3, 0, 3, 3, 3, 6, 0, 4,
        ];
        assert_eq!(answers(&ring, None), expected);
        let skip_3 = [
            5, 6, 5, 2, 2, 6, 5, 4, 2, 4, 2, 2, 4, 6, 2, 6, 6, 0, 5, 5, 6, 6, 0, 4,
        ];
        assert_eq!(answers(&ring, Some(3)), skip_3);
    }

    #[test]
    fn rendezvous_answers_are_frozen() {
        let expected = [
            4, 5, 0, 2, 5, 6, 6, 6, 6, 6, 3, 0, 6, 3, 2, 5, 0, 0, 2, 2, 6, 0, 6, 5,
        ];
        assert_eq!(answers(&RendezvousStrategy, None), expected);
        let skip_3 = [
            4, 5, 0, 2, 5, 6, 6, 6, 6, 6, 6, 0, 6, 5, 2, 5, 0, 0, 2, 2, 6, 0, 6, 5,
        ];
        assert_eq!(answers(&RendezvousStrategy, Some(3)), skip_3);
    }
}
