//! OmniRelay's kernel fast path: the XDP rate limiter (`xdp_limiter`) and the
//! `SO_REUSEPORT` worker steering program (`steer_reuseport`). Both read configuration
//! that the control daemon writes into pinned maps; the layouts and the generation
//! discipline are documented in `omnirelay_ebpf_common::limiter`.
//!
//! The limiter parses Ethernet (one VLAN tag), IPv4/IPv6 and TCP/UDP with a bounds check
//! before every read. Anything it cannot parse passes. Per source address and listener it
//! keeps a token bucket in virtual-scheduling form (one 64-bit theoretical arrival time,
//! TAT) in a set-associative array: a keyed hash of (listener, source) picks a set of four
//! ways and is the tag kept in the way. The TAT advances with a compare-and-swap so
//! concurrent CPUs never double-spend a token. A source with no way gets the way whose
//! bucket is fullest (lowest TAT): a bucket whose TAT has passed is full, so replacing it
//! loses nothing; only when all four ways are in debt does one source's debt get forgotten.
//! The accepted races, and their bounds:
//! - two CPUs claiming a way at once: the tag compare-and-swap lets one win; the other's
//!   packet passes uncharged (at most one packet per CPU per claim);
//! - a claim between another CPU's tag match and its TAT update: that CPU charges the new
//!   owner's bucket once (one packet's token moved between two sources);
//! - a compare-and-swap that loses four times in a row passes the packet uncharged: at
//!   most one packet per lost race, which needs four concurrent winners on other CPUs.
//!
//! Nothing is logged per packet: one aya-log record costs more than this whole program.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::compare_exchange` (its spec has no CAS, although the
// kernel has BPF_CMPXCHG since 5.12); the intrinsic lowers to that instruction.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// `asm!` on BPF: single misaligned packet loads (see `parse::word`).
#![feature(asm_experimental_arch)]

mod parse;
mod runtime;

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::{
    bindings::{sk_action, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{map, sk_reuseport, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, ReusePortSockArray, lpm_trie::Key},
    programs::{SkReuseportContext, XdpContext},
};
use aya_log_ebpf::warn;
use omnirelay_ebpf_common::limiter::{
    ACTIVE_DROP_MALFORMED, ACTIVE_GENERATION, ACTIVE_HAS_ALLOW, ACTIVE_HAS_DENY,
    ACTIVE_HAS_OVERRIDES, Active, BUCKET_SETS, BUCKET_WAYS, BucketSet, Budget, CHARGE_ALL_PACKETS,
    COUNTER_ENTRIES, ListenerKey, ListenerPolicy, MAX_CONFIG_ENTRIES, MAX_STEER_PORTS,
    MAX_STEER_SOCKETS, MAX_WORKERS, NOT_BUDGETED, OVERRIDE_KEY_HEAD_BITS, OverrideEntry,
    OverrideKey, PORT_ANY, PORT_ANY_V4, PORT_LOOKUP, PORTS_PER_GENERATION, PREFIX_KEY_HEAD_BITS,
    PortEntry, PrefixEntry, PrefixKey, Reason, SteerKey, SteerPort, SteerWeights, bucket_hash,
    bucket_set, counter_index, v4_mapped,
};
use parse::{Addr, L4, Packet, Transport};

#[map(name = "OR_ACTIVE")]
static OR_ACTIVE: Array<Active> = Array::pinned(1, 0);

#[map(name = "OR_LISTENERS")]
static OR_LISTENERS: HashMap<ListenerKey, ListenerPolicy> = HashMap::pinned(MAX_CONFIG_ENTRIES, 0);

#[map(name = "OR_PORTS")]
static OR_PORTS: Array<PortEntry> = Array::pinned(2 * PORTS_PER_GENERATION, 0);

#[map(name = "OR_ALLOW")]
static OR_ALLOW: LpmTrie<PrefixKey, PrefixEntry> = LpmTrie::pinned(MAX_CONFIG_ENTRIES, 0);

#[map(name = "OR_DENY")]
static OR_DENY: LpmTrie<PrefixKey, PrefixEntry> = LpmTrie::pinned(MAX_CONFIG_ENTRIES, 0);

#[map(name = "OR_OVERRIDES")]
static OR_OVERRIDES: LpmTrie<OverrideKey, OverrideEntry> = LpmTrie::pinned(MAX_CONFIG_ENTRIES, 0);

#[map(name = "OR_BUCKETS")]
static OR_BUCKETS: Array<BucketSet> = Array::pinned(BUCKET_SETS, 0);

#[map(name = "OR_COUNTERS")]
static OR_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_ENTRIES, 0);

#[map(name = "OR_STEER_PORTS")]
static OR_STEER_PORTS: HashMap<SteerKey, SteerPort> = HashMap::pinned(MAX_STEER_PORTS, 0);

