//! Weighted rendezvous (highest random weight) hashing.
//!
//! For a key `k` every member not skipped gets a score and the highest wins (on an exact
//! tie, which needs two identical 52-bit hashes, the higher member key, so the winner never
//! depends on list order):
//!
//! ```text
//! h     = mix64(member_key ^ mix64(k))               member_key = Member::key
//! u     = ((h >> 12) + 0.5) / 2^52                   uniform in (0, 1), never 0 or 1
//! score = weight / -ln(u)
//! ```
//!
//! `-ln(u)` is exponentially distributed with rate 1, so `-ln(u) / weight` is exponential
//! with rate `weight` and the smallest of those (the highest score) belongs to member `i`
//! with probability `weight_i / sum(weights)` (Schindelhauer and Schomaker's weighted
//! distributed hash tables). A score depends only on the key and that member's identity
//! and weight, so removing a member moves exactly the keys it held, adding one moves only
//! keys to it, and a skipped member's keys go to their second-best members while every
//! other key stays put. Cost: one hash and one logarithm per member per lookup, with no
//! precomputed state; prefer ring hash for hundreds of members.

use omnirelay_abstractions::topology::{Member, TopologyStrategy, TopologyTable, hash::mix64};

/// Weighted rendezvous hashing (`"rendezvous"`); see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RendezvousStrategy;

impl TopologyStrategy for RendezvousStrategy {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    fn build(&self, members: &[Member]) -> Box<dyn TopologyTable> {
        Box::new(Rendezvous {
            members: members.to_vec(),
        })
    }
}

/// The members as given: rendezvous needs nothing precomputed.
#[derive(Debug, Clone)]
struct Rendezvous {
    members: Vec<Member>,
}

/// Maps a hash onto (0, 1). 52 bits plus one half fit an f64 mantissa exactly, so the
/// result is never rounded to 0 or 1 (which would make the score 0 or infinite).
fn unit(h: u64) -> f64 {
    ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

/// The score of one member for an already mixed key.
fn score(member: &Member, mixed_key: u64) -> f64 {
    let u = unit(mix64(member.key ^ mixed_key));
    f64::from(member.weight) / -u.ln()
}

/// Whether `(score, key)` beats the best so far: the higher score, then the higher key.
/// Scores are finite and positive, so `total_cmp` is the numeric order.
fn beats(candidate: (f64, u64), best: (f64, u64)) -> bool {
    let (score, key) = candidate;
    score.total_cmp(&best.0).then(key.cmp(&best.1)).is_gt()
}

impl TopologyTable for Rendezvous {
    /// The member with the highest score for `key` among those with a weight and not
    /// skipped.
    fn lookup(&self, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mixed_key = mix64(key);
        let mut best: Option<(usize, (f64, u64))> = None;
        for (i, member) in self.members.iter().enumerate() {
            if member.weight == 0 || skip(i) {
                continue;
            }
            let candidate = (score(member, mixed_key), member.key);
            if best.is_none_or(|(_, top)| beats(candidate, top)) {
                best = Some((i, candidate));
            }
        }
        best.map(|(i, _)| i)
    }

    fn members(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{lookup, members};

    fn table(list: &[Member]) -> Box<dyn TopologyTable> {
        RendezvousStrategy.build(list)
    }

    #[test]
    fn unit_interval_is_open_so_scores_stay_finite_and_positive() {
        for h in [0, 1, 1 << 12, u64::MAX - 1, u64::MAX] {
            let u = unit(h);
            assert!(u > 0.0 && u < 1.0, "{h}: {u}");
            for weight in [1.0, f64::from(u32::MAX)] {
                let s = weight / -u.ln();
                assert!(s.is_finite() && s > 0.0, "{h}: {s}");
            }
        }
        assert!(score(&members(&[u32::MAX])[0], 42).is_finite());
    }

    #[test]
    fn exact_ties_go_to_the_higher_key() {
        assert!(beats((1.0, 2), (1.0, 1)));
        assert!(!beats((1.0, 1), (1.0, 2)));
        assert!(
            !beats((1.0, 1), (1.0, 1)),
            "the first of two equal members stays"
        );
        assert!(beats((2.0, 0), (1.0, u64::MAX)), "the score comes first");
    }

    #[test]
    fn same_key_same_member_independent_of_list_order() {
        let list = members(&[1, 2, 3, 4, 5]);
        let t = table(&list);
        let mut reversed = list.clone();
        reversed.reverse();
        let r = table(&reversed);
        for key in 0..2_000 {
            assert_eq!(lookup(t.as_ref(), key), lookup(t.as_ref(), key));
            let (a, b) = (lookup(t.as_ref(), key), lookup(r.as_ref(), key));
            assert_eq!(list[a].key, reversed[b].key);
        }
    }

    #[test]
    fn distribution_is_proportional_to_weight() {
        let weights = [1, 2, 3, 4];
        let t = table(&members(&weights));
        let n = 50_000u32;
        let mut hits = [0u32; 4];
        for key in 0..n {
            hits[lookup(t.as_ref(), u64::from(key))] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            let expected = f64::from(n) * f64::from(*w) / 10.0;
            let ratio = f64::from(hits[i]) / expected;
            assert!((0.95..1.05).contains(&ratio), "member {i}: {hits:?}");
        }
    }

    #[test]
    fn removing_a_member_moves_exactly_its_keys() {
        let list = members(&[3, 1, 2, 5, 1, 4]);
        let full = table(&list);
        let removed = 3;
        let mut rest = list.clone();
        rest.remove(removed);
        let smaller = table(&rest);
        let mut moved = 0;
        for key in 0..10_000 {
            let before = list[lookup(full.as_ref(), key)].key;
            let after = rest[lookup(smaller.as_ref(), key)].key;
            if before == list[removed].key {
                moved += 1;
            } else {
                assert_eq!(before, after, "key {key} moved off a surviving member");
            }
        }
        // The removed member had weight 5 of 16.
        assert!((2_800..3_450).contains(&moved), "{moved}");
    }

    #[test]
    fn adding_a_member_moves_only_keys_to_it_about_one_in_n_plus_one() {
        let n = 10;
        let list = members(&[1; 11]);
        let (before, after) = (table(&list[..n]), table(&list));
        let mut moved = 0;
        for key in 0..10_000 {
            let (old, new) = (lookup(before.as_ref(), key), lookup(after.as_ref(), key));
            if old != new {
                assert_eq!(new, n);
                moved += 1;
            }
        }
        assert!((10_000 / 22..10_000 * 3 / 22).contains(&moved), "{moved}");
    }

    #[test]
    fn skipped_members_hand_their_keys_to_the_runner_up() {
        let t = table(&members(&[1, 1, 1, 1]));
        let mut rehomed = [0u32; 4];
        for key in 0..4_000 {
            let home = lookup(t.as_ref(), key);
            let other = t.lookup(key, &|i| i == 1).unwrap();
            if home == 1 {
                rehomed[other] += 1;
            } else {
                assert_eq!(other, home);
            }
        }
        assert_eq!(rehomed[1], 0);
        assert!(
            rehomed.iter().filter(|&&h| h > 200).count() == 3,
            "{rehomed:?}"
        );
        assert_eq!(t.lookup(5, &|_| true), None);
    }
}
