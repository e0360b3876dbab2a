//! The codec's one error type and the minimal error response.

use bytes::{BufMut, BytesMut};

use crate::local::{LocalReply, write_local_response};

/// Everything that can go wrong while parsing or decoding an HTTP/1.x message.
///
/// [`Http1Error::status`] is the status to answer a *client* with when the error came from
/// its request; the connection must be closed afterwards, since the message boundary can no
/// longer be trusted. An error in an *upstream response* is answered with 502 Bad Gateway by
/// the shell, whatever the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Http1Error {
    /// The start line or a header field is malformed (httparse's verdict). 400.
    #[error("malformed message head: {0}")]
    MalformedHead(httparse::Error),
    /// The version is neither HTTP/1.0 nor HTTP/1.1. 505.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// A line in the head or in chunked framing ends with LF alone instead of CRLF. RFC 9112
    /// §2.2 lets a recipient accept it; this codec does not, since a downstream parser that
    /// disagrees would see a different message boundary. 400.
    #[error("bare LF line terminator")]
    BareLf,
    /// The head is larger than [`Limits::max_head_bytes`](super::Limits). 431.
    #[error("message head too large")]
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`](super::Limits). 431.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The request line is longer than
    /// [`Limits::max_request_line_bytes`](super::Limits). 414.
    #[error("request target too long")]
    UriTooLong,
    /// An HTTP/1.1 request without a Host field (RFC 9112 §3.2). 400.
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host field (RFC 9112 §3.2): two parsers could route differently. 400.
    #[error("multiple Host headers")]
    DuplicateHost,
    /// A Host value that is not `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2). 400.
    #[error("invalid Host header")]
    InvalidHost,
    /// Both Content-Length and Transfer-Encoding are present (RFC 9112 §6.1). 400.
    #[error("conflicting Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// Content-Length fields or list members with differing values (RFC 9110 §8.6). 400.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A Content-Length that is not 1*DIGIT or does not fit in a `u64`. 400.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Transfer-Encoding in an HTTP/1.0 message, whose framing is then faulty (RFC 9112
    /// §6.1). 400.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// Transfer-Encoding is empty, malformed, or applies `chunked` twice or with parameters.
    /// 400.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A request whose final transfer coding is not `chunked`, so its length is unknowable
    /// (RFC 9112 §6.3 rule 4). 400.
    #[error("chunked is not the final transfer coding")]
    ChunkedNotFinal,
    /// A transfer coding other than `chunked` (unknown, or known like `gzip` but not
    /// implemented), with `chunked` final. RFC 9112 §6.1 asks for 501.
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The body is larger than [`Limits::max_body_bytes`](super::Limits). 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// A chunk size that is empty or not hexadecimal. 400.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size that does not fit in a `u64`. 400.
    #[error("chunk size too large")]
    ChunkSizeOverflow,
    /// A chunk-size line (size plus extensions) longer than
    /// [`Limits::max_chunk_line_bytes`](super::Limits). 400.
    #[error("chunk extension too long")]
    ChunkLineTooLong,
    /// Chunked framing is broken: a missing CRLF after a size line or chunk data, or a
    /// control character in a chunk extension. The text says which. 400.
    #[error("invalid chunked framing: {0}")]
    InvalidChunkedFraming(&'static str),
    /// The trailer section is larger than [`Limits::max_trailer_bytes`](super::Limits). 431.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A trailer line that is not `name: value` (or uses obs-fold). 400.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The peer closed the connection before the body announced by its framing was
    /// complete. 400.
    #[error("connection closed before the body was complete")]
    IncompleteBody,
    /// A protocol upgrade (`Connection: upgrade` with `Upgrade`) or a CONNECT request. The
    /// proxy does not tunnel yet; 501 says so without pretending the request was malformed.
    #[error("protocol upgrade not supported")]
    UpgradeNotSupported,
    /// A 101 Switching Protocols response, which can only answer an upgrade request and the
    /// proxy never forwards one. 502.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitchingProtocols,
}

impl Http1Error {
    /// The status code to answer the client with.
    pub fn status(&self) -> u16 {
        use Http1Error::*;
        match self {
            UnsupportedVersion => 505,
            HeadTooLarge | TooManyHeaders | TrailersTooLarge => 431,
            UriTooLong => 414,
            BodyTooLarge => 413,
            UnsupportedTransferCoding | UpgradeNotSupported => 501,
            UnexpectedSwitchingProtocols => 502,
            MalformedHead(_)
            | BareLf
            | MissingHost
            | DuplicateHost
            | InvalidHost
            | ContentLengthWithTransferEncoding
            | ConflictingContentLength
            | InvalidContentLength
            | TransferEncodingInHttp10
            | InvalidTransferEncoding
            | ChunkedNotFinal
            | InvalidChunkSize
            | ChunkSizeOverflow
            | ChunkLineTooLong
            | InvalidChunkedFraming(_)
            | InvalidTrailer
            | IncompleteBody => 400,
        }
    }

    /// A short, fixed human-readable reason, used as the error response's body. It never
    /// echoes request bytes.
    pub fn reason(&self) -> &'static str {
        use Http1Error::*;
        match self {
            MalformedHead(_) => "malformed message head",
            InvalidChunkedFraming(_) => "invalid chunked framing",
            UnsupportedVersion => "unsupported HTTP version",
            BareLf => "bare LF line terminator",
            HeadTooLarge => "message head too large",
            TooManyHeaders => "too many header fields",
            UriTooLong => "request target too long",
            MissingHost => "missing Host header",
            DuplicateHost => "multiple Host headers",
            InvalidHost => "invalid Host header",
            ContentLengthWithTransferEncoding => "conflicting Content-Length and Transfer-Encoding",
            ConflictingContentLength => "conflicting Content-Length values",
            InvalidContentLength => "invalid Content-Length",
            TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 message",
            InvalidTransferEncoding => "invalid Transfer-Encoding",
            ChunkedNotFinal => "chunked is not the final transfer coding",
            UnsupportedTransferCoding => "unsupported transfer coding",
            BodyTooLarge => "request body too large",
            InvalidChunkSize => "invalid chunk size",
            ChunkSizeOverflow => "chunk size too large",
            ChunkLineTooLong => "chunk extension too long",
            TrailersTooLarge => "trailer section too large",
            InvalidTrailer => "invalid trailer field",
            IncompleteBody => "connection closed before the body was complete",
            UpgradeNotSupported => "protocol upgrade not supported",
            UnexpectedSwitchingProtocols => "unexpected 101 Switching Protocols",
        }
    }

    /// Appends the minimal `connection: close` response for this error to `out`.
    pub fn write_response(&self, out: &mut BytesMut) {
        write_error_response(self.status(), self.reason(), out);
    }
}

/// Appends a minimal plain-text response with `status`, the body `reason` plus a newline and
/// `connection: close`, e.g. `HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n
/// content-length: 12\r\nconnection: close\r\n\r\nbad request\n`.
pub fn write_error_response(status: u16, reason: &str, out: &mut BytesMut) {
    write_local_response(status, reason, LocalReply::CLOSE, out);
}

/// Appends `n` in decimal without going through `fmt`.
pub(crate) fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}