#[map(name = "OR_STEER_WEIGHTS")]
static OR_STEER_WEIGHTS: Array<SteerWeights> = Array::pinned(2, 0);

#[map(name = "OR_STEER_SOCKETS")]
static OR_STEER_SOCKETS: ReusePortSockArray = ReusePortSockArray::pinned(MAX_STEER_SOCKETS, 0);

/// Attempts at the bucket's compare-and-swap before the packet passes uncharged.
const CAS_ATTEMPTS: u32 = 4;

#[inline(always)]
fn count(slot: u32, reason: Reason) {
    if let Some(c) = OR_COUNTERS.get_ptr_mut(counter_index(slot, reason)) {
        // SAFETY: a per-CPU slot from a successful lookup; only this CPU writes it now.
        unsafe { *c = (*c).wrapping_add(1) };
    }
}

/// The active configuration; all zero (generation 0, nothing budgeted) until the daemon
/// has written it.
#[inline(always)]
fn active() -> Active {
    OR_ACTIVE.get(0).copied().unwrap_or_default()
}

#[inline(always)]
fn finish(slot: u32, reason: Reason) -> u32 {
    count(slot, reason);
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn xdp_limiter(ctx: XdpContext) -> u32 {
    let active = active();
    // Two call sites of the inlined `limit`: the IPv4 one is compiled with the first three
    // address words known, which folds them out of the keys and the bucket hash.
    match parse::parse(ctx.data(), ctx.data_end()) {
        Packet::NotIp => finish(0, Reason::Passed),
        Packet::Malformed => malformed(0, active.word),
        Packet::V4 {
            src,
            dst,
            transport,
        } => limit(&active, &parse::v4(src), &parse::v4(dst), transport),
        Packet::V6 {
            src,
            dst,
            transport,
        } => limit(&active, &src, &dst, transport),
    }
}

/// Writes the tick counter and the coarse clock into the first 16 bytes of the frame
/// (native byte order) for the daemon, which runs it with `BPF_PROG_TEST_RUN` to learn
/// the tick length (see `Active::tick_ns`). Never attached.
#[xdp]
pub fn xdp_clock_probe(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: helpers with no preconditions; the 16 bytes were bounds-checked above.
    unsafe {
        let jiffies = bpf_jiffies64();
        let ns = bpf_ktime_get_coarse_ns();
        core::ptr::write_unaligned(start as *mut u64, jiffies);
        core::ptr::write_unaligned((start + 8) as *mut u64, ns);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn malformed(slot: u32, word: u32) -> u32 {
    count(slot, Reason::Malformed);
    if word & ACTIVE_DROP_MALFORMED != 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn prefix_key(generation: u32, addr: &Addr) -> Key<PrefixKey> {
    Key::new(
        PREFIX_KEY_HEAD_BITS + 128,
        PrefixKey {
            generation: generation.to_be_bytes(),
            addr: parse::addr_bytes(addr),
        },
    )
}

#[inline(always)]
fn limit(active: &Active, src: &Addr, dst: &Addr, t: Transport) -> u32 {
    let word = active.word;
    let generation = word & ACTIVE_GENERATION;
    let port = if t.kind == L4::Port {
        Some(t.port)
    } else {
        None
    };
    let listener = port.and_then(|p| find_listener(generation, dst, p));
    let has = |bit: u32| word & bit != 0;
    let slot = match listener {
        Some(l) => l.id.wrapping_add(1),
        None => 0,
    };
    let stamp = listener.map(|l| l.stamp);

    // Deny first, before anything about the transport is trusted: a denied source is
    // dropped even when its TCP/UDP header is truncated (the list fails closed).
    // Empty lists are known from the active word: no trie walk for them.
    if has(ACTIVE_HAS_DENY)
        && let Some(entry) = OR_DENY.get(prefix_key(generation, src))
    {
        check_stamp(slot, stamp, entry.stamp);
        return finish(slot, Reason::Denied);
    }
    if t.kind == L4::Malformed {
        return malformed(slot, word);
    }
    if t.kind == L4::Evasive {
        // Counted as malformed, dropped whatever the policy (see `L4::Evasive`).
        count(slot, Reason::Malformed);
        return xdp_action::XDP_DROP;
    }
    if has(ACTIVE_HAS_ALLOW)
        && let Some(entry) = OR_ALLOW.get(prefix_key(generation, src))
    {
        check_stamp(slot, stamp, entry.stamp);
        return finish(slot, Reason::Allowed);
    }
    let Some(policy) = listener else {
        return finish(slot, Reason::Passed);
    };
    if policy.flags & CHARGE_ALL_PACKETS == 0 && !t.new_flow {
        return finish(slot, Reason::Passed);
    }
    let mut budget = policy.budget;
    if has(ACTIVE_HAS_OVERRIDES) {
        let okey = Key::new(
            OVERRIDE_KEY_HEAD_BITS + 128,
            OverrideKey {
                generation: generation.to_be_bytes(),
                listener: policy.id.to_be_bytes(),
                addr: parse::addr_bytes(src),
            },
        );
        if let Some(o) = OR_OVERRIDES.get(&okey) {
            check_stamp(slot, Some(policy.stamp), o.stamp);
            budget = o.budget;
        }
    }
    if charge(active, policy.id, src, &budget) {
        finish(slot, Reason::Passed)
    } else {
        finish(slot, Reason::OverBudget)
    }
}

#[inline(always)]
fn check_stamp(slot: u32, listener_stamp: Option<u64>, entry_stamp: u64) {
    if let Some(s) = listener_stamp
        && s != entry_stamp
    {
        count(slot, Reason::Inconsistent);
    }
}

/// The listener for a destination. The port array answers alone for a port with a single
/// wildcard listener; otherwise the hash map is asked for the exact address, then the
/// family's wildcard, then the dual-stack wildcard `::`.
#[inline(always)]
fn find_listener(generation: u32, dst: &Addr, port: u16) -> Option<ListenerPolicy> {
    let entry = OR_PORTS.get(generation * PORTS_PER_GENERATION + u32::from(port))?;
    match entry.kind {
        PORT_ANY => return Some(entry.policy),
        PORT_ANY_V4 if parse::is_v4_mapped(dst) => return Some(entry.policy),
        PORT_LOOKUP => {}
        _ => return None,
    }
    let mut key = ListenerKey {
        generation,
        addr: parse::addr_bytes(dst),
        port,
        pad: 0,
    };
    // SAFETY (lookups): hash-map values are valid for the program's run.
    if let Some(p) = unsafe { OR_LISTENERS.get(key) } {
        // An unbudgeted listener at this address: the port's wildcard budget is not its.
        return if p.flags & NOT_BUDGETED != 0 {
            None
        } else {
            Some(*p)
        };
    }
    let v4 = parse::is_v4_mapped(dst);
    key.addr = [0; 16];
    if v4 {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        if let Some(p) = unsafe { OR_LISTENERS.get(key) } {
            return Some(*p);
        }
        key.addr = [0; 16];
    }
    unsafe { OR_LISTENERS.get(key) }.copied()
}

/// Takes one token from the bucket of `listener` and `src`; false when it has none.
#[inline(always)]
fn charge(active: &Active, listener: u32, src: &Addr, budget: &Budget) -> bool {
    if budget.emission_ns == 0 {
        return false;
    }
    // An IPv6 source is charged per /64: a host is given a whole /64 and would otherwise
    // take a fresh burst from each of its addresses (and churn the bucket sets).
    let source = if parse::is_v4_mapped(src) {
        *src
    } else {
        [src[0], src[1], 0, 0]
    };
    let tag = bucket_hash(active.seed, listener, &source);
    let Some(set) = OR_BUCKETS.get_ptr_mut(bucket_set(tag)) else {
        return true;
    };
    // SAFETY: a helper with no preconditions (the verifier inlines it as one load).
    let tick = u64::from(active.tick_ns);
    let now = unsafe { bpf_jiffies64() }.wrapping_mul(tick);
    // The clock moves a tick at a time: a tolerance below one tick would let only `burst`
    // packets through per tick, capping the rate at burst × HZ. At least a tick's worth of
    // tokens may be taken within a tick, so the long-run rate holds.
    let tolerance = if budget.tolerance_ns > tick {
        budget.tolerance_ns
    } else {
        tick
    };
    // SAFETY (all pointer use below): `set` points to a map value, valid and 8-byte aligned
    // for the program's run; other CPUs touch it only through aligned 64-bit loads and
    // stores and the same compare-and-swaps, which are single-copy atomic on BPF.
    let ways = unsafe { &raw mut (*set).ways };
    let mut victim = 0;
    let mut victim_tag = 0;
    let mut victim_tat = u64::MAX;
    let mut i = 0;
    while i < BUCKET_WAYS {
        let way = unsafe { &raw mut (*ways)[i] };
        let seen_tag = unsafe { core::ptr::read_volatile(&raw const (*way).tag) };
        let tat = unsafe { &raw mut (*way).tat_ns };
        if seen_tag == tag {
            return take(tat, now, budget.emission_ns, tolerance);
        }
        let t = if seen_tag == 0 {
            0
        } else {
            unsafe { core::ptr::read_volatile(tat) }
        };
        if t < victim_tat {
            victim = i;
            victim_tag = seen_tag;
            victim_tat = t;
        }
        i += 1;
    }
    // A new source: its first packet conforms (the tolerance is at least one token). It
    // takes the fullest way, if no other CPU claims that way first.
    let way = unsafe { &raw mut (*ways)[victim] };
    let (_, claimed) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            &raw mut (*way).tag,
            victim_tag,
            tag,
        )
    };
    if claimed {
        unsafe {
            core::ptr::write_volatile(&raw mut (*way).tat_ns, now.wrapping_add(budget.emission_ns))
        };
    }
    true
}

/// One token (`emission` ns) from a bucket's TAT, by compare-and-swap, if the TAT stays
/// within `tolerance` of now.
#[inline(always)]
fn take(tat: *mut u64, now: u64, emission: u64, tolerance: u64) -> bool {
    let mut i = 0;
    while i < CAS_ATTEMPTS {
        // SAFETY: see `charge`.
        let seen = unsafe { core::ptr::read_volatile(tat) };
        let start = if seen > now { seen } else { now };
        let next = start.wrapping_add(emission);
        if next.wrapping_sub(now) > tolerance {
            return false;
        }
        // SAFETY: see `charge`.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                tat, seen, next,
            )
        };
        if swapped {
            return true;
        }
        i += 1;
    }
    true
}

