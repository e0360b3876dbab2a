//! Map layouts of the XDP rate limiter (`xdp_limiter`) and the `SO_REUSEPORT` steering
//! program (`steer_reuseport`).
//!
//! # Generations
//!
//! Every configuration map key starts with a generation number (0 or 1). The program reads
//! the active generation from [`ACTIVE_MAP`](super::names::ACTIVE_MAP) once per packet and
//! looks up only keys of that generation. The control daemon writes a new configuration
//! into the inactive generation, flips the active index with one array update, waits a
//! grace period longer than any program run, and then deletes the old generation's keys.
//! A packet therefore sees either the whole old set or the whole new set, never a mix.
//! Every value carries the snapshot version that wrote it (`stamp`); the program counts a
//! packet under [`Reason::Inconsistent`] if two entries it used disagree, which can only
//! happen if that discipline is broken.
//!
//! # Addresses
//!
//! IPv4 addresses are stored as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), so one
//! map and one trie serve both families.

/// Largest number of listeners with a budget (slots in the counter array, minus one).
pub const MAX_LISTENERS: u32 = 63;
/// Counter slots: slot 0 is traffic matched to no budgeted listener, slot `id + 1` is
/// listener `id`.
pub const COUNTER_SLOTS: u32 = MAX_LISTENERS + 1;
/// Entries of the configuration hash map and tries (both generations together).
pub const MAX_CONFIG_ENTRIES: u32 = 16_384;
/// Largest number of workers the steering program chooses between, per listener.
pub const MAX_WORKERS: u32 = 64;
/// Listeners (bound address and port) the steering program knows.
pub const MAX_STEER_PORTS: u32 = 64;
/// Entries of the reuseport socket array: one per worker of each steered listener.
pub const MAX_STEER_SOCKETS: u32 = MAX_WORKERS * MAX_STEER_PORTS;

/// Highest accepted rate per source, packets per second: the emission interval is kept in
/// whole nanoseconds, so faster rates would lose precision.
pub const MAX_RATE_PER_SECOND: u64 = 10_000_000;

/// [`ListenerPolicy::flags`]: charge every packet, not only new flows.
pub const CHARGE_ALL_PACKETS: u32 = 1;
/// [`ListenerPolicy::flags`]: a listener without a budget, entered only so that a budgeted
/// wildcard listener on the same port does not apply to its address.
pub const NOT_BUDGETED: u32 = 2;

/// Value of the active-configuration array (its one entry).
///
/// The daemon writes the whole value in one map update. Only `word` changes after start-up,
/// and all its bits (generation and flags) lie in its first byte, so a reader sees the old
/// bits or the new ones, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// Generation and flags: [`ACTIVE_GENERATION`], [`ACTIVE_DROP_MALFORMED`], ...
    pub word: u32,
    /// Nanoseconds per kernel tick. The limiter's clock is `bpf_jiffies64() * tick_ns`:
    /// the verifier turns that helper into one load, where `bpf_ktime_get_coarse_ns` (the
    /// same tick resolution) is a function call. Measured by the daemon at start.
    pub tick_ns: u32,
    /// Key of [`bucket_hash`]: random, chosen when the map is created and kept across
    /// daemon restarts and program upgrades, so buckets stay where the program looks.
    pub seed: u64,
}

/// Bit 0 of the active-generation word: the generation (0 or 1).
pub const ACTIVE_GENERATION: u32 = 1;
/// Bit 1 of the active-generation word: drop malformed packets instead of passing them.
/// It flips together with the generation, in the same 32-bit store, like the bits below.
pub const ACTIVE_DROP_MALFORMED: u32 = 2;
/// The active generation has a deny list (else the program skips that trie lookup).
pub const ACTIVE_HAS_DENY: u32 = 4;
/// The active generation has an allow list.
pub const ACTIVE_HAS_ALLOW: u32 = 8;
/// The active generation has budget overrides.
pub const ACTIVE_HAS_OVERRIDES: u32 = 16;

/// Ports per generation in the port array: the array index is `generation * 65536 + port`.
pub const PORTS_PER_GENERATION: u32 = 65_536;

