use super::{request, request_framing};
use crate::{Framing, Http1Error, Limits, Version, downstream_framing, keep_alive};

/// A POST with the given extra field lines (each ending in CRLF).
fn post(version: &str, fields: &str) -> Vec<u8> {
    format!("POST /upload HTTP/{version}\r\nHost: a\r\n{fields}\r\n").into_bytes()
}

fn framing11(fields: &str) -> Result<Framing, Http1Error> {
    request_framing(&post("1.1", fields))
}

#[test]
fn no_body_content_length_and_chunked() {
    assert_eq!(framing11(""), Ok(Framing::None));
    assert_eq!(
        framing11("Content-Length: 42\r\n"),
        Ok(Framing::ContentLength(42))
    );
    assert_eq!(
        framing11("Content-Length: 0\r\n"),
        Ok(Framing::ContentLength(0))
    );
    assert_eq!(
        framing11("Content-Length: 007\r\n"),
        Ok(Framing::ContentLength(7))
    );
    assert_eq!(
        framing11("Content-Length: 18446744073709551615\r\n"),
        Ok(Framing::ContentLength(u64::MAX))
    );
    assert_eq!(
        framing11("Transfer-Encoding: chunked\r\n"),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        framing11("transfer-encoding: CHUNKED\r\n"),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        framing11("Transfer-Encoding: , chunked ,\r\n"),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        request_framing(&post("1.0", "Content-Length: 3\r\n")),
        Ok(Framing::ContentLength(3))
    );
}

#[test]
fn identical_content_lengths_collapse() {
    assert_eq!(
        framing11("Content-Length: 5, 5\r\n"),
        Ok(Framing::ContentLength(5))
    );
    assert_eq!(
        framing11("Content-Length: 5\r\ncontent-length: 05\r\n"),
        Ok(Framing::ContentLength(5))
    );
}

#[test]
fn smuggling_vectors_are_rejected() {
    use Http1Error::*;
    let cases: &[(&str, Http1Error)] = &[
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            ContentLengthWithTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            ContentLengthWithTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
            ContentLengthWithTransferEncoding,
        ),
        (
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            ConflictingContentLength,
        ),
        ("Content-Length: 5, 6\r\n", ConflictingContentLength),
        ("Content-Length: abc\r\n", InvalidContentLength),
        ("Content-Length: -1\r\n", InvalidContentLength),
        ("Content-Length: +5\r\n", InvalidContentLength),
        ("Content-Length: 5 5\r\n", InvalidContentLength),
        ("Content-Length: 0x5\r\n", InvalidContentLength),
        ("Content-Length: 5,\r\n", InvalidContentLength),
        ("Content-Length: \r\n", InvalidContentLength),
        ("Content-Length: 1.5\r\n", InvalidContentLength),
        (
            "Content-Length: 18446744073709551616\r\n",
            InvalidContentLength,
        ),
        (
            "Content-Length: 99999999999999999999999\r\n",
            InvalidContentLength,
        ),
        ("Transfer-Encoding: gzip\r\n", ChunkedNotFinal),
        ("Transfer-Encoding: chunked, gzip\r\n", ChunkedNotFinal),
        ("Transfer-Encoding: xchunked\r\n", ChunkedNotFinal),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            ChunkedNotFinal,
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: foo, chunked\r\n",
            UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            UnsupportedTransferCoding,
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            InvalidTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            InvalidTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked;q=1\r\n",
            InvalidTransferEncoding,
        ),
        (
            "Transfer-Encoding: \"chunked\"\r\n",
            InvalidTransferEncoding,
        ),
        ("Transfer-Encoding: chun ked\r\n", InvalidTransferEncoding),
        ("Transfer-Encoding: \r\n", InvalidTransferEncoding),
        ("Transfer-Encoding: ,,\r\n", InvalidTransferEncoding),
    ];
    for (fields, expected) in cases {
        let got = framing11(fields);
        assert_eq!(got, Err(*expected), "{fields:?}");
        let status = expected.status();
        assert!(status == 400 || status == 501, "{fields:?}: {status}");
    }
    assert_eq!(UnsupportedTransferCoding.status(), 501);
}

#[test]
fn transfer_encoding_on_http10_is_rejected() {
    let wire = post("1.0", "Transfer-Encoding: chunked\r\n");
    assert_eq!(
        request_framing(&wire),
        Err(Http1Error::TransferEncodingInHttp10)
    );
    assert_eq!(Http1Error::TransferEncodingInHttp10.status(), 400);
}

#[test]
fn body_size_limit_is_413_up_front() {
    let limits = Limits {
        max_body_bytes: Some(100),
        ..Limits::default()
    };
    let head = request(&post("1.1", "Content-Length: 100\r\n")).unwrap();
    assert_eq!(head.framing(&limits), Ok(Framing::ContentLength(100)));
    let head = request(&post("1.1", "Content-Length: 101\r\n")).unwrap();
    assert_eq!(head.framing(&limits), Err(Http1Error::BodyTooLarge));
    assert_eq!(Http1Error::BodyTooLarge.status(), 413);
    // Chunked bodies are counted by the decoder instead.
    let head = request(&post("1.1", "Transfer-Encoding: chunked\r\n")).unwrap();
    assert_eq!(head.framing(&limits), Ok(Framing::Chunked));
}

#[test]
fn upgrades_are_rejected_with_501() {
    for wire in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\
          Content-Length: 0\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ] {
        assert_eq!(
            request_framing(wire),
            Err(Http1Error::UpgradeNotSupported),
            "{wire:?}"
        );
    }
    assert_eq!(Http1Error::UpgradeNotSupported.status(), 501);
}

#[test]
fn keep_alive_rules() {
    let none: [&[u8]; 0] = [];
    assert!(keep_alive(Version::Http11, none));
    assert!(!keep_alive(Version::Http10, none));
    assert!(!keep_alive(Version::Http11, [&b"close"[..]]));
    assert!(!keep_alive(Version::Http11, [&b"Upgrade, CLOSE"[..]]));
    assert!(
        keep_alive(Version::Http11, [&b"closed"[..]]),
        "tokens match whole"
    );
    assert!(keep_alive(Version::Http10, [&b"keep-alive"[..]]));
    assert!(keep_alive(Version::Http10, [&b"foo"[..], b" Keep-Alive "]));
    assert!(!keep_alive(Version::Http10, [&b"keep-alive"[..], b"close"]));
}

#[test]
fn downstream_framing_for_http10_clients() {
    use Framing::*;
    assert_eq!(downstream_framing(Chunked, Version::Http10), CloseDelimited);
    assert_eq!(downstream_framing(Chunked, Version::Http11), Chunked);
    for framing in [None, ContentLength(3), CloseDelimited] {
        assert_eq!(downstream_framing(framing, Version::Http10), framing);
        assert_eq!(downstream_framing(framing, Version::Http11), framing);
    }
}

#[test]
fn has_body() {
    assert!(!Framing::None.has_body());
    assert!(!Framing::ContentLength(0).has_body());
    assert!(Framing::ContentLength(1).has_body());
    assert!(Framing::Chunked.has_body());
    assert!(Framing::CloseDelimited.has_body());
}
