//! Consistent hashing on a ring, built once per table; lookups are a binary search.
//!
//! **Sizing.** Every member gets `weight * 2^s` points (rounded, at least one; none for
//! weight 0), with `s` the smallest integer (possibly negative) such that
//! `sum(weights) * 2^s >= min_ring_size`. So the ring has between `min_ring_size` and about
//! twice that many points, and shares are proportional to weight. Because the scale is a
//! power of two, it only changes when the total weight crosses a power-of-two boundary
//! relative to `min_ring_size`; otherwise adding or removing a member leaves every other
//! member's points exactly where they were, and the only keys that move are those taken by
//! (or freed from) that member.
//!
//! **Points.** Point `r` of a member with key `h` ([`Member::key`]) is
//! `mix64(h + (r + 1) * G)`: it depends on the member's identity, never on its position,
//! and the first `k` points are the same whatever the count.
//!
//! **Lookup.** The key is mixed (`mix64(key)`, so sequential keys spread out), the first
//! point at or after it wins, wrapping around. If that point's member is skipped (ejected,
//! or already tried by this request), the walk continues clockwise to the next member not
//! skipped, so keys of an ejected member spread over its ring successors while every other
//! key stays put.

use omnirelay_abstractions::{
    Error, ErrorCode,
    topology::{
        Member, TopologyStrategy, TopologyTable,
        hash::{GOLDEN, mix64},
    },
};

/// The default minimum ring size (Envoy's default too).
pub const DEFAULT_MIN_RING_SIZE: usize = 1024;
/// The largest accepted `min_ring_size`. A ring has fewer than `2 * min_ring_size +
/// members` points (16 bytes each), so at most about 135 MB plus the members.
pub const MAX_MIN_RING_SIZE: usize = 1 << 22;

/// Consistent ring hashing (`"ring_hash"`); see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingHashStrategy {
    min_ring_size: usize,
}

impl RingHashStrategy {
    /// A strategy whose rings have at least `min_ring_size` points (and fewer than about
    /// twice as many); `InvalidArgument` outside `1..=MAX_MIN_RING_SIZE`.
    pub fn new(min_ring_size: usize) -> Result<Self, Error> {
        if min_ring_size == 0 || min_ring_size > MAX_MIN_RING_SIZE {
            let msg = format!("min_ring_size {min_ring_size} is outside 1..={MAX_MIN_RING_SIZE}");
            return Err(Error::new(ErrorCode::InvalidArgument, msg).with_provider("ring_hash"));
        }
        Ok(Self { min_ring_size })
    }

    /// The minimum number of points of a ring this strategy builds.
    pub fn min_ring_size(&self) -> usize {
        self.min_ring_size
    }
}

impl Default for RingHashStrategy {
    /// Rings of at least [`DEFAULT_MIN_RING_SIZE`] points.
    fn default() -> Self {
        Self {
            min_ring_size: DEFAULT_MIN_RING_SIZE,
        }
    }
}

impl TopologyStrategy for RingHashStrategy {
    fn name(&self) -> &'static str {
        "ring_hash"
    }

    fn build(&self, members: &[Member]) -> Box<dyn TopologyTable> {
        Box::new(Ring::build(members, self.min_ring_size))
    }
}

/// The sorted ring: `hashes[i]` is a point, `owners[i]` the index of the member owning it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    hashes: Vec<u64>,
    owners: Vec<usize>,
    members: usize,
}

/// The points each member gets (see the module documentation).
fn points_per_member(members: &[Member], min_ring_size: usize) -> Vec<u64> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    let min = min_ring_size as u64;
    if total == 0 {
        vec![0; members.len()]
    } else if total >= min {
        // Scale down by 2^k, k the largest with total / 2^k >= min.
        let mut k = 0;
        while total >> (k + 1) >= min {
            k += 1;
        }
        let half = if k == 0 { 0 } else { 1u64 << (k - 1) };
        let scale = |w: u64| if w == 0 { 0 } else { ((w + half) >> k).max(1) };
        members.iter().map(|m| scale(u64::from(m.weight))).collect()
    } else {
        // Scale up by 2^s, s the smallest with total * 2^s >= min.
        let mut s = 0;
        while total << s < min {
            s += 1;
        }
        members.iter().map(|m| u64::from(m.weight) << s).collect()
    }
}

impl Ring {
    /// The ring over `members`; `min_ring_size` is already validated (at least 1).
    pub(crate) fn build(members: &[Member], min_ring_size: usize) -> Self {
        let counts = points_per_member(members, min_ring_size);
        let total: u64 = counts.iter().sum();
        let mut points = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (index, (member, &count)) in members.iter().zip(&counts).enumerate() {
            for r in 0..count {
                let point = mix64(member.key.wrapping_add((r + 1).wrapping_mul(GOLDEN)));
                points.push((point, member.key, index));
            }
        }
        // Ties on a point (astronomically rare) break by member key, not list position.
        points.sort_unstable_by_key(|&(point, key, _)| (point, key));
        Self {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.2).collect(),
            members: members.len(),
        }
    }

    /// The number of points on the ring.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Points owned by each member, by member index.
    #[cfg(test)]
    pub(crate) fn points_by_member(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members];
        for &owner in &self.owners {
            counts[owner] += 1;
        }
        counts
    }
}

impl TopologyTable for Ring {
    /// The owner of the first point at or after `mix64(key)` that is not skipped, walking
    /// clockwise; `None` if every point's owner is skipped.
    fn lookup(&self, key: u64, skip: &dyn Fn(usize) -> bool) -> Option<usize> {
        let target = mix64(key);
        let start = self.hashes.partition_point(|&p| p < target);
        let (before, after) = self.owners.split_at(start);
        after
            .iter()
            .chain(before)
            .copied()
            .find(|&owner| !skip(owner))
    }

    fn members(&self) -> usize {
        self.members
    }
}

#[cfg(test)]
mod tests;