/// [`PortEntry::kind`]: no budgeted listener on this port.
pub const PORT_NONE: u32 = 0;
/// [`PortEntry::kind`]: one listener on the IPv4 wildcard; its policy is inline and
/// applies to every IPv4 destination.
pub const PORT_ANY_V4: u32 = 1;
/// [`PortEntry::kind`]: one listener on `[::]`; its policy is inline and applies to
/// every destination.
pub const PORT_ANY: u32 = 2;
/// [`PortEntry::kind`]: address-specific listeners: look the destination up in the
/// listener hash map.
pub const PORT_LOOKUP: u32 = 3;

/// Why a packet got its verdict. The discriminant is the counter index within a slot.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Passed: within budget, not charged, or not for a budgeted listener.
    Passed = 0,
    /// Passed without charge because the source is in the allow list.
    Allowed = 1,
    /// Dropped: over the source's budget.
    OverBudget = 2,
    /// Dropped: the source is in the deny list.
    Denied = 3,
    /// A header was truncated or impossible (IPv4 IHL < 5, short TCP/UDP header, ...).
    /// Passed or dropped per the malformed policy; counted here either way.
    Malformed = 4,
    /// The program used entries of two different snapshot versions. Must stay zero.
    Inconsistent = 5,
}

impl Reason {
    /// Number of reasons, i.e. counters per slot.
    pub const COUNT: u32 = 6;
    /// All reasons in index order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Passed,
        Reason::Allowed,
        Reason::OverBudget,
        Reason::Denied,
        Reason::Malformed,
        Reason::Inconsistent,
    ];

    /// A short lowercase name, used as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Allowed => "allowed",
            Reason::OverBudget => "over_budget",
            Reason::Denied => "denied",
            Reason::Malformed => "malformed",
            Reason::Inconsistent => "inconsistent",
        }
    }

    /// Whether packets counted under this reason were dropped (malformed ones depend on the
    /// policy and are counted as passed here).
    pub const fn is_drop(self) -> bool {
        matches!(self, Reason::OverBudget | Reason::Denied)
    }
}

/// Index into the per-CPU counter array for a slot and a reason.
pub const fn counter_index(slot: u32, reason: Reason) -> u32 {
    slot * Reason::COUNT + reason as u32
}

/// Total entries of the per-CPU counter array.
pub const COUNTER_ENTRIES: u32 = COUNTER_SLOTS * Reason::COUNT;

/// Key of the listener map: a destination address and port in one generation. An
/// all-zero address (or `::ffff:0.0.0.0` for IPv4) is a wildcard listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Generation, 0 or 1.
    pub generation: u32,
    /// Destination address (IPv4-mapped for IPv4), network byte order.
    pub addr: [u8; 16],
    /// Destination port, host byte order.
    pub port: u16,
    /// Always zero (explicit padding, so keys hash the same on both sides).
    pub pad: u16,
}

/// A token bucket, kept in the form the program updates atomically: the emission interval
/// (nanoseconds per token) and the burst tolerance (nanoseconds of credit). A source may
/// send when its theoretical arrival time is at most `tolerance_ns` ahead of now; this is
/// the virtual-scheduling form of a token bucket with rate `1e9 / emission_ns` and depth
/// `tolerance_ns / emission_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Nanoseconds per token (1e9 / rate). Zero means "no budget": drop every charged packet.
    pub emission_ns: u64,
    /// Burst × emission_ns.
    pub tolerance_ns: u64,
}

impl Budget {
    /// The bucket for a rate (per second) and a burst (tokens). `rate` must be in
    /// `1..=MAX_RATE_PER_SECOND`; a burst of zero is taken as one.
    pub const fn new(rate_per_second: u64, burst: u64) -> Budget {
        let rate = if rate_per_second == 0 {
            1
        } else {
            rate_per_second
        };
        let emission_ns = 1_000_000_000 / rate;
        let burst = if burst == 0 { 1 } else { burst };
        Budget {
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(burst),
        }
    }
}

