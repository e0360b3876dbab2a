//! The bodies of the codec's fuzz targets (`dataplane/fuzz`), kept in the crate so its unit
//! tests run them too and each target stays a one-liner. Not a stable API.

use std::net::{Ipv6Addr, SocketAddr};

use bytes::BytesMut;

use super::{
    BodyDecoder, Framing, Http1Error, LAST_CHUNK, Limits, ParseStatus, RequestHead, ResponseHead,
    encode_chunk, forwarded, upstream_target, via, write_request_head, x_forwarded_for,
};

/// Small limits, so that fuzz inputs reach every limit.
fn fuzz_limits() -> Limits {
    Limits {
        max_head_bytes: 2048,
        max_headers: 16,
        max_request_line_bytes: 512,
        max_body_bytes: Some(4096),
        max_chunk_line_bytes: 32,
        max_trailer_bytes: 128,
    }
}

/// Feeds `data` (a selector byte, then the bytes on the wire) to the request parser and body
/// decoder, read at once and in two pieces split where the selector says, and panics on any
/// broken invariant: both reads agree, `consumed` stays within the input, decoded data
/// respects the framing and limits, a re-chunked body decodes to the same bytes, and the
/// serialized head parses back to the same request with the framing it was given.
pub fn request_roundtrip(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let limits = fuzz_limits();
    let mut whole = BytesMut::from(input);
    let verdict = RequestHead::parse(&mut whole, &limits);
    let split = usize::from(selector) % (input.len() + 1);
    let mut prefix = BytesMut::from(&input[..split]);
    match (RequestHead::parse(&mut prefix, &limits), &verdict) {
        (Ok(ParseStatus::Partial), _) => assert_eq!(prefix.len(), split),
        (
            Ok(ParseStatus::Complete { head, consumed }),
            Ok(ParseStatus::Complete { head: w, .. }),
        ) => {
            assert_eq!(
                head.raw(),
                w.raw(),
                "a prefix and the whole parse differently"
            );
            assert_eq!(prefix.len(), split - consumed);
        }
        (Err(_), Err(_)) => {}
        (prefix, whole) => panic!("prefix parsed as {prefix:?}, whole as {whole:?}"),
    }
    let head = match verdict {
        Ok(ParseStatus::Complete { head, consumed }) => {
            assert!(consumed <= input.len() && consumed == head.raw().len());
            assert_eq!(whole.len(), input.len() - consumed);
            assert_eq!(head.raw().as_ref(), &input[..consumed]);
            head
        }
        Ok(ParseStatus::Partial) => {
            assert_eq!(whole.len(), input.len(), "a partial parse consumed bytes");
            return;
        }
        Err(e) => return check_error_response(e),
    };
    let framing = match head.framing(&limits) {
        Ok(framing) => framing,
        Err(e) => return check_error_response(e),
    };
    let body = &whole[..];
    let body_split = usize::from(selector.rotate_left(4)) % (body.len() + 1);
    let at_once = decode(framing, &limits, &[body]);
    let in_two = decode(
        framing,
        &limits,
        &[&body[..body_split], &body[body_split..]],
    );
    assert_eq!(at_once.data, in_two.data);
    assert_eq!(at_once.result, in_two.result);
    if at_once.result.is_ok() {
        assert_eq!(at_once.consumed, in_two.consumed);
    }
    check_body(framing, &limits, &at_once, body_split);
    check_serialized(&head, framing, selector);
}

#[derive(Debug)]
struct Outcome {
    data: Vec<u8>,
    consumed: usize,
    done: bool,
    result: Result<(), Http1Error>,
}

/// Decodes `pieces` in order, as successive reads.
fn decode(framing: Framing, limits: &Limits, pieces: &[&[u8]]) -> Outcome {
    let mut decoder = BodyDecoder::new(framing, limits);
    let mut out = Outcome {
        data: Vec::new(),
        consumed: 0,
        done: false,
        result: Ok(()),
    };
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() && !decoder.is_done() {
            let decoded = match decoder.decode(rest) {
                Ok(decoded) => decoded,
                Err(e) => {
                    out.result = Err(e);
                    return out;
                }
            };
            assert!(decoded.consumed <= rest.len(), "consumed past the input");
            assert!(decoded.data.start <= decoded.data.end && decoded.data.end <= decoded.consumed);
            assert!(decoded.consumed > 0, "no progress on non-empty input");
            out.data.extend_from_slice(&rest[decoded.data]);
            out.consumed += decoded.consumed;
            rest = &rest[decoded.consumed..];
        }
    }
    out.done = decoder.is_done();
    out
}

