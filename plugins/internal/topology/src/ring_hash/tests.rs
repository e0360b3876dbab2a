use super::*;
use crate::test_util::{lookup, members};

fn ring(weights: &[u32], min_ring_size: usize) -> Ring {
    Ring::build(&members(weights), min_ring_size)
}

#[test]
fn ring_size_is_power_of_two_scaled_and_proportional_to_weight() {
    let r = ring(&[1, 2, 3], 1024); // 6 * 256 = 1536 >= 1024 > 6 * 128
    assert_eq!(r.len(), 1536);
    assert_eq!(r.points_by_member(), [256, 512, 768]);
    let big = ring(&[1_000_000, 3_000_000], 1024); // scaled down by 2^11
    let counts = big.points_by_member();
    assert_eq!(counts, [488, 1465]);
    let total: usize = counts.iter().sum();
    assert!((1024..2048).contains(&total));
    // A tiny weight next to a huge one still gets a point.
    assert_eq!(ring(&[1, 1 << 30], 1024).points_by_member()[0], 1);
    // The default strategy: 3 * 512, the power-of-two scale above 1024.
    let table = RingHashStrategy::default().build(&members(&[1, 1, 1]));
    assert_eq!(table.members(), 3);
    assert_eq!(ring(&[1, 1, 1], DEFAULT_MIN_RING_SIZE).len(), 1536);
}

#[test]
fn weight_zero_members_get_no_points_at_either_scale() {
    assert_eq!(ring(&[0, 1, 2], 1024).points_by_member(), [0, 512, 1024]);
    assert_eq!(ring(&[0, 1 << 30], 1024).points_by_member(), [0, 1024]);
    let zeros = ring(&[0, 0], 1024);
    assert_eq!((zeros.len(), zeros.members()), (0, 2));
}

#[test]
fn rejects_invalid_ring_sizes() {
    for bad in [0, MAX_MIN_RING_SIZE + 1] {
        let err = RingHashStrategy::new(bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("min_ring_size"), "{err}");
    }
    for good in [1, MAX_MIN_RING_SIZE] {
        assert_eq!(RingHashStrategy::new(good).unwrap().min_ring_size(), good);
    }
}

#[test]
fn same_key_same_member_independent_of_list_order() {
    let list = members(&[1, 2, 3, 4]);
    let r = Ring::build(&list, 1024);
    let mut reversed = list.clone();
    reversed.reverse();
    let rev = Ring::build(&reversed, 1024);
    for key in 0..2_000u64 {
        let first = lookup(&r, key);
        assert_eq!(first, lookup(&r, key));
        assert_eq!(list[first].key, reversed[lookup(&rev, key)].key);
    }
}

#[test]
fn distribution_is_proportional_to_weight() {
    let weights = [1, 2, 3, 4];
    let r = ring(&weights, 16_384);
    let mut hits = [0u32; 4];
    let n = 50_000u32;
    for key in 0..n {
        hits[lookup(&r, u64::from(key))] += 1;
    }
    for (i, w) in weights.iter().enumerate() {
        let expected = f64::from(n) * f64::from(*w) / 10.0;
        let ratio = f64::from(hits[i]) / expected;
        assert!((0.9..1.1).contains(&ratio), "member {i}: {hits:?}");
    }
}

#[test]
fn adding_a_member_moves_only_keys_to_it_about_one_in_n_plus_one() {
    for n in [4usize, 10, 25] {
        let list = members(&vec![1; n + 1]);
        let before = Ring::build(&list[..n], 1024);
        let after = Ring::build(&list, 1024);
        let keys = 10_000u64;
        let mut moved = 0;
        for key in 0..keys {
            let (old, new) = (lookup(&before, key), lookup(&after, key));
            if old != new {
                assert_eq!(new, n, "key {key} moved between old members");
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        let ideal = 1.0 / (n + 1) as f64;
        assert!(share > 0.5 * ideal && share < 1.5 * ideal, "n={n}: {share}");
    }
}

#[test]
fn skipped_owner_walks_clockwise_and_leaves_other_keys_alone() {
    let r = ring(&[1, 1, 1, 1], 256);
    let mut rehomed = [0u32; 4];
    for key in 0..4_000u64 {
        let home = lookup(&r, key);
        let without_2 = r.lookup(key, &|i| i == 2).unwrap();
        if home == 2 {
            assert_ne!(without_2, 2);
            rehomed[without_2] += 1;
        } else {
            assert_eq!(without_2, home);
        }
    }
    // Member 2's keys spread over the others rather than all landing on one.
    assert!(
        rehomed.iter().filter(|&&h| h > 50).count() == 3,
        "{rehomed:?}"
    );
    assert_eq!(r.lookup(1, &|_| true), None);
    assert_eq!(Ring::default().lookup(1, &|_| false), None);
}