/// Value of the listener map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// Listener id: counter slot `id + 1` and the first half of bucket keys.
    pub id: u32,
    /// [`CHARGE_ALL_PACKETS`].
    pub flags: u32,
    /// The per-source budget.
    pub budget: Budget,
    /// Snapshot version that wrote this entry.
    pub stamp: u64,
}

/// Value of the port array: the fast path to a port's listener, one array lookup (which
/// the verifier inlines) instead of hash lookups for the common single-listener case.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// One of [`PORT_NONE`], [`PORT_ANY_V4`], [`PORT_ANY`], [`PORT_LOOKUP`].
    pub kind: u32,
    /// Always zero.
    pub pad: u32,
    /// The listener's policy for [`PORT_ANY_V4`] and [`PORT_ANY`].
    pub policy: ListenerPolicy,
}

/// Data of an LPM-trie key for the allow and deny lists: generation, then address. The
/// prefix length counts the 32 generation bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixKey {
    /// Generation as big-endian bytes (tries match bytes most significant first).
    pub generation: [u8; 4],
    /// Address (IPv4-mapped for IPv4), network byte order.
    pub addr: [u8; 16],
}

/// Data of an LPM-trie key for per-source budget overrides: generation, listener id,
/// then address. The prefix length counts the 64 bits before the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverrideKey {
    /// Generation as big-endian bytes.
    pub generation: [u8; 4],
    /// Listener id as big-endian bytes.
    pub listener: [u8; 4],
    /// Address (IPv4-mapped for IPv4), network byte order.
    pub addr: [u8; 16],
}

/// Bits of an LPM key before the address in [`PrefixKey`].
pub const PREFIX_KEY_HEAD_BITS: u32 = 32;
/// Bits of an LPM key before the address in [`OverrideKey`].
pub const OVERRIDE_KEY_HEAD_BITS: u32 = 64;

/// Value of the allow and deny tries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixEntry {
    /// Snapshot version that wrote this entry.
    pub stamp: u64,
}

/// Value of the override trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverrideEntry {
    /// The budget that replaces the listener's for matching sources.
    pub budget: Budget,
    /// Snapshot version that wrote this entry.
    pub stamp: u64,
}

/// Ways per bucket set: a source's bucket lives in one of these slots of its set.
pub const BUCKET_WAYS: usize = 4;
/// Sets in the bucket array, a power of two (the set index is masked from the hash).
pub const BUCKET_SETS: u32 = 65_536;

/// One token bucket in the bucket array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketWay {
    /// [`bucket_hash`] of the (listener, source) pair that owns the bucket; zero when the
    /// way is empty.
    pub tag: u64,
    /// Theoretical arrival time of the next conforming packet, on the limiter's clock
    /// (see [`Active::tick_ns`]). A bucket whose TAT has passed is full, the same as no bucket at all.
    pub tat_ns: u64,
}

/// Value of the bucket array: one set of [`BUCKET_WAYS`] buckets, one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketSet {
    /// The set's buckets.
    pub ways: [BucketWay; BUCKET_WAYS],
}

/// The bucket tag of a listener and a source address (its four 32-bit words as they lie in
/// memory, IPv4-mapped for IPv4), keyed by [`Active::seed`].
/// Never zero (zero marks an empty way). The set index is `(tag >> 32) % BUCKET_SETS`.
///
/// For one listener, the tag is a bijection of the address's last 64 bits when the first 64
/// are equal (but for the hash zero, mapped to one): two IPv4 sources never share a bucket.
/// Other pairs collide with probability about 2^-48 within a set, and the secret seed keeps
/// a sender from choosing a colliding address (and so draining someone else's bucket).
#[inline(always)]
pub const fn bucket_hash(seed: u64, listener: u32, addr: &[u32; 4]) -> u64 {
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0xbf58_476d_1ce4_e5b9;
    const K2: u64 = 0x94d0_49bb_1331_11eb;
    let lo = (addr[0] as u64) | ((addr[1] as u64) << 32);
    let hi = (addr[2] as u64) | ((addr[3] as u64) << 32);
    // Each step is a bijection (xor with a value independent of `hi`, multiplication by an
    // odd constant, xor-shift), so for fixed `lo` the tag is a bijection of `hi`.
    let mut h = (seed ^ (listener as u64).wrapping_mul(K0) ^ lo).wrapping_mul(K1);
    h ^= h >> 32;
    h = (h ^ hi).wrapping_mul(K2);
    h ^= h >> 32;
    h = h.wrapping_mul(K1);
    h ^= h >> 29;
    if h == 0 { 1 } else { h }
}

