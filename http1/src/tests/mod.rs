//! Unit tests of the HTTP/1.1 codec, one file per module.

mod body;
mod chunked;
mod encode;
mod error;
mod forwarded;
mod framing;
mod fuzz;
mod path;
mod request;
mod request_flags;
mod response;
mod serialize;

use bytes::BytesMut;

use super::{Framing, Http1Error, Limits, ParseStatus, RequestHead, ResponseHead};

/// Parses `wire` with `limits`, returning the head, what it consumed and what is left.
fn parse_request_with(
    wire: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize, BytesMut)>, Http1Error> {
    let mut buf = BytesMut::from(wire);
    match RequestHead::parse(&mut buf, limits)? {
        ParseStatus::Partial => {
            assert_eq!(
                &buf[..],
                wire,
                "a partial parse must leave the buffer untouched"
            );
            Ok(None)
        }
        ParseStatus::Complete { head, consumed } => Ok(Some((head, consumed, buf))),
    }
}

/// Parses a request head that must be complete.
fn request(wire: &[u8]) -> Result<RequestHead, Http1Error> {
    let parsed = parse_request_with(wire, &Limits::default())?;
    Ok(parsed.expect("complete request head").0)
}

/// The framing of a complete request head, with default limits.
fn request_framing(wire: &[u8]) -> Result<Framing, Http1Error> {
    request(wire)?.framing(&Limits::default())
}

/// Parses a response head that must be complete.
fn response(wire: &[u8]) -> Result<ResponseHead, Http1Error> {
    let mut buf = BytesMut::from(wire);
    match ResponseHead::parse(&mut buf, &Limits::default())? {
        ParseStatus::Partial => panic!("partial response head"),
        ParseStatus::Complete { head, .. } => Ok(head),
    }
}