/// Picks the worker socket for a new connection by the 4-tuple hash, in proportion to
/// the workers' weights. A worker of weight 0 gets no new connections. When nothing is
/// registered for the listener, or every weight is 0, the kernel's own hash decides.
#[sk_reuseport]
pub fn steer_reuseport(ctx: SkReuseportContext) -> u32 {
    let key = group_key(&ctx);
    let port = key.port;
    // SAFETY: map values are valid for the program's run.
    let Some(group) = (unsafe { OR_STEER_PORTS.get(key) }) else {
        return sk_action::SK_PASS;
    };
    let Some(weights) = OR_STEER_WEIGHTS.get(active().word & ACTIVE_GENERATION) else {
        return sk_action::SK_PASS;
    };
    let workers = if group.workers > MAX_WORKERS {
        MAX_WORKERS
    } else {
        group.workers
    };
    let mut total: u32 = 0;
    for (i, w) in weights.weights.iter().enumerate() {
        if i as u32 >= workers {
            break;
        }
        total = total.wrapping_add(*w);
    }
    if total == 0 {
        return sk_action::SK_PASS;
    }
    let mut pick = ctx.hash() % total;
    let mut chosen = 0;
    for (i, w) in weights.weights.iter().enumerate() {
        if i as u32 >= workers {
            break;
        }
        if pick < *w {
            chosen = i as u32;
            break;
        }
        pick -= *w;
    }
    if let Err(errno) = OR_STEER_SOCKETS.select_reuseport(&ctx, group.base.wrapping_add(chosen)) {
        // Only on a registration fault (a worker socket missing from the array): the
        // kernel's own hash picks instead.
        warn!(
            &ctx,
            "steering: listener port {} worker {} has no registered socket (error {}); kernel hash used",
            port,
            chosen,
            errno
        );
    }
    sk_action::SK_PASS
}

