//! Types shared by OmniRelay's eBPF programs (kernel side, `no_std`) and the userspace
//! loader in `omnirelay-control`.
//!
//! Every type here is `#[repr(C)]` plain data with an explicit layout: the kernel side
//! and userspace must agree on it byte for byte. Nothing here may allocate or depend on
//! `std`. The `user` feature adds the `aya::Pod` marker impls for userspace.
#![no_std]

pub mod limiter;

/// Names of the maps and programs, so both sides spell them once.
pub mod names {
    /// The XDP packet counter program.
    pub const XDP_COUNTER_PROGRAM: &str = "xdp_counter";
    /// Per-CPU array of [`super::PacketCounters`], indexed by [`super::TrafficClass`].
    pub const XDP_COUNTERS_MAP: &str = "XDP_COUNTERS";

    /// A program that only returns `XDP_DROP`: the harness floor of the cost bench.
    pub const XDP_FLOOR_PROGRAM: &str = "xdp_floor";
    /// The XDP rate limiter program.
    pub const XDP_LIMITER_PROGRAM: &str = "xdp_limiter";
    /// Writes `bpf_jiffies64()` and `bpf_ktime_get_coarse_ns()` into the frame: run by
    /// the daemon to learn the kernel's tick length.
    pub const CLOCK_PROBE_PROGRAM: &str = "xdp_clock_probe";
    /// The `SO_REUSEPORT` steering program.
    pub const STEER_PROGRAM: &str = "steer_reuseport";
    /// Array with one `limiter::Active`: the active configuration generation and flags,
    /// the clock scale and the bucket hash seed.
    pub const ACTIVE_MAP: &str = "OR_ACTIVE";
    /// Hash map `ListenerKey` → `ListenerPolicy`.
    pub const LISTENERS_MAP: &str = "OR_LISTENERS";
    /// Array of `PortEntry`, indexed by generation × 65536 + port.
    pub const PORTS_MAP: &str = "OR_PORTS";
    /// LPM trie `PrefixKey` → `PrefixEntry`: sources that bypass budgets.
    pub const ALLOW_MAP: &str = "OR_ALLOW";
    /// LPM trie `PrefixKey` → `PrefixEntry`: sources always dropped.
    pub const DENY_MAP: &str = "OR_DENY";
    /// LPM trie `OverrideKey` → `OverrideEntry`: per-source-prefix budgets.
    pub const OVERRIDES_MAP: &str = "OR_OVERRIDES";
    /// Array of `BucketSet`, indexed by `bucket_set`: token buckets.
    pub const BUCKETS_MAP: &str = "OR_BUCKETS";
    /// Per-CPU array of `u64`, indexed by `limiter::counter_index`.
    pub const LIMITER_COUNTERS_MAP: &str = "OR_COUNTERS";
    /// Hash map `SteerKey` (a listener's bound address and port) → `SteerPort`.
    pub const STEER_PORTS_MAP: &str = "OR_STEER_PORTS";
    /// Array of `SteerWeights`, indexed by generation.
    pub const STEER_WEIGHTS_MAP: &str = "OR_STEER_WEIGHTS";
    /// Reuseport socket array of the data plane's worker sockets.
    pub const STEER_SOCKETS_MAP: &str = "OR_STEER_SOCKETS";
}

/// What the counter program sorts packets into. The discriminant is the index into the
/// per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficClass {
    /// IPv4 packets (any transport).
    Ipv4 = 0,
    /// IPv6 packets (any transport).
    Ipv6 = 1,
    /// ARP packets.
    Arp = 2,
    /// Anything else that had a full Ethernet header.
    Other = 3,
    /// Frames too short to hold an Ethernet header.
    Malformed = 4,
}

impl TrafficClass {
    /// Number of classes, i.e. the length of the counter array.
    pub const COUNT: u32 = 5;

    /// All classes, in index order.
    pub const ALL: [TrafficClass; Self::COUNT as usize] = [
        TrafficClass::Ipv4,
        TrafficClass::Ipv6,
        TrafficClass::Arp,
        TrafficClass::Other,
        TrafficClass::Malformed,
    ];

    /// The index of this class in the counter array.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// A short lowercase name, used as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            TrafficClass::Ipv4 => "ipv4",
            TrafficClass::Ipv6 => "ipv6",
            TrafficClass::Arp => "arp",
            TrafficClass::Other => "other",
            TrafficClass::Malformed => "malformed",
        }
    }
}

/// Packets and bytes seen for one traffic class on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters {
    /// Number of packets.
    pub packets: u64,
    /// Sum of the frame lengths, in bytes.
    pub bytes: u64,
}

impl PacketCounters {
    /// Adds another CPU's counters to these (wrapping, as the kernel's do).
    pub fn accumulate(&mut self, other: &PacketCounters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

#[cfg(feature = "user")]
// SAFETY: `PacketCounters` is `repr(C)`, made only of integers, with no padding, so any
// bit pattern the kernel writes is a valid value.
unsafe impl aya::Pod for PacketCounters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_indices_are_dense_and_in_order() {
        for (i, class) in TrafficClass::ALL.iter().enumerate() {
            assert_eq!(class.index() as usize, i);
        }
        assert_eq!(TrafficClass::ALL.len(), TrafficClass::COUNT as usize);
    }

    #[test]
    fn counters_layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<PacketCounters>(), 16);
    }

    #[test]
    fn accumulate_wraps_like_the_kernel() {
        let mut a = PacketCounters {
            packets: u64::MAX,
            bytes: 10,
        };
        a.accumulate(&PacketCounters {
            packets: 2,
            bytes: 5,
        });
        assert_eq!(
            a,
            PacketCounters {
                packets: 1,
                bytes: 15
            }
        );
    }
}
