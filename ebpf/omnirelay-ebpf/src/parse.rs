//! Header parsing for the limiter. Every read is preceded by a check of its end against
//! the packet end, in a form the verifier can follow.

use omnirelay_ebpf_common::limiter::V4_MAPPED_WORD;

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 extension headers walked before the transport header; a longer chain is treated
/// as malformed (real traffic carries one or two).
const MAX_EXT_HEADERS: usize = 4;
const IPV6_HDR_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;

/// An address as four 32-bit words holding its bytes in network order, as loaded from the
/// packet (IPv4-mapped for IPv4). Words, not bytes: the BPF backend copies a byte array one
/// byte at a time, and the program moves addresses into keys and hashes.
pub type Addr = [u32; 4];

/// Kinds of transport header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP or UDP with a complete header.
    Port,
    /// TCP or UDP whose header is truncated or impossible.
    Malformed,
    /// No port to read: another protocol, or a non-first IPv4 fragment.
    None,
    /// An IPv4 fragment that can only serve to hide a TCP/UDP header from the limiter
    /// (RFC 1858): a first fragment too short for its header, or a TCP fragment at offset
    /// 8 bytes (which can rewrite the first one's flags). The receiver's reassembly would
    /// restore what the limiter never saw, so it is dropped whatever the malformed policy.
    Evasive,
}

/// What the transport header said. A plain struct whose fields are always written, not an
/// enum with payloads: LLVM may leave an absent payload undefined and then reuse whatever a
/// register held (a pointer, say), which the verifier rejects.
#[derive(Clone, Copy)]
pub struct Transport {
    pub kind: L4,
    /// Destination port, host order; 0 unless `kind` is `Port`.
    pub port: u16,
    /// TCP SYN without ACK, or a QUIC v1/v2 Initial packet.
    pub new_flow: bool,
}

impl Transport {
    const MALFORMED: Transport = Transport {
        kind: L4::Malformed,
        port: 0,
        new_flow: false,
    };
    const NONE: Transport = Transport {
        kind: L4::None,
        port: 0,
        new_flow: false,
    };
    const EVASIVE: Transport = Transport {
        kind: L4::Evasive,
        port: 0,
        new_flow: false,
    };
}

/// A parsed frame.
pub enum Packet {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passes untouched.
    NotIp,
    /// Truncated Ethernet/VLAN/IP header or a bad IP version / IHL.
    Malformed,
    /// An IPv4 packet with its addresses (as loaded: network byte order in memory).
    V4 {
        src: u32,
        dst: u32,
        transport: Transport,
    },
    /// An IPv6 packet with its addresses.
    V6 {
        src: Addr,
        dst: Addr,
        transport: Transport,
    },
}

/// The IPv4-mapped form of an IPv4 address word.
#[inline(always)]
pub fn v4(a: u32) -> Addr {
    [0, 0, V4_MAPPED_WORD, a]
}

#[inline(always)]
fn byte(start: usize, off: usize) -> u8 {
    // SAFETY: every caller has checked `start + off < end` first.
    unsafe { *((start + off) as *const u8) }
}

/// A 32-bit load from packet memory at any alignment, the word's bytes as they lie in the
/// packet. The kernel allows misaligned packet loads where the CPU does (x86-64, arm64);
/// LLVM's BPF backend would split an unaligned read into four byte loads, so the one
/// instruction is written out.
#[inline(always)]
fn word(start: usize, off: usize) -> u32 {
    let v: u64;
    // SAFETY: every caller has checked `start + off + 4 <= end` first; the instruction
    // only reads those four bytes.
    unsafe {
        core::arch::asm!(
            "{v} = *(u32 *)({p} + 0)",
            p = in(reg) start + off,
            v = lateout(reg) v,
            options(readonly, nostack, preserves_flags)
        );
    }
    v as u32
}

/// A big-endian 16-bit field, as a host-order number.
#[inline(always)]
fn be16(start: usize, off: usize) -> u16 {
    let v: u64;
    // SAFETY: as for `word`, for two bytes.
    unsafe {
        core::arch::asm!(
            "{v} = *(u16 *)({p} + 0)",
            p = in(reg) start + off,
            v = lateout(reg) v,
            options(readonly, nostack, preserves_flags)
        );
    }
    u16::from_be(v as u16)
}

/// Whether an address is IPv4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn is_v4_mapped(a: &Addr) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == V4_MAPPED_WORD
}

/// An address's bytes, for map keys.
#[inline(always)]
pub fn addr_bytes(a: &Addr) -> [u8; 16] {
    // SAFETY: `[u32; 4]` and `[u8; 16]` have the same size and no padding; every bit
    // pattern is a valid byte array.
    unsafe { core::mem::transmute::<Addr, [u8; 16]>(*a) }
}

