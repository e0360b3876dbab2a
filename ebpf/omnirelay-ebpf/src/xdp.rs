//! OmniRelay's XDP program: classifies every frame on the interface it is attached to and
//! counts packets and bytes per class in a per-CPU array. It never drops: the verdict is
//! always `XDP_PASS`. The rate limiter grows out of this program.
//!
//! Per-CPU counters need no atomics: each CPU only ever touches its own slot, and
//! userspace sums the slots when it reads.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use aya_log_ebpf::info;
use omnirelay_ebpf_common::{PacketCounters, TrafficClass};

/// Length of an Ethernet header without VLAN tags.
const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;

#[map(name = "XDP_COUNTERS")]
static XDP_COUNTERS: PerCpuArray<PacketCounters> =
    PerCpuArray::with_max_entries(TrafficClass::COUNT, 0);

#[xdp]
pub fn xdp_counter(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let class = classify(start, end);
    let len = end.saturating_sub(start) as u64;

    if let Some(slot) = XDP_COUNTERS.get_ptr_mut(class.index()) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array, so it is
        // valid, aligned and only touched by this CPU while this program runs.
        let counters = unsafe { &mut *slot };
        if counters.packets == 0 {
            // Once per class and CPU: proves the program runs without logging per packet
            // (a log record costs tens of nanoseconds, more than the program itself).
            info!(
                &ctx,
                "first {} packet on this cpu, {} bytes",
                class.name(),
                len
            );
        }
        counters.packets = counters.packets.wrapping_add(1);
        counters.bytes = counters.bytes.wrapping_add(len);
    }
    xdp_action::XDP_PASS
}

/// The cost floor for benchmarks: returns `XDP_DROP` and nothing else. `xdp-cost`
/// measures the limiter side by side with it under `BPF_PROG_TEST_RUN`.
#[xdp]
pub fn xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Sorts a frame by its EtherType. `start..end` are the packet bounds from the context;
/// every read is bounds-checked against `end` first, as the verifier requires.
#[inline(always)]
fn classify(start: usize, end: usize) -> TrafficClass {
    if start + ETH_HDR_LEN > end {
        return TrafficClass::Malformed;
    }
    // SAFETY: the check above proves bytes 12 and 13 lie inside the packet.
    let ether_type = unsafe {
        let p = (start + 12) as *const u8;
        u16::from_be_bytes([*p, *p.add(1)])
    };
    match ether_type {
        ETH_P_IP => TrafficClass::Ipv4,
        ETH_P_IPV6 => TrafficClass::Ipv6,
        ETH_P_ARP => TrafficClass::Arp,
        _ => TrafficClass::Other,
    }
}
