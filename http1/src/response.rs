//! Response heads from upstream: parsing and the response body-framing rules.

use bytes::{Bytes, BytesMut};

use super::headers::{self, Headers, Span};
use super::{Framing, Http1Error, Limits, ParseStatus, Version, framing};

/// A parsed response head: status line and header fields, referring into the head's own
/// bytes, which were split off the read buffer without copying.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    raw: Bytes,
    version: Version,
    status: u16,
    reason: Span,
    headers: Headers,
}

impl ResponseHead {
    /// Parses a response head at the front of `buf`, like
    /// [`RequestHead::parse`](super::RequestHead::parse): on
    /// [`ParseStatus::Complete`] the head's bytes are split off `buf`, on
    /// [`ParseStatus::Partial`] `buf` is untouched. Enforces `limits.max_head_bytes` and
    /// `limits.max_headers`, CRLF line endings and a status code in 100..=599. httparse's
    /// defaults for responses already reject obs-fold and whitespace before a colon.
    pub fn parse(
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<ParseStatus<ResponseHead>, Http1Error> {
        let split = headers::split_head(buf, limits.max_head_bytes, |window| {
            headers::with_slots(limits.max_headers, |slots| {
                let mut resp = httparse::Response::new(&mut []);
                let parsed = httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut resp, window, slots);
                match parsed.map_err(headers::parse_error)? {
                    httparse::Status::Partial => Ok(None),
                    httparse::Status::Complete(len) => {
                        let version = match resp.version {
                            Some(0) => Version::Http10,
                            Some(1) => Version::Http11,
                            _ => return Err(Http1Error::UnsupportedVersion),
                        };
                        let status = resp.code.unwrap_or_default();
                        if !(100..=599).contains(&status) {
                            return Err(Http1Error::MalformedHead(httparse::Error::Status));
                        }
                        let reason = Span::of(window, resp.reason.unwrap_or_default().as_bytes());
                        let fields = Headers::spans(window, resp.headers);
                        Ok(Some((len, (version, status, reason, fields))))
                    }
                }
            })
        })?;
        let Some((raw, (version, status, reason, fields))) = split else {
            return Ok(ParseStatus::Partial);
        };
        let len = raw.len();
        let head = ResponseHead {
            headers: Headers::new(raw.clone(), fields),
            raw,
            version,
            status,
            reason,
        };
        Ok(ParseStatus::Complete {
            head,
            consumed: len,
        })
    }

    /// The response's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The status code, in 100..=599.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent (empty when missing, or when it held bytes httparse
    /// refuses).
    pub fn reason(&self) -> &[u8] {
        &self.raw[self.reason.range()]
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The head exactly as received, status line to blank line.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Whether this is an interim (1xx) response, which another response follows.
    pub fn is_informational(&self) -> bool {
        self.status < 200
    }

    /// Whether the upstream connection may carry another request after this response
    /// (see [`keep_alive`](super::keep_alive)). A close-delimited body also ends it.
    pub fn keep_alive(&self) -> bool {
        framing::keep_alive(self.version, self.headers.get_all("connection"))
    }

    /// The body framing (RFC 9112 §6.3); `head_request` says whether it answers HEAD.
    ///
    /// 1xx, 204, 304 and HEAD responses have no body whatever their fields say (and their
    /// fields are not checked). 101 is an error: the proxy never forwards an upgrade. Other
    /// responses: `chunked` alone → [`Framing::Chunked`]; Transfer-Encoding with
    /// Content-Length, on HTTP/1.0, or with another coding → error (RFC 9112 lets the last
    /// case be close-delimited, but the proxy re-frames bodies and cannot carry the coding
    /// on); Content-Length → [`Framing::ContentLength`]; neither →
    /// [`Framing::CloseDelimited`].
    pub fn framing(&self, head_request: bool) -> Result<Framing, Http1Error> {
        framing::response_framing(self, head_request)
    }
}