#[inline(always)]
pub fn parse(start: usize, end: usize) -> Packet {
    if start + ETH_HDR_LEN > end {
        return Packet::Malformed;
    }
    let mut l3 = ETH_HDR_LEN;
    let mut ether_type = be16(start, 12);
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        if start + ETH_HDR_LEN + VLAN_HDR_LEN > end {
            return Packet::Malformed;
        }
        ether_type = be16(start, 16);
        l3 = ETH_HDR_LEN + VLAN_HDR_LEN;
        // QinQ: a service tag, then a customer tag.
        if ether_type == ETH_P_8021Q {
            if start + ETH_HDR_LEN + 2 * VLAN_HDR_LEN > end {
                return Packet::Malformed;
            }
            ether_type = be16(start, 20);
            l3 = ETH_HDR_LEN + 2 * VLAN_HDR_LEN;
        }
    }
    match ether_type {
        ETH_P_IP => ipv4(start + l3, end),
        ETH_P_IPV6 => ipv6(start + l3, end),
        _ => Packet::NotIp,
    }
}

#[inline(always)]
fn ipv4(ip: usize, end: usize) -> Packet {
    if ip + 20 > end {
        return Packet::Malformed;
    }
    let ver_ihl = byte(ip, 0);
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return Packet::Malformed;
    }
    let src = word(ip, 12);
    let dst = word(ip, 16);
    let fragment = be16(ip, 6);
    let (offset, more_fragments) = (fragment & 0x1fff, fragment & 0x2000 != 0);
    let protocol = byte(ip, 9);
    let transport = if offset == 1 && protocol == IPPROTO_TCP {
        Transport::EVASIVE
    } else if offset != 0 {
        Transport::NONE
    } else {
        let t = transport(protocol, ip + ihl, end);
        if more_fragments && t.kind == L4::Malformed {
            Transport::EVASIVE
        } else {
            t
        }
    };
    Packet::V4 {
        src,
        dst,
        transport,
    }
}

#[inline(always)]
fn ipv6(ip: usize, end: usize) -> Packet {
    if ip + IPV6_HDR_LEN > end {
        return Packet::Malformed;
    }
    if byte(ip, 0) >> 4 != 6 {
        return Packet::Malformed;
    }
    let src = [word(ip, 8), word(ip, 12), word(ip, 16), word(ip, 20)];
    let dst = [word(ip, 24), word(ip, 28), word(ip, 32), word(ip, 36)];
    let transport = ipv6_transport(byte(ip, 6), ip + IPV6_HDR_LEN, end);
    Packet::V6 {
        src,
        dst,
        transport,
    }
}

/// The transport header behind up to [`MAX_EXT_HEADERS`] IPv6 extension headers
/// (hop-by-hop, routing, destination options, authentication, fragment), so that a SYN
/// behind one is charged like any other. A later fragment carries no port; a first
/// fragment too short for its TCP/UDP header is evasive (as for IPv4).
#[inline(always)]
fn ipv6_transport(first: u8, mut at: usize, end: usize) -> Transport {
    let mut next = first;
    let mut more_fragments = false;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                if at + 8 > end {
                    return Transport::MALFORMED;
                }
                let units = byte(at, 1) as usize;
                if next == IPPROTO_AH {
                    (units + 2) * 4
                } else {
                    (units + 1) * 8
                }
            }
            IPPROTO_FRAGMENT => {
                if at + 8 > end {
                    return Transport::MALFORMED;
                }
                let field = be16(at, 2);
                if field >> 3 != 0 {
                    return Transport::NONE;
                }
                more_fragments = field & 1 != 0;
                8
            }
            _ => break,
        };
        next = byte(at, 0);
        at += len;
    }
    if matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    ) {
        // Still an extension header after the walk: a longer chain than real traffic has.
        return Transport::MALFORMED;
    }
    let t = transport(next, at, end);
    if more_fragments && t.kind == L4::Malformed {
        Transport::EVASIVE
    } else {
        t
    }
}

#[inline(always)]
fn transport(protocol: u8, l4: usize, end: usize) -> Transport {
    match protocol {
        IPPROTO_TCP => {
            if l4 + TCP_MIN_LEN > end {
                return Transport::MALFORMED;
            }
            let data_offset = ((byte(l4, 12) >> 4) as usize) * 4;
            if data_offset < TCP_MIN_LEN {
                return Transport::MALFORMED;
            }
            let flags = byte(l4, 13);
            Transport {
                kind: L4::Port,
                port: be16(l4, 2),
                new_flow: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
            }
        }
        IPPROTO_UDP => {
            if l4 + UDP_LEN > end {
                return Transport::MALFORMED;
            }
            Transport {
                kind: L4::Port,
                port: be16(l4, 2),
                new_flow: quic_initial(l4 + UDP_LEN, end),
            }
        }
        _ => Transport::NONE,
    }
}

/// A QUIC long-header Initial packet of version 1 or 2 (RFC 9000 §17.2.2, RFC 9369 §3.2).
#[inline(always)]
fn quic_initial(payload: usize, end: usize) -> bool {
    if payload + 5 > end {
        return false;
    }
    let first = byte(payload, 0);
    if first & 0xc0 != 0xc0 {
        return false;
    }
    let version = u32::from_be(word(payload, 1));
    let packet_type = (first >> 4) & 0x03;
    (version == QUIC_V1 && packet_type == 0) || (version == QUIC_V2 && packet_type == 1)
}
