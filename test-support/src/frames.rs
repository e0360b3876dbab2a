//! Hand-built Ethernet frames for kernel program tests: well-formed TCP and UDP over IPv4
//! and IPv6 (optionally VLAN-tagged), and ways to break them. Checksums are left zero:
//! XDP programs and `BPF_PROG_TEST_RUN` do not verify them.

use std::net::IpAddr;

/// TCP flags.
pub mod tcp {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The transport of a frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    /// A TCP segment with these flags and no payload.
    Tcp {
        /// Flags byte (see [`tcp`]).
        flags: u8,
    },
    /// A UDP datagram carrying `payload`.
    Udp {
        /// Bytes after the UDP header.
        payload: &'static [u8],
    },
    /// An ICMP echo request (no port).
    Icmp,
}

/// Builds a frame. `vlan`: one 802.1Q tag with this VLAN id.
pub fn frame(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    l4: L4,
    vlan: Option<u16>,
) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let ether_type: u16 = if src.is_ipv4() { 0x0800 } else { 0x86dd };
    if let Some(id) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    let transport = match l4 {
        L4::Tcp { flags } => {
            let mut t = Vec::with_capacity(20);
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&1u32.to_be_bytes());
            t.extend_from_slice(&0u32.to_be_bytes());
            t.push(5 << 4);
            t.push(flags);
            t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            t
        }
        L4::Udp { payload } => {
            let mut t = Vec::with_capacity(8 + payload.len());
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&dport.to_be_bytes());
            t.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            t.extend_from_slice(&[0, 0]);
            t.extend_from_slice(payload);
            t
        }
        L4::Icmp => vec![8, 0, 0, 0, 0, 1, 0, 1],
    };
    let proto = match l4 {
        L4::Tcp { .. } => 6,
        L4::Udp { .. } => 17,
        L4::Icmp => {
            if src.is_ipv4() {
                1
            } else {
                58
            }
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + transport.len()) as u16;
            f.push(0x45);
            f.push(0);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(transport.len() as u16).to_be_bytes());
            f.push(proto);
            f.push(64);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("source and destination must be of one family"),
    }
    f.extend_from_slice(&transport);
    f
}

/// Offset of the IP header in a frame built by [`frame`].
pub fn ip_offset(vlan: bool) -> usize {
    if vlan { 18 } else { 14 }
}

/// A QUIC v1 Initial long-header packet start (enough for classification).
pub const QUIC_V1_INITIAL: &[u8] = &[0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
/// A QUIC short-header (1-RTT) packet start.
pub const QUIC_SHORT: &[u8] = &[0x43, 1, 2, 3, 4, 5, 6, 7, 8, 9];
