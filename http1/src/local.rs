//! Responses the proxy makes itself: its errors, and a route's fixed responses and
//! redirects.

use bytes::{BufMut, BytesMut};

use crate::{Version, error::put_decimal};

/// Whom a response the proxy makes itself goes to, and what becomes of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// The request's HTTP version.
    pub version: Version,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The request was a HEAD: the head says the body's length, the body is not sent.
    pub head_request: bool,
}

impl LocalReply {
    /// A reply after which the connection closes (the request could not be read).
    pub const CLOSE: LocalReply = LocalReply {
        version: Version::Http11,
        keep_alive: false,
        head_request: false,
    };
}

/// Appends a minimal plain-text response with `status` and the body `reason` plus a
/// newline (see [`write_own_response`]).
pub fn write_local_response(status: u16, reason: &str, to: LocalReply, out: &mut BytesMut) {
    let fields: [(&str, &[u8]); 1] = [("content-type", b"text/plain")];
    write_head(status, &fields, reason.len() + 1, to, out);
    if !to.head_request {
        out.put_slice(reason.as_bytes());
        out.put_u8(b'\n');
    }
}

/// Appends a response with `status`, the `fields` (names and values as given: the caller
/// checked them), a `content-length` and the `body`, saying what becomes of the
/// connection as a relayed response would: `connection: close` when it closes,
/// `connection: keep-alive` to an HTTP/1.0 client it stays open for, nothing to an
/// HTTP/1.1 one. A HEAD's response has the head alone; a 204 or 304 has neither length
/// nor body.
pub fn write_own_response(
    status: u16,
    fields: &[(&str, &[u8])],
    body: &[u8],
    to: LocalReply,
    out: &mut BytesMut,
) {
    write_head(status, fields, body.len(), to, out);
    if !to.head_request && !no_content(status) {
        out.put_slice(body);
    }
}

/// Statuses whose responses carry neither a body nor its length (RFC 9110 §8.6, §15.4.5).
fn no_content(status: u16) -> bool {
    matches!(status, 204 | 304)
}

/// Whether a response with `status` may not carry a body: 204, 205 (RFC 9110 §15.3.6)
/// and 304.
pub fn forbids_body(status: u16) -> bool {
    matches!(status, 204 | 205 | 304)
}

fn write_head(
    status: u16,
    fields: &[(&str, &[u8])],
    body_len: usize,
    to: LocalReply,
    out: &mut BytesMut,
) {
    let named: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    out.reserve(128 + named + body_len);
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(canonical_reason(status).as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in fields {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    if !no_content(status) {
        out.put_slice(b"content-length: ");
        put_decimal(out, body_len as u64);
        out.put_slice(b"\r\n");
    }
    out.put_slice(match (to.keep_alive, to.version) {
        (false, _) => &b"connection: close\r\n\r\n"[..],
        (true, Version::Http10) => b"connection: keep-alive\r\n\r\n",
        (true, Version::Http11) => b"\r\n",
    });
}

/// The RFC 9110 reason phrase of a status the proxy answers with; for one it does not
/// know, an empty phrase (allowed, RFC 9112 §4) or, from 400 on, `Error`.
pub(crate) fn canonical_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ if status >= 400 => "Error",
        _ => "",
    }
}
