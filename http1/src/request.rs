//! Request heads: parsing from the read buffer and what the proxy asks of them.

use bytes::{Bytes, BytesMut};

use super::headers::{self, Headers, Span};
use super::{Framing, Http1Error, Limits, ParseStatus, Version, framing};

/// A parsed request head: request line and header fields, all referring into the head's own
/// bytes, which were split off the read buffer without copying.
#[derive(Clone, Debug)]
pub struct RequestHead {
    raw: Bytes,
    method: Span,
    target: Span,
    version: Version,
    headers: Headers,
}

impl RequestHead {
    /// Parses a request head at the front of `buf`.
    ///
    /// On [`ParseStatus::Complete`] the head's bytes are split off `buf`; on
    /// [`ParseStatus::Partial`] `buf` is untouched and the caller reads more into it. Leading
    /// empty lines are skipped (RFC 9112 §2.2). Besides httparse's checks it enforces
    /// `limits` (head size and field count: 431, request line: 414), CRLF line endings
    /// ([`Http1Error::BareLf`]) and exactly one Host field on HTTP/1.1 (at most one on 1.0).
    pub fn parse(
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<ParseStatus<RequestHead>, Http1Error> {
        let split = headers::split_head(buf, limits.max_head_bytes, |window| {
            check_request_line(window, limits.max_request_line_bytes)?;
            headers::with_slots(limits.max_headers, |slots| {
                let mut req = httparse::Request::new(&mut []);
                let parsed = httparse::ParserConfig::default()
                    .parse_request_with_uninit_headers(&mut req, window, slots);
                match parsed.map_err(headers::parse_error)? {
                    httparse::Status::Partial => Ok(None),
                    httparse::Status::Complete(len) => {
                        let method = Span::of(window, req.method.unwrap_or_default().as_bytes());
                        let target = Span::of(window, req.path.unwrap_or_default().as_bytes());
                        let version = match req.version {
                            Some(0) => Version::Http10,
                            Some(1) => Version::Http11,
                            _ => return Err(Http1Error::UnsupportedVersion),
                        };
                        let fields = Headers::spans(window, req.headers);
                        Ok(Some((len, (method, target, version, fields))))
                    }
                }
            })
        })?;
        let Some((raw, (method, target, version, fields))) = split else {
            return Ok(ParseStatus::Partial);
        };
        let len = raw.len();
        let head = RequestHead {
            headers: Headers::new(raw.clone(), fields),
            raw,
            method,
            target,
            version,
        };
        match head.headers.count("host") {
            0 if version == Version::Http11 => return Err(Http1Error::MissingHost),
            0 | 1 => {}
            _ => return Err(Http1Error::DuplicateHost),
        }
        // The Host field is checked also when an absolute-form authority replaces it.
        let host_field = head.headers.get("host");
        if host_field.is_some_and(|h| !valid_host(h)) {
            return Err(Http1Error::InvalidHost);
        }
        // An http(s) URI must name a host (RFC 9110 §4.2.1).
        if head
            .authority()
            .is_some_and(|a| a.is_empty() || !valid_host(a.as_bytes()))
        {
            return Err(Http1Error::InvalidHost);
        }
        Ok(ParseStatus::Complete {
            head,
            consumed: len,
        })
    }

    /// The method, e.g. `GET` (case-sensitive, as sent).
    pub fn method(&self) -> &str {
        self.str_at(self.method)
    }

    /// The request target as sent: origin-form (`/path?query`), absolute-form, authority-form
    /// (CONNECT) or `*`.
    pub fn target(&self) -> &str {
        self.str_at(self.target)
    }

    /// An absolute-form target's parts (`http://authority/path?query`, RFC 9112 §3.2.2):
    /// the authority and the rest, which may be empty or start with `?`.
    fn absolute_parts(&self) -> Option<(&str, &str)> {
        let target = self.target();
        let rest = ["http://", "https://"].iter().find_map(|scheme| {
            let head = target.get(..scheme.len())?;
            head.eq_ignore_ascii_case(scheme)
                .then(|| &target[scheme.len()..])
        })?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        Some(rest.split_at(end))
    }

    /// The authority of an absolute-form target (`a.example:8080` of
    /// `http://a.example:8080/x`); `None` for the other forms.
    pub fn authority(&self) -> Option<&str> {
        self.absolute_parts().map(|(authority, _)| authority)
    }

    /// The target in origin-form: as sent, or the path and query of an absolute-form
    /// target (empty, or starting with `?`, when it has no path: [`RequestHead::path`]
    /// reads that as `/`).
    pub fn origin_target(&self) -> &str {
        self.absolute_parts()
            .map_or(self.target(), |(_, rest)| rest)
    }

    /// The path: the origin-form target up to the first `?` (`/` for an absolute-form
    /// target without a path).
    pub fn path(&self) -> &str {
        let target = self.origin_target();
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        if path.is_empty() && self.authority().is_some() {
            "/"
        } else {
            path
        }
    }

    /// The target after the first `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.origin_target().split_once('?').map(|(_, query)| query)
    }

