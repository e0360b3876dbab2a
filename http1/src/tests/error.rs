use bytes::BytesMut;

use crate::{
    Http1Error, LocalReply, Version, write_error_response, write_local_response, write_own_response,
};

const ALL: &[Http1Error] = &[
    Http1Error::MalformedHead(httparse::Error::Token),
    Http1Error::UnsupportedVersion,
    Http1Error::BareLf,
    Http1Error::HeadTooLarge,
    Http1Error::TooManyHeaders,
    Http1Error::UriTooLong,
    Http1Error::MissingHost,
    Http1Error::DuplicateHost,
    Http1Error::InvalidHost,
    Http1Error::ContentLengthWithTransferEncoding,
    Http1Error::ConflictingContentLength,
    Http1Error::InvalidContentLength,
    Http1Error::TransferEncodingInHttp10,
    Http1Error::InvalidTransferEncoding,
    Http1Error::ChunkedNotFinal,
    Http1Error::UnsupportedTransferCoding,
    Http1Error::BodyTooLarge,
    Http1Error::InvalidChunkSize,
    Http1Error::ChunkSizeOverflow,
    Http1Error::ChunkLineTooLong,
    Http1Error::InvalidChunkedFraming("missing CRLF after chunk data"),
    Http1Error::TrailersTooLarge,
    Http1Error::InvalidTrailer,
    Http1Error::IncompleteBody,
    Http1Error::UpgradeNotSupported,
    Http1Error::UnexpectedSwitchingProtocols,
];

#[test]
fn statuses() {
    let statuses: Vec<u16> = ALL.iter().map(Http1Error::status).collect();
    assert_eq!(
        statuses,
        [
            400, 505, 400, 431, 431, 414, 400, 400, 400, 400, 400, 400, 400, 400, 400, 501, 413,
            400, 400, 400, 400, 431, 400, 400, 501, 502
        ]
    );
}

#[test]
fn reasons_are_short_single_lines() {
    for e in ALL {
        let reason = e.reason();
        assert!(!reason.is_empty() && reason.len() < 64, "{e:?}");
        assert!(reason.bytes().all(|b| (b' '..=b'~').contains(&b)), "{e:?}");
    }
    let framing = Http1Error::InvalidChunkedFraming("missing CRLF after chunk data");
    assert_eq!(framing.reason(), "invalid chunked framing");
    assert_eq!(
        framing.to_string(),
        "invalid chunked framing: missing CRLF after chunk data"
    );
    let head = Http1Error::MalformedHead(httparse::Error::HeaderName);
    assert_eq!(
        head.to_string(),
        "malformed message head: invalid header name"
    );
}

#[test]
fn renders_the_minimal_error_response() {
    let mut out = BytesMut::new();
    Http1Error::ContentLengthWithTransferEncoding.write_response(&mut out);
    assert_eq!(
        &out[..],
        &b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 49\r\n\
           connection: close\r\n\r\nconflicting Content-Length and Transfer-Encoding\n"[..]
    );
    let mut out = BytesMut::new();
    Http1Error::TooManyHeaders.write_response(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    let mut out = BytesMut::new();
    write_error_response(502, "upstream failed", &mut out);
    assert!(out.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
    assert!(out.ends_with(b"content-length: 16\r\nconnection: close\r\n\r\nupstream failed\n"));
    let mut out = BytesMut::new();
    write_error_response(418, "", &mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 418 Error\r\n")
            && out.ends_with(b"length: 1\r\nconnection: close\r\n\r\n\n")
    );
}

/// A local response on a connection that stays open says so as a relayed one would, and
/// a HEAD's carries the length of the body it leaves out.
#[test]
fn a_local_response_says_what_becomes_of_the_connection() {
    let render = |version, keep_alive, head_request| {
        let mut out = BytesMut::new();
        let to = LocalReply {
            version,
            keep_alive,
            head_request,
        };
        write_local_response(404, "no route", to, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    let head = "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n";
    assert_eq!(
        render(Version::Http11, true, false),
        format!("{head}\r\nno route\n")
    );
    assert_eq!(
        render(Version::Http10, true, false),
        format!("{head}connection: keep-alive\r\n\r\nno route\n")
    );
    assert_eq!(
        render(Version::Http10, false, false),
        format!("{head}connection: close\r\n\r\nno route\n")
    );
    assert_eq!(render(Version::Http11, true, true), format!("{head}\r\n"));
}

/// A route's own response: its fields as given, the body's length (none on a 204), the
/// body unless the request was a HEAD; a status without a known phrase gets an empty one.
#[test]
fn an_own_response_carries_its_fields_length_and_body() {
    let render = |status, fields: &[(&str, &[u8])], body: &[u8], head_request| {
        let mut out = BytesMut::new();
        let to = LocalReply {
            version: Version::Http11,
            keep_alive: true,
            head_request,
        };
        write_own_response(status, fields, body, to, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    assert_eq!(
        render(308, &[("location", b"https://a.example/x")], b"", false),
        "HTTP/1.1 308 Permanent Redirect\r\nlocation: https://a.example/x\r\n\
         content-length: 0\r\n\r\n"
    );
    let typed: [(&str, &[u8]); 1] = [("content-type", b"text/html")];
    assert_eq!(
        render(200, &typed, b"<p>hi</p>", false),
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 9\r\n\r\n<p>hi</p>"
    );
    assert_eq!(
        render(200, &typed, b"<p>hi</p>", true),
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 9\r\n\r\n"
    );
    assert_eq!(
        render(204, &[], b"", false),
        "HTTP/1.1 204 No Content\r\n\r\n"
    );
    assert_eq!(
        render(299, &[], b"", false),
        "HTTP/1.1 299 \r\ncontent-length: 0\r\n\r\n"
    );
}
