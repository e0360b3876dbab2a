//! Values of the fields a proxy adds: X-Forwarded-For, Forwarded (RFC 7239) and Via
//! (RFC 9110 §7.6.3). Each takes the values already in the message and appends this hop.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

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
    let mut out = join_existing(existing);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", peer.ip().to_canonical());
    out
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
    let mut out = join_existing(existing);
    out.extend_from_slice(b"for=");
    let _ = match peer.ip().to_canonical() {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
    out.extend_from_slice(b";proto=");
    put_token_or_quoted(&mut out, proto.as_bytes());
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        put_token_or_quoted(&mut out, host);
    }
    out
}

/// `Via` with `<received> omnirelay` appended to the `existing` values, where `received` is
/// the version of the message as this proxy received it (`1.1`, or `1.0`).
pub fn via<'a>(existing: impl IntoIterator<Item = &'a [u8]>, received: Version) -> Vec<u8> {
    let mut out = join_existing(existing);
    out.extend_from_slice(match received {
        Version::Http10 => b"1.0 ",
        Version::Http11 => b"1.1 ",
    });
    out.extend_from_slice(PROXY_PSEUDONYM.as_bytes());
    out
}

/// The non-empty `existing` values joined by `, `, ending in `, ` if there were any.
fn join_existing<'a>(existing: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for value in existing.into_iter().map(trim_ows).filter(|v| !v.is_empty()) {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    out
}

/// Writes `value` as a token if it is one, else as a quoted-string, escaping `"` and `\`
/// and dropping control characters (which a parsed field value cannot hold anyway).
fn put_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if is_token(value) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
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