/// `AF_INET6` (`bpf_sock::family`).
const AF_INET6: u32 = 10;

/// The bound address and port of the `SO_REUSEPORT` group the connection arrived at, read
/// from the group's socket (which the kernel hands reuseport programs from 5.14 on): every
/// socket of a group is bound to the same address, so this names the listener.
#[inline(always)]
fn group_key(ctx: &SkReuseportContext) -> SteerKey {
    use core::ptr::read_volatile as load;
    let sk = ctx.sk().sock;
    // The verifier allows only 4-byte loads at constant offsets of these fields: volatile
    // reads, each of its own field and all made up front, keep the compiler from merging
    // them or from computing field addresses (no arithmetic on a socket pointer).
    // SAFETY: the verifier types `sk` as a socket pointer that is never null here, and
    // these fields are readable for it.
    let (family, port, ip4, ip6) = unsafe {
        (
            load(&raw const (*sk).family),
            load(&raw const (*sk).src_port),
            load(&raw const (*sk).src_ip4),
            [
                load(&raw const (*sk).src_ip6[0]),
                load(&raw const (*sk).src_ip6[1]),
                load(&raw const (*sk).src_ip6[2]),
                load(&raw const (*sk).src_ip6[3]),
            ],
        )
    };
    let addr = if family == AF_INET6 {
        let [a, b, c, d] = ip6.map(u32::to_ne_bytes);
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    } else {
        v4_mapped(ip4.to_ne_bytes())
    };
    SteerKey {
        addr,
        port: port as u16,
        pad: 0,
    }
}
