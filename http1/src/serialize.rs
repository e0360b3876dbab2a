//! Serializing for the next hop: heads (hop-by-hop fields out, the proxy's fields and the
//! chosen framing in) and chunked body framing.

use bytes::{BufMut, BytesMut};

use super::error::put_decimal;
use super::framing::content_length;
use super::headers::{
    Headers, is_field_value_byte, is_token, known_bit, known_bit_const, list_elements,
};
use super::{Framing, RequestHead, ResponseHead};

/// Fields that never cross the proxy (RFC 9110 §7.6.1 plus the Proxy-* fields), and
/// Content-Length, which the serializer re-emits from the chosen framing.
pub(crate) const DROPPED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"content-length",
];

/// Appends `head` as a request to upstream: `METHOD target HTTP/1.1` (a proxy sends its own
/// version, RFC 9110 §6.2), the fields minus hop-by-hop ones, the `extra` fields, the
/// framing field for `body`, and the blank line.
///
/// Dropped: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
/// Upgrade, Proxy-Authorization, Proxy-Authenticate, every field named in Connection
/// (except Host, which a client cannot make the proxy strip), Content-Length, and every field
/// named in `extra`: an extra field *replaces* the message's fields of that name, so build
/// its value from the old ones with [`x_forwarded_for`](super::x_forwarded_for),
/// [`forwarded`](super::forwarded()) or [`via`](super::via) to append rather than replace.
/// Extra fields are written as given: their names must be tokens and their values free of
/// CR and LF (checked in debug builds). Fields named in `remove` are dropped too.
///
/// The target goes out as `target` when given (a normalized path and the query), else in
/// origin-form: an absolute-form one loses its scheme and authority, which the caller
/// passes on as a `host` extra field.
///
/// `body` adds `content-length: N` ([`Framing::ContentLength`]) or
/// `transfer-encoding: chunked` ([`Framing::Chunked`]); [`Framing::None`] and
/// [`Framing::CloseDelimited`] (meaningless for a request) add nothing.
pub fn write_request_head(
    head: &RequestHead,
    target: Option<&str>,
    body: Framing,
    extra: &[(&str, &[u8])],
    remove: &[Box<str>],
    out: &mut BytesMut,
) {
    out.reserve(head.raw().len() + extra_len(extra) + 64);
    out.put_slice(head.method().as_bytes());
    out.put_u8(b' ');
    // In origin-form, as origin servers expect (an absolute-form target's authority goes
    // in the Host field the caller adds).
    let (lead, rest) = upstream_target(head, target);
    out.put_slice(lead.as_bytes());
    out.put_slice(rest.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    write_fields(head.headers(), extra, remove, out);
    match body {
        Framing::ContentLength(len) => put_content_length(out, len),
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::CloseDelimited => {}
    }
    out.put_slice(b"\r\n");
}

/// The request target as sent upstream, in two parts written one after the other: `target`
/// when given, else the origin-form of the client's (an absolute-form target without a path
/// gets `/`, or `*` for OPTIONS without a query: RFC 9112 §3.2.4).
pub fn upstream_target<'a>(head: &'a RequestHead, target: Option<&'a str>) -> (&'a str, &'a str) {
    let target = target.unwrap_or_else(|| head.origin_target());
    if head.authority().is_none() || target.starts_with('/') {
        return ("", target);
    }
    if target.is_empty() && head.method() == "OPTIONS" {
        return ("*", "");
    }
    ("/", target)
}

/// Appends `head` as a response to the client: `HTTP/1.1 status reason`, then fields as in
/// [`write_request_head`], then the framing field for `body`.
///
/// [`Framing::None`] keeps the upstream's Content-Length (normalized to one field, if
/// valid) on 304 and HEAD responses, where it describes the representation, and drops it on
/// 1xx and 204, where it is not allowed. [`Framing::CloseDelimited`] adds
/// `connection: close` unless `extra` has a Connection field; pick it for HTTP/1.0 clients
/// with [`downstream_framing`](super::downstream_framing).
pub fn write_response_head(
    head: &ResponseHead,
    body: Framing,
    extra: &[(&str, &[u8])],
    remove: &[Box<str>],
    out: &mut BytesMut,
) {
    out.reserve(head.raw().len() + extra_len(extra) + 64);
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(head.status()));
    out.put_u8(b' ');
    out.put_slice(head.reason());
    out.put_slice(b"\r\n");
    write_fields(head.headers(), extra, remove, out);
    match body {
        Framing::ContentLength(len) => put_content_length(out, len),
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None if head.status() >= 200 && head.status() != 204 => {
            if let Ok(Some(len)) = content_length(head.headers()) {
                put_content_length(out, len);
            }
        }
        Framing::None => {}
        Framing::CloseDelimited => {
            if !extra
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
            {
                out.put_slice(b"connection: close\r\n");
            }
        }
    }
    out.put_slice(b"\r\n");
}

/// Fields a request's route may not set or remove: the ones this proxy owns (framing,
/// hop-by-hop, Host, which `rewrite.host` sets, and the forwarding fields it writes).
const PROXY_OWNED_REQUEST: &[&str] = &[
    "host",
    // The proxy answers 100-continue itself.
    "expect",
    "x-forwarded-for",
    "forwarded",
    "via",
    "x-forwarded-proto",
    "x-request-id",
];