fn check_body(framing: Framing, limits: &Limits, outcome: &Outcome, split: usize) {
    match framing {
        Framing::None => assert!(outcome.data.is_empty() && outcome.consumed == 0),
        Framing::ContentLength(len) => {
            assert!(limits.max_body_bytes.is_none_or(|max| len <= max));
            assert!(outcome.data.len() as u64 <= len);
            assert_eq!(outcome.done, outcome.data.len() as u64 == len);
            assert_eq!(outcome.consumed, outcome.data.len());
        }
        Framing::Chunked => {
            let max = limits.max_body_bytes.unwrap_or(u64::MAX);
            assert!(outcome.data.len() as u64 <= max);
            if outcome.done {
                // Re-chunk the body in two chunks: it must decode to the same bytes.
                let mut wire = BytesMut::new();
                let split = split.min(outcome.data.len());
                encode_chunk(&outcome.data[..split], &mut wire);
                encode_chunk(&outcome.data[split..], &mut wire);
                wire.extend_from_slice(LAST_CHUNK);
                let again = decode(Framing::Chunked, limits, &[&wire]);
                assert!(again.done && again.result.is_ok());
                assert_eq!(
                    (again.data.as_slice(), again.consumed),
                    (&outcome.data[..], wire.len())
                );
            }
        }
        Framing::CloseDelimited => panic!("a request got a close-delimited body"),
    }
}

/// Serializes `head` for upstream and parses it back.
fn check_serialized(head: &RequestHead, framing: Framing, selector: u8) {
    let peer = if selector & 1 == 0 {
        SocketAddr::from(([192, 0, 2, selector], 40000))
    } else {
        SocketAddr::from((
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, selector.into()),
            40000,
        ))
    };
    let headers = head.headers();
    let xff = x_forwarded_for(headers.get_all("x-forwarded-for"), peer);
    let fwd = forwarded(headers.get_all("forwarded"), peer, "http", head.host());
    let via = via(headers.get_all("via"), head.version());
    let mut extra: Vec<(&str, &[u8])> = vec![
        ("x-forwarded-for", &xff),
        ("forwarded", &fwd),
        ("via", &via),
    ];
    // As the proxy does: an absolute-form target's authority becomes the Host field.
    if let Some(authority) = head.authority() {
        extra.push(("host", authority.as_bytes()));
    } else if head.host().is_none() {
        extra.push(("host", b"fuzz.invalid"));
    }
    let mut out = BytesMut::new();
    write_request_head(head, None, framing, &extra, &[], &mut out);
    let written = out.len();
    let roomy = Limits {
        max_head_bytes: 1 << 20,
        max_headers: 1024,
        max_request_line_bytes: 1 << 20,
        ..Limits::default()
    };
    let again = match RequestHead::parse(&mut out, &roomy) {
        Ok(ParseStatus::Complete { head, consumed }) if consumed == written => head,
        other => panic!("serialized head {out:?} parsed as {other:?}"),
    };
    let (lead, rest) = upstream_target(head, None);
    assert_eq!(
        (again.method(), again.target()),
        (head.method(), format!("{lead}{rest}").as_str())
    );
    assert_eq!(again.authority(), None, "sent in origin-form");
    assert_eq!(again.framing(&roomy), Ok(framing));
    for hop in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!again.headers().contains(hop), "{hop} was forwarded");
    }
    assert_eq!(again.headers().get("via"), Some(&via[..]));
}

/// The error response for `e` parses as a response with `e`'s status.
fn check_error_response(e: Http1Error) {
    let mut out = BytesMut::new();
    e.write_response(&mut out);
    match ResponseHead::parse(&mut out, &Limits::default()) {
        Ok(ParseStatus::Complete { head, .. }) => {
            assert_eq!(head.status(), e.status());
            assert_eq!(
                head.framing(false),
                Ok(Framing::ContentLength(out.len() as u64))
            );
        }
        other => panic!("error response for {e} parsed as {other:?}"),
    }
}