/// An address's bytes as the four 32-bit words the program hashes (each word holding four
/// bytes in memory order, as loaded from the packet).
pub fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    core::array::from_fn(|i| {
        u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    })
}

/// The set of a [`bucket_hash`] tag.
#[inline(always)]
pub const fn bucket_set(tag: u64) -> u32 {
    ((tag >> 32) as u32) & (BUCKET_SETS - 1)
}

/// Key of the steering map: a listener's bound address and port, as the program reads
/// them from the socket of the `SO_REUSEPORT` group a connection arrives at. Each listener
/// is its own group, so two listeners on one port (different addresses) have their own
/// entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SteerKey {
    /// Bound address (IPv4-mapped for an IPv4 socket), network byte order; all zero for
    /// an IPv6 wildcard, `::ffff:0.0.0.0` for an IPv4 one.
    pub addr: [u8; 16],
    /// Bound port, host byte order.
    pub port: u16,
    /// Always zero (explicit padding, so keys hash the same on both sides).
    pub pad: u16,
}

impl From<core::net::SocketAddr> for SteerKey {
    fn from(a: core::net::SocketAddr) -> Self {
        SteerKey {
            addr: match a.ip() {
                core::net::IpAddr::V4(v4) => v4_mapped(v4.octets()),
                core::net::IpAddr::V6(v6) => v6.octets(),
            },
            port: a.port(),
            pad: 0,
        }
    }
}

/// Value of the steering map: where a listener's workers sit in the socket array.
/// Written by the data plane when it registers its sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerPort {
    /// Index of worker 0's socket in the reuseport socket array.
    pub base: u32,
    /// Number of workers registered for this listener.
    pub workers: u32,
}

/// Value of the steering weight array (index: generation): one weight per worker index.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerWeights {
    /// Weight of each worker; 0 drains it (no new connections).
    pub weights: [u32; MAX_WORKERS as usize],
    /// Snapshot version that wrote this entry.
    pub stamp: u64,
}

impl Default for SteerWeights {
    fn default() -> Self {
        SteerWeights {
            weights: [1; MAX_WORKERS as usize],
            stamp: 0,
        }
    }
}

