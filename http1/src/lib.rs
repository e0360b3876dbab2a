//! The sans-IO HTTP/1.1 codec of the data plane.
//!
//! Nothing here touches a socket, a clock or an executor: the proxy shell reads bytes into a
//! [`bytes::BytesMut`], hands them to this module and gets back parsed heads, a body-framing
//! decision, decoded body pieces and serialized heads to write. Bodies are streamed piece by
//! piece and never buffered whole.
//!
//! The flow for one request:
//!
//! 1. [`RequestHead::parse`] until it is [`ParseStatus::Complete`]; the head's bytes are split
//!    off the read buffer (no copy) and headers are ranges into them.
//! 2. [`RequestHead::framing`] decides the body framing (RFC 9112 §6) and rejects smuggling
//!    vectors, unsupported upgrades and oversized bodies.
//! 3. [`BodyDecoder::new`] with that framing; [`BodyDecoder::decode`] (or
//!    [`BodyDecoder::next_chunk`]) yields body bytes as they arrive.
//! 4. [`write_request_head`] serializes the head for upstream with hop-by-hop fields removed
//!    and the proxy's own fields added ([`x_forwarded_for`], [`forwarded()`], [`via`]); the body
//!    goes out as is or re-chunked with [`encode_chunk`] and [`LAST_CHUNK`].
//!
//! The response side mirrors it with [`ResponseHead`] and [`write_response_head`]. Every
//! failure is an [`Http1Error`] that knows its status code and renders a minimal response.
//!
//! Strictness: this codec sits in front of servers whose parsers it does not know, so
//! wherever two parsers could disagree about where a message ends it rejects rather than
//! guesses: bare LF line endings, Content-Length together with Transfer-Encoding, differing
//! Content-Length values, transfer codings other than `chunked`, obs-fold. Each rule is
//! documented where it is enforced.

mod body;
mod chunked;
mod error;
mod forwarded;
mod framing;
#[doc(hidden)]
pub mod fuzz;
mod headers;
mod local;
mod path;
mod request;
mod response;
mod serialize;
#[cfg(test)]
mod tests;

pub use body::{BodyDecoder, Decoded, LengthDecoder};
pub use chunked::ChunkedDecoder;
pub use error::{Http1Error, write_error_response};
pub use forwarded::{
    PROXY_PSEUDONYM, forwarded, forwarded_into, via, via_into, x_forwarded_for,
    x_forwarded_for_into,
};
pub use framing::{Framing, downstream_framing, keep_alive};
pub use headers::Headers;
pub use local::{LocalReply, forbids_body, write_local_response, write_own_response};
pub use path::{
    ambiguous_path, normalize_path, replace_prefix, valid_origin_form, valid_path_rewrite,
};
pub use request::{RequestHead, split_port, valid_host, valid_host_without_port};
pub use response::ResponseHead;
pub use serialize::{
    LAST_CHUNK, encode_chunk, encode_chunk_header, uneditable_field, upstream_target,
    valid_field_value, write_request_head, write_response_head,
};

/// The HTTP version of a message; HTTP/1.0 and HTTP/1.1 are the only ones this codec parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

impl Version {
    /// The version as written on the wire, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The result of feeding a buffer to a head parser.
#[derive(Debug)]
pub enum ParseStatus<T> {
    /// The head is not complete yet: read more bytes into the same buffer and call again.
    /// The buffer is left untouched.
    Partial,
    /// The head is complete. Its `consumed` bytes were split off the front of the buffer
    /// (without copying) and now belong to `head`; the buffer starts with the body or the
    /// next message.
    Complete {
        /// The parsed head.
        head: T,
        /// How many bytes of the buffer the head took, including the blank line.
        consumed: usize,
    },
}

/// Size and count limits applied while parsing. The defaults suit an edge proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line, fields and the blank line) in bytes; a larger one is
    /// [`Http1Error::HeadTooLarge`] (431). Default 64 KiB. Capped at `u32::MAX`.
    pub max_head_bytes: usize,
    /// Most header fields in a head; more is [`Http1Error::TooManyHeaders`] (431).
    /// Default 100.
    pub max_headers: usize,
    /// Longest request line (method, target, version and its CRLF) in bytes; a longer one is
    /// [`Http1Error::UriTooLong`] (414), since the target is the only part of the line that
    /// legitimately grows. Default 8 KiB.
    pub max_request_line_bytes: usize,
    /// Largest request body in bytes, `None` for no limit. A larger Content-Length is
    /// rejected before any body byte is read; a chunked body fails once its chunk sizes add
    /// up past it. Either way [`Http1Error::BodyTooLarge`] (413). Default `None`: bodies
    /// are streamed, so size is a policy decision rather than a memory one.
    pub max_body_bytes: Option<u64>,
    /// Longest chunk-size line (hex size plus extensions, without CRLF); longer is
    /// [`Http1Error::ChunkLineTooLong`] (400). Default 4 KiB.
    pub max_chunk_line_bytes: usize,
    /// Largest trailer section of a chunked body, in bytes including CRLFs; larger is
    /// [`Http1Error::TrailersTooLarge`] (431). Default 8 KiB.
    pub max_trailer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_request_line_bytes: 8 * 1024,
            max_body_bytes: None,
            max_chunk_line_bytes: 4 * 1024,
            max_trailer_bytes: 8 * 1024,
        }
    }
}
