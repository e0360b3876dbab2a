//! Header parsing for the limiter. Every read is preceded by a check of its end against
//! the packet end, in a form the verifier can follow.

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HDR_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;

/// What the transport header said.
#[derive(Clone, Copy)]
pub enum Transport {
    /// TCP or UDP with a complete header.
    Port {
        /// Destination port, host order.
        port: u16,
        /// TCP SYN without ACK, or a QUIC v1/v2 Initial packet.
        new_flow: bool,
    },
    /// TCP or UDP whose header is truncated or impossible.
    Malformed,
    /// No port to read: another protocol, or a non-first IPv4 fragment.
    None,
}

/// A parsed frame.
pub enum Packet {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passes untouched.
    NotIp,
    /// Truncated Ethernet/VLAN/IP header or a bad IP version / IHL.
    Malformed,
    /// An IP packet with its addresses (IPv4-mapped for IPv4).
    Ip {
        src: [u8; 16],
        dst: [u8; 16],
        transport: Transport,
    },
}

#[inline(always)]
fn byte(start: usize, off: usize) -> u8 {
    // SAFETY: every caller has checked `start + off < end` first.
    unsafe { *((start + off) as *const u8) }
}

#[inline(always)]
fn be16(start: usize, off: usize) -> u16 {
    u16::from_be_bytes([byte(start, off), byte(start, off + 1)])
}

#[inline(always)]
fn copy<const N: usize>(start: usize, off: usize) -> [u8; N] {
    // SAFETY: every caller has checked `start + off + N <= end` first.
    unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) }
}

/// Whether an address is IPv4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
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
    let src: [u8; 4] = copy(ip, 12);
    let dst: [u8; 4] = copy(ip, 16);
    let src = omnirelay_ebpf_common::limiter::v4_mapped(src);
    let dst = omnirelay_ebpf_common::limiter::v4_mapped(dst);
    let fragment_offset = be16(ip, 6) & 0x1fff;
    let transport = if fragment_offset != 0 {
        Transport::None
    } else {
        transport(byte(ip, 9), ip + ihl, end)
    };
    Packet::Ip {
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
    let src: [u8; 16] = copy(ip, 8);
    let dst: [u8; 16] = copy(ip, 24);
    // Extension headers are not walked: a packet whose next header is not TCP or UDP has
    // no port for the limiter and passes (after the deny list).
    let transport = transport(byte(ip, 6), ip + IPV6_HDR_LEN, end);
    Packet::Ip {
        src,
        dst,
        transport,
    }
}

#[inline(always)]
fn transport(protocol: u8, l4: usize, end: usize) -> Transport {
    match protocol {
        IPPROTO_TCP => {
            if l4 + TCP_MIN_LEN > end {
                return Transport::Malformed;
            }
            let data_offset = ((byte(l4, 12) >> 4) as usize) * 4;
            if data_offset < TCP_MIN_LEN {
                return Transport::Malformed;
            }
            let flags = byte(l4, 13);
            Transport::Port {
                port: be16(l4, 2),
                new_flow: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
            }
        }
        IPPROTO_UDP => {
            if l4 + UDP_LEN > end {
                return Transport::Malformed;
            }
            Transport::Port {
                port: be16(l4, 2),
                new_flow: quic_initial(l4 + UDP_LEN, end),
            }
        }
        _ => Transport::None,
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
    let version = u32::from_be_bytes(copy(payload, 1));
    let packet_type = (first >> 4) & 0x03;
    (version == QUIC_V1 && packet_type == 0) || (version == QUIC_V2 && packet_type == 1)
}
