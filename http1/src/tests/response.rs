use bytes::BytesMut;

use super::response;
use crate::{Framing, Http1Error, Limits, ParseStatus, ResponseHead, Version};

fn framing(wire: &str, head_request: bool) -> Result<Framing, Http1Error> {
    response(wire.as_bytes())?.framing(head_request)
}

#[test]
fn parses_status_line_and_fields() {
    let wire = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcHTTP/1.1";
    let mut buf = BytesMut::from(&wire[..]);
    let ParseStatus::Complete { head, consumed } =
        ResponseHead::parse(&mut buf, &Limits::default()).unwrap()
    else {
        panic!("partial")
    };
    assert_eq!(consumed, wire.len() - 11);
    assert_eq!(&buf[..], b"abcHTTP/1.1");
    assert_eq!(
        (head.version(), head.status(), head.reason()),
        (Version::Http11, 404, &b"Not Found"[..])
    );
    assert_eq!(head.headers().get("x-a"), Some(&b"b"[..]));
    assert_eq!(head.raw().len(), consumed);
    assert!(!head.is_informational());
    assert_eq!(head.framing(false), Ok(Framing::ContentLength(3)));
}

#[test]
fn every_prefix_is_partial() {
    let wire = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n";
    for end in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..end]);
        let status = ResponseHead::parse(&mut buf, &Limits::default()).unwrap();
        assert!(matches!(status, ParseStatus::Partial), "{end}");
        assert_eq!(buf.len(), end);
    }
    let head = response(wire).unwrap();
    assert_eq!(head.version(), Version::Http10);
    assert!(!head.keep_alive());
}

#[test]
fn missing_reason_is_empty() {
    let head = response(b"HTTP/1.1 200\r\n\r\n").unwrap();
    assert_eq!((head.status(), head.reason()), (200, &b""[..]));
    assert!(head.keep_alive());
}

#[test]
fn no_body_statuses_and_head_responses() {
    let with_body_fields = "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n";
    for status in [
        "100 Continue",
        "103 Early Hints",
        "204 No Content",
        "304 Not Modified",
    ] {
        let wire = format!("HTTP/1.1 {status}\r\n{with_body_fields}");
        assert_eq!(framing(&wire, false), Ok(Framing::None), "{status}");
    }
    assert!(
        response(b"HTTP/1.1 100 Continue\r\n\r\n")
            .unwrap()
            .is_informational()
    );
    let wire = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(framing(wire, true), Ok(Framing::None));
    assert_eq!(framing(wire, false), Ok(Framing::ContentLength(10)));
}

#[test]
fn switching_protocols_is_an_error() {
    let wire = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(
        framing(wire, false),
        Err(Http1Error::UnexpectedSwitchingProtocols)
    );
    assert_eq!(Http1Error::UnexpectedSwitchingProtocols.status(), 502);
}

#[test]
fn body_framing_rules() {
    use Http1Error::*;
    let cases: &[(&str, Result<Framing, Http1Error>)] = &[
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Ok(Framing::Chunked),
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", Ok(Framing::CloseDelimited)),
        ("HTTP/1.0 200 OK\r\n\r\n", Ok(Framing::CloseDelimited)),
        (
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            Ok(Framing::ContentLength(0)),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
            Ok(Framing::ContentLength(2)),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(ContentLengthWithTransferEncoding),
        ),
        (
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err(TransferEncodingInHttp10),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Err(UnsupportedTransferCoding),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Err(UnsupportedTransferCoding),
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            Err(InvalidTransferEncoding),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Err(ConflictingContentLength),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            Err(InvalidContentLength),
        ),
    ];
    for (wire, expected) in cases {
        assert_eq!(&framing(wire, false), expected, "{wire:?}");
    }
}

#[test]
fn malformed_responses_are_rejected() {
    for wire in [
        &b"HTTP/1.1 099 Low\r\n\r\n"[..],
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ] {
        assert!(
            matches!(response(wire), Err(Http1Error::MalformedHead(_))),
            "{wire:?}"
        );
    }
    for wire in [
        &b"HTTP/1.1 200 OK\nA: b\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nA: b\r\n\n",
    ] {
        assert_eq!(response(wire).unwrap_err(), Http1Error::BareLf);
    }
    for wire in [
        &b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
    ] {
        assert!(
            matches!(response(wire), Err(Http1Error::MalformedHead(_))),
            "{wire:?}"
        );
    }
    assert_eq!(
        response(b"HTTP/3.0 200 OK\r\n\r\n").unwrap_err(),
        Http1Error::UnsupportedVersion
    );
}

#[test]
fn response_limits() {
    let limits = Limits {
        max_head_bytes: 32,
        max_headers: 1,
        ..Limits::default()
    };
    let mut big = BytesMut::from(&b"HTTP/1.1 200 OK\r\nServer: a-long-server-name\r\n\r\n"[..]);
    assert_eq!(
        ResponseHead::parse(&mut big, &limits).unwrap_err(),
        Http1Error::HeadTooLarge
    );
    let mut many = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"[..]);
    assert_eq!(
        ResponseHead::parse(&mut many, &limits).unwrap_err(),
        Http1Error::TooManyHeaders
    );
}

#[test]
fn response_keep_alive() {
    assert!(response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().keep_alive());
    assert!(
        !response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
    assert!(
        response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
}
