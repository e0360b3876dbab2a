//! Values of the fields a proxy adds: X-Forwarded-For, Forwarded (RFC 7239) and Via
//! (RFC 9110 §7.6.3). Each takes the values already in the message and appends this hop.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Version;
use super::headers::{is_token, trim_ows};

/// The name the proxy gives itself in Via.
pub const PROXY_PSEUDONYM: &str = "omnirelay";

/// `X-Forwarded-For` with `peer`'s address appended to the `existing` values (every
/// X-Forwarded-For field of the request, in order), comma-separated. Only the address is
/// added, without the port; IPv6 is written unbracketed as is customary for this field, and
/// an IPv4-mapped IPv6 peer (from a dual-stack socket) as plain IPv4.
pub fn x_forwarded_for<'a>(
    existing: impl IntoIterator<Item = &'a [u8]>,
    peer: SocketAddr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    x_forwarded_for_into(existing, peer, &mut out);
    out
}

/// [`x_forwarded_for`], appended to `out` (no allocation when it has room).
pub fn x_forwarded_for_into<'a>(
    existing: impl IntoIterator<Item = &'a [u8]>,
    peer: SocketAddr,
    out: &mut Vec<u8>,
) {
    join_existing(existing, out);
    match peer.ip().to_canonical() {
        IpAddr::V4(v4) => put_ipv4(out, v4),
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

/// `Forwarded` with an element for this hop appended to the `existing` values:
/// `for=<peer>;proto=<proto>` plus `;host=<host>` when given. The port is left out; IPv6 is
/// quoted and bracketed (`for="[2001:db8::1]"`, RFC 7239 §6); `proto` and `host` are
/// written as tokens when they are, as quoted strings otherwise (e.g. `host="a.example:8080"`).
pub fn forwarded<'a>(
    existing: impl IntoIterator<Item = &'a [u8]>,
    peer: SocketAddr,
    proto: &str,
    host: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    forwarded_into(existing, peer, proto, host, &mut out);
    out
}

/// [`forwarded`], appended to `out`.
pub fn forwarded_into<'a>(
    existing: impl IntoIterator<Item = &'a [u8]>,
    peer: SocketAddr,
    proto: &str,
    host: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    join_existing(existing, out);
    out.extend_from_slice(b"for=");
    match peer.ip().to_canonical() {
        IpAddr::V4(v4) => put_ipv4(out, v4),
        IpAddr::V6(v6) => drop(write!(out, "\"[{v6}]\"")),
    }
    out.extend_from_slice(b";proto=");
    put_token_or_quoted(out, proto.as_bytes());
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        put_token_or_quoted(out, host);
    }
}

/// `Via` with `<received> omnirelay` appended to the `existing` values, where `received` is
/// the version of the message as this proxy received it (`1.1`, or `1.0`).
pub fn via<'a>(existing: impl IntoIterator<Item = &'a [u8]>, received: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    via_into(existing, received, &mut out);
    out
}

/// [`via`], appended to `out`.
pub fn via_into<'a>(
    existing: impl IntoIterator<Item = &'a [u8]>,
    received: Version,
    out: &mut Vec<u8>,
) {
    join_existing(existing, out);
    out.extend_from_slice(match received {
        Version::Http10 => b"1.0 ",
        Version::Http11 => b"1.1 ",
    });
    out.extend_from_slice(PROXY_PSEUDONYM.as_bytes());
}

/// The non-empty `existing` values joined by `, `, ending in `, ` if there were any.
fn join_existing<'a>(existing: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for value in existing.into_iter().map(trim_ows).filter(|v| !v.is_empty()) {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
}

/// Dotted-decimal IPv4, without the formatting machinery (this runs for every request).
fn put_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    for (i, &octet) in ip.octets().iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// Writes `value` as a token if it is one, else as a quoted-string, escaping `"` and `\`
/// and dropping control characters (which a parsed field value cannot hold anyway).
fn put_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if is_token(value) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    // Most values (a host with a port) need no escaping: one copy.
    if value.iter().all(|&b| {
        b != b'"' && b != b'\\' && (b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)
    }) {
        out.extend_from_slice(value);
        out.push(b'"');
        return;
    }
    for &b in value {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\t' | b' ' => out.push(b),
            _ if b.is_ascii_graphic() || b >= 0x80 => out.push(b),
            _ => {}
        }
    }
    out.push(b'"');
}
