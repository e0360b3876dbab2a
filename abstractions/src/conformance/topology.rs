//! The `TopologyStrategy` suite: what every strategy guarantees, whatever its algorithm.
//! Minimal disruption is deliberately not here: it is a property of consistent strategies
//! (each tests its own), not of the contract.

use crate::topology::{Member, TopologyStrategy, TopologyTable};

/// Lookup keys spread over the whole `u64` range, as request hashes are.
fn keys(n: u64, spread: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |k| k.wrapping_mul(spread))
}

fn none(_: usize) -> bool {
    false
}

/// Lookups are deterministic (within a table and across two builds, as on two proxies),
/// answer in range, never choose a weight-0 member and honour `skip`; every member skipped
/// gives `None`.
pub fn topology_lookups_honour_weights_and_skip(strategy: &dyn TopologyStrategy) {
    let members = Member::indexed(&[1, 1, 1, 0]);
    let table = strategy.build(&members);
    let again = strategy.build(&members);
    assert_eq!(table.members(), 4, "members() counts weight-0 members too");
    for key in keys(2_000, 0x9E37_79B9_7F4A_7C15) {
        let a = table.lookup(key, &none).expect("some member");
        assert!(a < 4, "lookup answered {a} for 4 members");
        assert_eq!(Some(a), table.lookup(key, &none), "lookup is deterministic");
        assert_eq!(Some(a), again.lookup(key, &none), "two builds disagree");
        assert_ne!(a, 3, "weight-0 member chosen");
        let b = table.lookup(key, &|m| m == a).expect("another member");
        assert_ne!(a, b, "skipped member chosen");
        let c = table.lookup(key, &|m| m == a || m == b).expect("the third");
        assert!(c != a && c != b && c != 3, "skip {a},{b} gave {c}");
        assert_eq!(
            table.lookup(key, &|m| m != 3),
            None,
            "only a weight-0 member left gives None"
        );
    }
    assert_eq!(table.lookup(42, &|_| true), None, "all skipped gives None");
}

/// Shares follow weights (3:1) within 15 percentage points over 20k keys.
pub fn topology_shares_follow_weights(strategy: &dyn TopologyStrategy) {
    let table = strategy.build(&Member::indexed(&[3, 1]));
    let firsts = keys(20_000, 0xD6E8_FEB8_6659_FD93)
        .filter(|&k| table.lookup(k, &none) == Some(0))
        .count();
    let share = firsts as f64 / 20_000.0;
    assert!(
        (0.60..=0.90).contains(&share),
        "weight 3:1 gave share {share:.3}"
    );
}

/// No members, only weight-0 members, and a single member.
pub fn topology_degenerate_member_sets(strategy: &dyn TopologyStrategy) {
    let empty = strategy.build(&[]);
    assert_eq!(empty.members(), 0);
    assert_eq!(empty.lookup(1, &none), None, "empty table gives None");
    let zeros = strategy.build(&Member::indexed(&[0, 0]));
    assert_eq!(zeros.lookup(1, &none), None, "all weights 0 gives None");
    let single = strategy.build(&Member::indexed(&[5]));
    for key in keys(100, 0x9E37_79B9_7F4A_7C15) {
        assert_eq!(single.lookup(key, &none), Some(0), "single member");
        assert_eq!(single.lookup(key, &|_| true), None, "single member skipped");
    }
}

/// The member owning a key (and, with one member skipped by identity, its successor)
/// depends on keys and weights, not on the order of the members.
pub fn topology_member_order_does_not_matter(strategy: &dyn TopologyStrategy) {
    let members = Member::indexed(&[1, 2, 3, 4, 5, 1]);
    let mut reversed = members.clone();
    reversed.reverse();
    let mut rotated = members.clone();
    rotated.rotate_left(2);
    let tables: Vec<(&[Member], Box<dyn TopologyTable>)> = [&members, &reversed, &rotated]
        .into_iter()
        .map(|list| (list.as_slice(), strategy.build(list)))
        .collect();
    let owner = |list: &[Member], table: &dyn TopologyTable, key: u64, skip: Option<u64>| {
        let found = table.lookup(key, &|m| Some(list[m].key) == skip);
        found.map(|m| list[m].key)
    };
    for key in keys(2_000, 0xD6E8_FEB8_6659_FD93) {
        for skip in [None, Some(members[3].key)] {
            let (list, table) = &tables[0];
            let expected = owner(list, table.as_ref(), key, skip);
            assert!(expected.is_some(), "no owner for key {key}");
            for (other, t) in &tables[1..] {
                assert_eq!(
                    owner(other, t.as_ref(), key, skip),
                    expected,
                    "member order changed the owner of key {key}"
                );
            }
        }
    }
}

/// Every rule above.
pub fn topology_strategy_contract(strategy: &dyn TopologyStrategy) {
    topology_lookups_honour_weights_and_skip(strategy);
    topology_shares_follow_weights(strategy);
    topology_degenerate_member_sets(strategy);
    topology_member_order_does_not_matter(strategy);
}

#[cfg(test)]
mod tests {
    //! The suite against a deliberately naive strategy (position-based, weight-blind), to
    //! show which rules catch what.
    use super::*;

    /// Walks members cyclically from `key % n`: skip- and weight-0-aware, nothing more.
    struct Positional;

    #[derive(Debug)]
    struct PositionalTable(Vec<u32>);

    impl TopologyStrategy for Positional {
        fn name(&self) -> &'static str {
            "positional"
        }
        fn build(&self, members: &[Member]) -> Box<dyn TopologyTable> {
            Box::new(PositionalTable(members.iter().map(|m| m.weight).collect()))
        }
    }

    impl TopologyTable for PositionalTable {
        fn lookup(&self, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
            let n = self.0.len();
            let start = usize::try_from(key % n.max(1) as u64).ok()?;
            (0..n)
                .map(|i| (start + i) % n)
                .find(|&m| self.0[m] > 0 && !skip(m))
        }
        fn members(&self) -> usize {
            self.0.len()
        }
    }

    #[test]
    fn a_naive_strategy_passes_the_structural_rules() {
        topology_lookups_honour_weights_and_skip(&Positional);
        topology_degenerate_member_sets(&Positional);
    }

    #[test]
    #[should_panic(expected = "member order changed the owner")]
    fn position_based_ownership_is_caught() {
        topology_member_order_does_not_matter(&Positional);
    }

    #[test]
    #[should_panic(expected = "weight 3:1 gave share")]
    fn ignoring_weights_is_caught() {
        topology_shares_follow_weights(&Positional);
    }
}