    /// The request's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The host the request is for: an absolute-form target's authority (which then wins
    /// over the Host field, RFC 9112 §3.2.2), else the Host field's value, if present
    /// (parsing guarantees at most one).
    pub fn host(&self) -> Option<&[u8]> {
        match self.authority() {
            Some(authority) => Some(authority.as_bytes()),
            None => self.headers.get("host"),
        }
    }

    /// The head exactly as received, request line to blank line.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Whether the method is HEAD, whose response never has a body.
    pub fn is_head(&self) -> bool {
        self.method() == "HEAD"
    }

    /// Whether this asks to leave HTTP/1.1: CONNECT, or `Connection: upgrade` together with
    /// an Upgrade field. [`RequestHead::framing`] rejects such requests for now.
    pub fn is_upgrade(&self) -> bool {
        self.method() == "CONNECT"
            || (self.headers.has_token("connection", "upgrade") && self.headers.contains("upgrade"))
    }

    /// Whether the client waits for `100 Continue` before sending the body. Only HTTP/1.1
    /// counts: RFC 9110 §10.1.1 has a server ignore the expectation in an HTTP/1.0 request.
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11 && self.headers.has_token("expect", "100-continue")
    }

    /// Whether the client connection may carry another request after this one (see
    /// [`keep_alive`](super::keep_alive)).
    pub fn keep_alive(&self) -> bool {
        framing::keep_alive(self.version, self.headers.get_all("connection"))
    }

    /// The body framing (RFC 9112 §6.3), rejecting upgrades, smuggling vectors and bodies
    /// larger than `limits.max_body_bytes`. A request never has
    /// [`Framing::CloseDelimited`].
    pub fn framing(&self, limits: &Limits) -> Result<Framing, Http1Error> {
        framing::request_framing(self, limits)
    }

    fn str_at(&self, span: Span) -> &str {
        std::str::from_utf8(&self.raw[span.range()]).unwrap_or_default()
    }
}

/// Fails with 414 when no LF ends the request line within `max` bytes. The empty lines a
/// client may send before it (RFC 9112 §2.2) are not counted; the head limit bounds them.
fn check_request_line(window: &[u8], max: usize) -> Result<(), Http1Error> {
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n');
    let line = &window[start.unwrap_or(window.len())..];
    if !line[..line.len().min(max)].contains(&b'\n') && line.len() >= max {
        return Err(Http1Error::UriTooLong);
    }
    Ok(())
}

/// Splits an authority (`host[:port]`, the host maybe a bracketed IP literal) into its
/// host, brackets kept, and its port when it names one: `example.com:8080` is
/// (`example.com`, `8080`), `[::1]` and `[::1]:` are (`[::1]`, none).
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    match authority[host_end..].strip_prefix(':') {
        // An empty port (`example.com:`) names none (RFC 3986 §3.2.3).
        Some("") => (&authority[..host_end], None),
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (&authority[..host_end], Some(port))
        }
        _ => (authority, None),
    }
}

/// Whether `v` is a host alone, without a port (not even an empty one): a name or an
/// address, an IPv6 one in brackets.
pub fn valid_host_without_port(v: &str) -> bool {
    !v.is_empty() && !v.ends_with(':') && valid_host(v.as_bytes()) && split_port(v).1.is_none()
}

/// Whether `v` is a Host value: empty (a target without authority), or `uri-host [ ":"
/// port ]` where uri-host is a bracketed IP literal or a reg-name (unreserved,
/// percent-encoded and sub-delim characters; IPv4 addresses are reg-names by their
/// characters) and port is digits (RFC 9112 §3.2, RFC 3986 §3.2.2-3.2.3).
pub fn valid_host(v: &[u8]) -> bool {
    let sub_delim = |b: u8| b"!$&'()*+,;=".contains(&b);
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &v[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| unreserved(b) || sub_delim(b) || b == b':')
        {
            return false;
        }
        match &v[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            // A port needs a host before it (`:80` names none).
            Some(0) => return false,
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &[][..]),
        }
    };
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(unreserved(b) || sub_delim(b)) {
            return false;
        }
        i += 1;
    }
    port.iter().all(u8::is_ascii_digit)
}