/// Why a route may not set or remove field `name` (lowercase) on requests (`request`) or
/// responses, or `None` when it may: framing and hop-by-hop fields belong to each
/// connection, and on requests the forwarding fields and Host are the proxy's.
pub fn uneditable_field(name: &str, request: bool) -> Option<&'static str> {
    if !is_token(name.as_bytes()) {
        return Some("is not a field name");
    }
    if DROPPED
        .iter()
        .any(|d| d.eq_ignore_ascii_case(name.as_bytes()))
    {
        return Some("is a framing or hop-by-hop field, which the proxy writes per connection");
    }
    if request
        && PROXY_OWNED_REQUEST
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
    {
        return Some("is the proxy's own on requests (Host is set by rewrite.host)");
    }
    None
}

/// Whether `value` may be a field's value as given (no CR, LF or other control byte but
/// HTAB; no leading or trailing whitespace).
pub fn valid_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_field_value_byte(b))
        && !value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
        && !value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
}

/// The [`KNOWN`](super::headers::KNOWN) bits of the [`DROPPED`] names (Connection among
/// them). Every one of them is known (checked in the tests).
const DROPPED_BITS: u32 = {
    let mut bits = 0;
    let mut i = 0;
    while i < DROPPED.len() {
        bits |= known_bit_const(DROPPED[i]);
        i += 1;
    }
    bits
};

fn write_fields(
    headers: &Headers,
    extra: &[(&str, &[u8])],
    remove: &[Box<str>],
    out: &mut BytesMut,
) {
    // Nothing to drop and no field an extra one replaces (the usual request): every line
    // goes out as it came, in as few copies as it has runs.
    let replaced = extra
        .iter()
        .map(|(n, _)| *n)
        .chain(remove.iter().map(|n| &**n))
        .try_fold(DROPPED_BITS, |m, n| known_bit(n.as_bytes()).map(|b| m | b));
    if replaced.is_some_and(|bits| !headers.has_any_known(bits)) {
        headers.write_kept(|_| true, out);
        put_extra(extra, out);
        return;
    }
    let nominated = Nominated::new(headers);
    headers.write_kept(
        |name| {
            !(known_bit(name).is_some_and(|b| b & DROPPED_BITS != 0)
                || nominated.contains(name, headers)
                || extra
                    .iter()
                    .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
                || remove
                    .iter()
                    .any(|n| n.as_bytes().eq_ignore_ascii_case(name)))
        },
        out,
    );
    put_extra(extra, out);
}

fn put_extra(extra: &[(&str, &[u8])], out: &mut BytesMut) {
    for (name, value) in extra {
        debug_assert!(is_token(name.as_bytes()), "extra field name {name:?}");
        debug_assert!(
            value.iter().all(|&b| is_field_value_byte(b)),
            "extra {name} value"
        );
        put_field(out, name.as_bytes(), value);
    }
}

/// The field names listed in the Connection fields, gathered once per head on the stack so
/// that checking each field is not a scan of all fields (quadratic on large heads).
struct Nominated<'h> {
    names: [&'h [u8]; 16],
    len: usize,
    /// More names than fit: fall back to scanning the Connection fields.
    overflow: bool,
}

impl<'h> Nominated<'h> {
    fn new(headers: &'h Headers) -> Nominated<'h> {
        let mut nominated = Nominated {
            names: [&[][..]; 16],
            len: 0,
            overflow: false,
        };
        for option in headers.get_all("connection").flat_map(list_elements) {
            match nominated.names.get_mut(nominated.len) {
                Some(slot) => *slot = option,
                None => nominated.overflow = true,
            }
            nominated.len += 1;
        }
        nominated
    }

    /// Whether `name` is listed in Connection. Host never is: a client must not be able to
    /// make the proxy send a request without one.
    fn contains(&self, name: &[u8], headers: &Headers) -> bool {
        if self.len == 0 || name.eq_ignore_ascii_case(b"host") {
            return false;
        }
        if self.overflow {
            let mut options = headers.get_all("connection").flat_map(list_elements);
            return options.any(|option| option.eq_ignore_ascii_case(name));
        }
        self.names[..self.len]
            .iter()
            .any(|option| option.eq_ignore_ascii_case(name))
    }
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn put_content_length(out: &mut BytesMut, len: u64) {
    out.put_slice(b"content-length: ");
    put_decimal(out, len);
    out.put_slice(b"\r\n");
}

fn extra_len(extra: &[(&str, &[u8])]) -> usize {
    extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
}

/// The last chunk with an empty trailer section: what ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the size line of a chunk of `len` data bytes (`{len:x}\r\n`). Nothing for
/// `len == 0`, which would end the body: use [`LAST_CHUNK`] for that.
pub fn encode_chunk_header(len: usize, out: &mut BytesMut) {
    if len == 0 {
        return;
    }
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len as u64;
    while n != 0 {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    out.reserve(16 - at + 2);
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

/// Appends `data` as one chunk: size line, data, CRLF. Nothing for empty `data`, which would
/// end the body.
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    encode_chunk_header(data.len(), out);
    out.reserve(data.len() + 2);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}
