//! Stable, non-cryptographic 64-bit hashing for topology keys and member identities.
//!
//! Consistent hashing only works across a fleet if every proxy, in every release, computes
//! the same hash for the same key. It lives here, next to the contract, because both sides
//! need the one definition: callers hash request keys and member identities with it, and
//! strategies mix keys and derive ring points with [`mix64`] and [`GOLDEN`]. `std`'s `RandomState` is seeded per process and
//! `DefaultHasher`'s algorithm is unspecified, so neither is used. The function here is
//! OmniRelay's own and is frozen: the golden values in the tests below must never change.
//!
//! **Definition (version 1).** With the SplitMix64 finaliser
//! `mix64(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)`
//! (wrapping multiplications) and `G = 0x9E3779B97F4A7C15`:
//!
//! ```text
//! h = seed ^ (len * G)
//! for each full 8-byte chunk c (little endian):  h = mix64(h ^ c)
//! if 1..=7 bytes remain: t = those bytes little endian, zero padded;  h = mix64(h ^ t)
//! result = mix64(h ^ G)
//! ```
//!
//! `mix64` is a bijection, so two inputs of the same length differing in one chunk always
//! differ in the state after that chunk; folding the length in first separates inputs that
//! differ only by trailing zero bytes. Not collision resistant against an adversary: keys
//! chosen to collide can only skew load onto one endpoint, which the per-endpoint limits
//! of the proxy bound anyway.

use std::net::{IpAddr, SocketAddr};

/// The golden-ratio increment of SplitMix64, also used to fold lengths and indexes in.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a fast bijective 64-bit mixer with full avalanche.
pub const fn mix64(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes `bytes` with seed 0: the stable lookup key for a [`super::TopologyTable`] (e.g.
/// of a header value or a session cookie).
pub fn hash_key(bytes: &[u8]) -> u64 {
    hash_key_seeded(bytes, 0)
}

/// Hashes `bytes` with an explicit `seed` (see the module documentation for the exact
/// function); different seeds give independent hash families.
pub fn hash_key_seeded(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(GOLDEN);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = mix64(h ^ u64::from_le_bytes(word));
    }
    mix64(h ^ GOLDEN)
}

/// Hashes a client IP address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) hash like the
/// IPv4 address, so dual-stack listeners map one client to one endpoint.
pub fn hash_ip(ip: IpAddr) -> u64 {
    let mut buf = [0u8; 17];
    let len = write_ip(ip.to_canonical(), &mut buf);
    hash_key(&buf[..len])
}

/// Hashes an endpoint address (IP and port; an IPv6 flow label and scope id are ignored):
/// the [`super::Member::key`] of an endpoint. Ring points and rendezvous scores derive
/// from it, never from an endpoint's position in the list, so reordering or adding
/// endpoints leaves the others where they were.
pub fn hash_socket_addr(addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 19];
    let len = write_ip(addr.ip(), &mut buf);
    buf[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
    hash_key(&buf[..len + 2])
}

/// Writes a family tag byte (4 or 6) and the address octets; returns the length written.
fn write_ip(ip: IpAddr, buf: &mut [u8]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&v4.octets());
            5
        }
        IpAddr::V6(v6) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&v6.octets());
            17
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn golden_values_are_frozen() {
        // Changing any of these changes which endpoint every key maps to, fleet wide. The
        // values were cross-checked against an independent implementation of the
        // definition in the module documentation. hash_key(b"") = mix64(G) is also the
        // first output of the reference SplitMix64 generator seeded with 0.
        assert_eq!(hash_key(b""), GOLDEN_EMPTY);
        assert_eq!(hash_key(b"a"), GOLDEN_A);
        assert_eq!(hash_key(b"user-12345"), GOLDEN_USER);
        assert_eq!(hash_key_seeded(b"user-12345", 7), GOLDEN_USER_SEED7);
        assert_eq!(hash_ip("192.0.2.1".parse().unwrap()), GOLDEN_IP);
        assert_eq!(
            hash_socket_addr("10.0.0.1:8080".parse().unwrap()),
            GOLDEN_SOCKET
        );
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }

    const GOLDEN_EMPTY: u64 = 0xe220_a839_7b1d_cdaf;
    const GOLDEN_A: u64 = 0x6e21_4458_34d8_3cdd;
    const GOLDEN_USER: u64 = 0x2e93_11e1_4fc8_52d0;
    const GOLDEN_USER_SEED7: u64 = 0x67e8_8336_fa92_4e57;
    const GOLDEN_IP: u64 = 0xfd4d_4400_1803_a03f;
    const GOLDEN_SOCKET: u64 = 0x308c_4d2e_ddb0_63c2;

    #[test]
    fn trailing_zeros_length_and_seed_change_the_hash() {
        assert_ne!(hash_key(b"ab"), hash_key(b"ab\0"));
        assert_ne!(hash_key(b"12345678"), hash_key(b"12345678\0"));
        assert_ne!(hash_key(b""), hash_key(b"\0"));
        assert_ne!(hash_key_seeded(b"k", 1), hash_key_seeded(b"k", 2));
    }

    #[test]
    fn ipv4_mapped_ipv6_hashes_like_ipv4_and_ports_matter() {
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(hash_ip(v4), hash_ip(mapped));
        assert_ne!(hash_ip(v4), hash_ip("2001:db8::7".parse().unwrap()));
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert_ne!(hash_socket_addr(a), hash_socket_addr(b));
    }

    #[test]
    fn no_collisions_and_balanced_bits_over_many_keys() {
        let mut seen = HashSet::new();
        let mut ones = [0u32; 64];
        let n = 20_000u32;
        for i in 0..n {
            let h = hash_key(format!("key-{i}").as_bytes());
            assert!(seen.insert(h), "collision at {i}");
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += ((h >> bit) & 1) as u32;
            }
        }
        // Each output bit is set for about half of the keys (±3%).
        for (bit, count) in ones.iter().enumerate() {
            let share = f64::from(*count) / f64::from(n);
            assert!((0.47..0.53).contains(&share), "bit {bit}: {share}");
        }
    }

    #[test]
    fn one_flipped_input_bit_flips_about_half_the_output() {
        let base = *b"0123456789abcdef0";
        let h0 = hash_key(&base);
        let mut total = 0u32;
        for byte in 0..base.len() {
            for bit in 0..8 {
                let mut flipped = base;
                flipped[byte] ^= 1 << bit;
                let d = (hash_key(&flipped) ^ h0).count_ones();
                assert!((12..=52).contains(&d), "byte {byte} bit {bit}: {d} bits");
                total += d;
            }
        }
        let mean = f64::from(total) / (base.len() * 8) as f64;
        assert!((29.0..35.0).contains(&mean), "mean avalanche {mean}");
    }
}