/// The third 32-bit word (memory order) of every IPv4-mapped address, `::ffff:0:0/96`.
/// The program builds IPv4 sources from it without copying bytes; [`addr_words`] of
/// [`v4_mapped`] gives the same words (tested).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Maps an IPv4 address to its IPv4-mapped IPv6 form.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for ListenerKey {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for ListenerPolicy {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for PortEntry {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for PrefixKey {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for PrefixEntry {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for OverrideKey {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for OverrideEntry {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for BucketSet {}
    // SAFETY: `repr(C)` integers with no implicit padding (see the layout test), so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for Active {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for SteerPort {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for SteerKey {}
    // SAFETY: `repr(C)` integers and byte arrays with no implicit padding (see the layout
    // test), so every bit pattern is a valid value.
    unsafe impl aya::Pod for SteerWeights {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn a_steering_key_holds_the_address_as_the_socket_does_and_the_port_in_host_order() {
        use core::net::SocketAddr;
        let key = |s: &str| SteerKey::from(s.parse::<SocketAddr>().unwrap());
        let v4 = key("192.0.2.7:443");
        assert_eq!(v4.addr, v4_mapped([192, 0, 2, 7]));
        assert_eq!(v4.port, 443);
        assert_eq!(v4.pad, 0);
        // The program reads `src_ip4` as a u32 and keeps its memory order.
        assert_eq!(
            v4.addr[12..],
            u32::from_ne_bytes([192, 0, 2, 7]).to_ne_bytes()
        );
        assert_eq!(key("0.0.0.0:80").addr, v4_mapped([0; 4]));
        assert_eq!(
            key("[::]:80").addr,
            [0; 16],
            "the IPv6 wildcard stays all zero"
        );
        let v6 = key("[2001:db8::1]:8443");
        assert_eq!(v6.addr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(v6.addr[15], 1);
        assert_eq!(v6.port, 8443);
        assert_eq!(
            key("[::ffff:192.0.2.7]:443"),
            v4,
            "a mapped bind is the IPv4 key"
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ListenerKey>(), 4 + 16 + 2 + 2);
        assert_eq!(size_of::<SteerKey>(), 16 + 2 + 2);
        assert_eq!(size_of::<ListenerPolicy>(), 4 + 4 + 16 + 8);
        assert_eq!(size_of::<PortEntry>(), 8 + 32);
        assert_eq!(size_of::<PrefixKey>(), 20);
        assert_eq!(size_of::<OverrideKey>(), 24);
        assert_eq!(size_of::<OverrideEntry>(), 24);
        assert_eq!(size_of::<BucketSet>(), 64);
        assert_eq!(size_of::<Active>(), 16);
        assert_eq!(size_of::<SteerPort>(), 8);
        assert_eq!(size_of::<SteerWeights>(), 4 * 64 + 8);
    }

    #[test]
    fn budget_is_rate_and_burst_in_nanoseconds() {
        let b = Budget::new(1000, 50);
        assert_eq!(b.emission_ns, 1_000_000);
        assert_eq!(b.tolerance_ns, 50_000_000);
        assert_eq!(Budget::new(10, 0).tolerance_ns, 100_000_000);
    }

    #[test]
    fn counter_indices_cover_the_array() {
        assert_eq!(counter_index(0, Reason::Passed), 0);
        assert_eq!(
            counter_index(COUNTER_SLOTS - 1, Reason::Inconsistent),
            COUNTER_ENTRIES - 1
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn bucket_tags_of_ipv4_sources_never_collide() {
        // The tag is a bijection of the last 64 address bits: distinct IPv4 sources of one
        // listener get distinct, non-zero tags whatever the seed.
        for seed in [0u64, 1, 0xdead_beef_0123_4567] {
            let mut tags: [u64; 4096] = [0; 4096];
            for (i, t) in tags.iter_mut().enumerate() {
                let a = v4_mapped((i as u32).wrapping_mul(2_654_435_761).to_be_bytes());
                *t = bucket_hash(seed, 3, &addr_words(&a));
                assert_ne!(*t, 0);
            }
            tags.sort_unstable();
            assert!(tags.windows(2).all(|w| w[0] != w[1]));
        }
    }

    #[test]
    fn bucket_sets_spread_and_depend_on_seed() {
        // 65,536 consecutive IPv4 sources over 65,536 sets: no set gets more than a
        // handful (a poor hash would pile a /16 into a few sets), and another seed moves
        // a source to another set.
        let mut load = [0u16; BUCKET_SETS as usize];
        let mut moved = 0;
        for i in 0..65_536u32 {
            let a = addr_words(&v4_mapped((0x0a00_0000 | i).to_be_bytes()));
            let set = bucket_set(bucket_hash(7, 0, &a)) as usize;
            load[set] += 1;
            if bucket_set(bucket_hash(8, 0, &a)) as usize != set {
                moved += 1;
            }
        }
        assert!(
            *load.iter().max().unwrap() <= 12,
            "max set load {}",
            load.iter().max().unwrap()
        );
        assert!(
            moved > 60_000,
            "only {moved} sources changed set with the seed"
        );
    }

    #[test]
    fn the_program_s_ipv4_words_match_the_mapped_address() {
        let octets = [192, 0, 2, 7];
        assert_eq!(
            addr_words(&v4_mapped(octets)),
            [0, 0, V4_MAPPED_WORD, u32::from_ne_bytes(octets)]
        );
    }

    #[test]
    fn v4_mapping() {
        assert_eq!(
            v4_mapped([10, 1, 2, 3]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 1, 2, 3]
        );
    }
}
