//! Body framing (RFC 9112 §6) and connection persistence (RFC 9112 §9.3).

use super::headers::{Headers, is_token, list_elements, trim_ows};
use super::{Http1Error, Limits, RequestHead, ResponseHead, Version};

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (possibly 0).
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    CloseDelimited,
}

impl Framing {
    /// Whether body bytes may follow the head.
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::None | Framing::ContentLength(0))
    }
}

/// Whether a connection may persist after a message of `version` with these Connection
/// values (RFC 9112 §9.3): a `close` option always ends it; otherwise HTTP/1.1 persists and
/// HTTP/1.0 persists only with a `keep-alive` option.
pub fn keep_alive<'a>(version: Version, connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let (mut close, mut keep) = (false, false);
    for option in connection.into_iter().flat_map(list_elements) {
        close |= option.eq_ignore_ascii_case(b"close");
        keep |= option.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::Http11 || keep)
}

/// The framing to send a response body to a client of `client` version with, given the
/// upstream's: an HTTP/1.0 client cannot read chunked, so it gets a close-delimited body
/// (the shell closes the connection after it). Everything else is kept.
pub fn downstream_framing(upstream: Framing, client: Version) -> Framing {
    match (upstream, client) {
        (Framing::Chunked, Version::Http10) => Framing::CloseDelimited,
        (framing, _) => framing,
    }
}

pub(crate) fn request_framing(head: &RequestHead, limits: &Limits) -> Result<Framing, Http1Error> {
    if head.is_upgrade() {
        return Err(Http1Error::UpgradeNotSupported);
    }
    let headers = head.headers();
    if let Some(coding) = transfer_encoding(headers, head.version())? {
        return match coding {
            Coding::ChunkedOnly => Ok(Framing::Chunked),
            Coding::ChunkedAfterOthers => Err(Http1Error::UnsupportedTransferCoding),
            Coding::NotChunkedFinal => Err(Http1Error::ChunkedNotFinal),
        };
    }
    match content_length(headers)? {
        Some(len) if limits.max_body_bytes.is_some_and(|max| len > max) => {
            Err(Http1Error::BodyTooLarge)
        }
        Some(len) => Ok(Framing::ContentLength(len)),
        None => Ok(Framing::None),
    }
}

pub(crate) fn response_framing(
    head: &ResponseHead,
    head_request: bool,
) -> Result<Framing, Http1Error> {
    let status = head.status();
    if status == 101 {
        return Err(Http1Error::UnexpectedSwitchingProtocols);
    }
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    let headers = head.headers();
    if let Some(coding) = transfer_encoding(headers, head.version())? {
        return match coding {
            Coding::ChunkedOnly => Ok(Framing::Chunked),
            Coding::ChunkedAfterOthers | Coding::NotChunkedFinal => {
                Err(Http1Error::UnsupportedTransferCoding)
            }
        };
    }
    Ok(content_length(headers)?.map_or(Framing::CloseDelimited, Framing::ContentLength))
}

/// The message's transfer coding, or `None` without Transfer-Encoding. A message with both
/// Transfer-Encoding and Content-Length (a smuggling vector) and HTTP/1.0 with
/// Transfer-Encoding are rejected, for requests and responses alike.
fn transfer_encoding(headers: &Headers, version: Version) -> Result<Option<Coding>, Http1Error> {
    if !headers.contains("transfer-encoding") {
        return Ok(None);
    }
    if headers.contains("content-length") {
        return Err(Http1Error::ContentLengthWithTransferEncoding);
    }
    if version == Version::Http10 {
        return Err(Http1Error::TransferEncodingInHttp10);
    }
    transfer_coding(headers).map(Some)
}

/// The message's Content-Length, if it has one.
///
/// Every field and every comma-separated member must be 1*DIGIT (surrounding whitespace
/// aside) and fit in a `u64`; members with the same value collapse into one (RFC 9110 §8.6
/// allows it, and the serializer re-emits a single field), differing ones are rejected.
pub(crate) fn content_length(headers: &Headers) -> Result<Option<u64>, Http1Error> {
    let mut found = None;
    for value in headers.get_all("content-length") {
        for member in value.split(|&b| b == b',') {
            let len = parse_decimal(trim_ows(member)).ok_or(Http1Error::InvalidContentLength)?;
            match found {
                Some(prev) if prev != len => return Err(Http1Error::ConflictingContentLength),
                _ => found = Some(len),
            }
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// What the Transfer-Encoding fields ask for.
enum Coding {
    /// Exactly `chunked`.
    ChunkedOnly,
    /// `chunked` last, after other codings.
    ChunkedAfterOthers,
    /// Some coding other than `chunked` last.
    NotChunkedFinal,
}

/// Reads the codings of every Transfer-Encoding field, in order. Empty lists, non-token
/// coding names, `chunked` with parameters and `chunked` applied twice are invalid.
fn transfer_coding(headers: &Headers) -> Result<Coding, Http1Error> {
    let (mut chunked, mut others, mut last_chunked) = (false, false, false);
    for coding in headers.get_all("transfer-encoding").flat_map(list_elements) {
        let (name, has_params) = match coding.iter().position(|&b| b == b';') {
            Some(at) => (trim_ows(&coding[..at]), true),
            None => (coding, false),
        };
        if !is_token(name) {
            return Err(Http1Error::InvalidTransferEncoding);
        }
        last_chunked = name.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            if chunked || has_params {
                return Err(Http1Error::InvalidTransferEncoding);
            }
            chunked = true;
        } else {
            others = true;
        }
    }
    Ok(match (chunked, others, last_chunked) {
        (false, false, _) => return Err(Http1Error::InvalidTransferEncoding),
        (_, _, false) => Coding::NotChunkedFinal,
        (_, false, true) => Coding::ChunkedOnly,
        (_, true, true) => Coding::ChunkedAfterOthers,
    })
}
