use super::{parse_request_with, request};
use crate::{Http1Error, Limits, Version};

const GET: &[u8] = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
    X-Two: 1\r\nx-two: 2\r\n\r\n";

#[test]
fn parses_request_line_and_fields() {
    let mut wire = GET.to_vec();
    wire.extend_from_slice(b"body");
    let (head, consumed, rest) = parse_request_with(&wire, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(consumed, GET.len());
    assert_eq!(&rest[..], b"body");
    assert_eq!(head.raw().as_ref(), GET);
    assert_eq!(head.method(), "GET");
    assert_eq!(head.target(), "/a/b?x=1&y=2");
    assert_eq!(head.path(), "/a/b");
    assert_eq!(head.query(), Some("x=1&y=2"));
    assert_eq!(head.version(), Version::Http11);
    assert_eq!(head.host(), Some(&b"example.com"[..]));
    let fields: Vec<_> = head.headers().iter().collect();
    assert_eq!(
        fields,
        [
            ("Host", &b"example.com"[..]),
            ("Accept", b"*/*"),
            ("X-Two", b"1"),
            ("x-two", b"2")
        ]
    );
    assert_eq!(head.headers().len(), 4);
    assert_eq!(head.headers().get("ACCEPT"), Some(&b"*/*"[..]));
    assert_eq!(
        head.headers().get_all("X-TWO").collect::<Vec<_>>(),
        [b"1", b"2"]
    );
    assert_eq!(head.headers().count("x-two"), 2);
    assert!(!head.headers().contains("cookie"));
    assert!(!head.is_head());
}

#[test]
fn shared_values_are_slices_of_the_head() {
    let head = request(GET).unwrap();
    let host = head.headers().get_shared("host").unwrap();
    assert_eq!(&host[..], b"example.com");
    let offset = host.as_ptr() as usize - head.raw().as_ptr() as usize;
    assert_eq!(&GET[offset..offset + host.len()], b"example.com");
    assert!(head.headers().get_shared("nope").is_none());
}

#[test]
fn every_prefix_is_partial_and_leaves_the_buffer() {
    for end in 0..GET.len() {
        assert!(
            parse_request_with(&GET[..end], &Limits::default())
                .unwrap()
                .is_none(),
            "{end}"
        );
    }
}

#[test]
fn leading_empty_lines_are_skipped_and_no_query_is_none() {
    let head = request(b"\r\n\r\nHEAD /x HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        (head.method(), head.path(), head.query()),
        ("HEAD", "/x", None)
    );
    assert_eq!(head.version(), Version::Http10);
    assert!(head.is_head());
    assert!(head.headers().is_empty());
}

#[test]
fn host_rules() {
    assert_eq!(
        request(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
        Http1Error::MissingHost
    );
    assert!(request(b"GET / HTTP/1.0\r\n\r\n").is_ok());
    assert!(
        request(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").is_ok(),
        "empty Host is allowed"
    );
    for version in ["1.0", "1.1"] {
        let wire = format!("GET / HTTP/{version}\r\nHost: a\r\nhost: b\r\n\r\n");
        assert_eq!(
            request(wire.as_bytes()).unwrap_err(),
            Http1Error::DuplicateHost
        );
    }
    assert_eq!(Http1Error::MissingHost.status(), 400);
}

#[test]
fn host_values_are_checked() {
    for good in [
        "example.com",
        "example.com:8080",
        "EXAMPLE.com:",
        "192.0.2.1",
        "192.0.2.1:80",
        "[2001:db8::1]",
        "[2001:db8::1]:443",
        "a-b_c~d.e",
        "xn--bcher-kva.example",
        "caf%C3%A9.example",
        "sub!$&'()*+,;=delims",
    ] {
        let wire = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert!(request(wire.as_bytes()).is_ok(), "{good:?} refused");
    }
    for bad in [
        "exa mple.com",
        "example.com:80a",
        "example.com/path",
        "user@example.com",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[]",
        "caf%C3%A.example",
        "a%zz",
        "example.com:8080:1",
        "ex\"ample",
        "a<b>",
    ] {
        let wire = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(
            request(wire.as_bytes()).unwrap_err(),
            Http1Error::InvalidHost,
            "{bad:?} accepted"
        );
    }
    assert_eq!(Http1Error::InvalidHost.status(), 400);
}

#[test]
fn head_size_limit() {
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(40));
    assert_eq!(
        parse_request_with(big.as_bytes(), &limits).unwrap_err(),
        Http1Error::HeadTooLarge
    );
    // Unfinished but already over the limit.
    assert_eq!(
        parse_request_with(&big.as_bytes()[..64], &limits).unwrap_err(),
        Http1Error::HeadTooLarge
    );
    assert!(
        parse_request_with(&big.as_bytes()[..63], &limits)
            .unwrap()
            .is_none()
    );
    let fits = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(32));
    assert_eq!(fits.len(), 64);
    assert!(
        parse_request_with(fits.as_bytes(), &limits)
            .unwrap()
            .is_some()
    );
    assert_eq!(Http1Error::HeadTooLarge.status(), 431);
}

#[test]
fn header_count_limit() {
    let wire = |n: usize| {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..n {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s + "\r\n"
    };
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    assert!(
        parse_request_with(wire(3).as_bytes(), &limits)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        parse_request_with(wire(4).as_bytes(), &limits).unwrap_err(),
        Http1Error::TooManyHeaders
    );
    assert_eq!(
        request(wire(101).as_bytes()).unwrap_err(),
        Http1Error::TooManyHeaders
    );
    assert_eq!(request(wire(100).as_bytes()).unwrap().headers().len(), 100);
    // Beyond the stack slots.
    let many = Limits {
        max_headers: 300,
        ..Limits::default()
    };
    let (head, ..) = parse_request_with(wire(300).as_bytes(), &many)
        .unwrap()
        .unwrap();
    assert_eq!(head.headers().len(), 300);
    assert_eq!(Http1Error::TooManyHeaders.status(), 431);
}

#[test]
fn request_line_limit_is_414() {
    let limits = Limits {
        max_request_line_bytes: 32,
        ..Limits::default()
    };
    // "GET " + target + " HTTP/1.1\r\n" is 15 bytes plus the target.
    let line = |target_len: usize| {
        format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(target_len - 1)
        )
    };
    assert!(
        parse_request_with(line(17).as_bytes(), &limits)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        parse_request_with(line(18).as_bytes(), &limits).unwrap_err(),
        Http1Error::UriTooLong
    );
    // Known before the line ends.
    let partial = format!("GET /{}", "a".repeat(40));
    assert_eq!(
        parse_request_with(partial.as_bytes(), &limits).unwrap_err(),
        Http1Error::UriTooLong
    );
    assert_eq!(Http1Error::UriTooLong.status(), 414);
}

#[test]
fn bare_lf_and_malformed_heads_are_rejected() {
    for wire in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(request(wire).unwrap_err(), Http1Error::BareLf, "{wire:?}");
    }
    for wire in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
    ] {
        let err = request(wire).unwrap_err();
        assert!(
            matches!(err, Http1Error::MalformedHead(_)),
            "{wire:?}: {err:?}"
        );
        assert_eq!(err.status(), 400);
    }
    let err = request(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err();
    assert_eq!((err, err.status()), (Http1Error::UnsupportedVersion, 505));
}

/// An absolute-form target (RFC 9112 §3.2.2): routed by its path, its authority is the
/// host (the Host field is ignored, but must still be valid), and an http(s) URI without
/// a host is refused.
#[test]
fn absolute_form_targets_give_their_path_and_authority() {
    let head =
        request(b"GET HTTP://A.example:8080/x/y?q=1 HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
    assert_eq!(head.authority(), Some("A.example:8080"));
    assert_eq!(head.origin_target(), "/x/y?q=1");
    assert_eq!(head.path(), "/x/y");
    assert_eq!(head.query(), Some("q=1"));
    assert_eq!(head.host(), Some(&b"A.example:8080"[..]));
    let bare = request(b"GET https://a.example?q HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
    assert_eq!((bare.path(), bare.query()), ("/", Some("q")));
    // Origin-form and other schemes are not absolute-form.
    let origin = request(b"GET /http://x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!((origin.authority(), origin.path()), (None, "/http://x"));
    for bad in [
        &b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://:80/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: :80\r\n\r\n",
        b"GET http://h/x HTTP/1.1\r\nHost: bad host\r\n\r\n",
    ] {
        assert_eq!(
            request(bad).unwrap_err(),
            Http1Error::InvalidHost,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn an_authority_splits_into_host_and_port() {
    use crate::split_port;
    assert_eq!(
        split_port("example.com:8080"),
        ("example.com", Some("8080"))
    );
    assert_eq!(split_port("example.com"), ("example.com", None));
    assert_eq!(split_port("10.0.0.1:80"), ("10.0.0.1", Some("80")));
    assert_eq!(split_port("[::1]:443"), ("[::1]", Some("443")));
    assert_eq!(split_port("[::1]"), ("[::1]", None));
    // No digits after the colon: no port named, and the colon is not the host's.
    assert_eq!(split_port("example.com:"), ("example.com", None));
    assert_eq!(split_port("[::1]:"), ("[::1]", None));
    use crate::valid_host_without_port as bare;
    assert!(bare("a.example") && bare("[::1]") && bare("10.0.0.1"));
    assert!(!bare("a.example:80") && !bare("a.example:") && !bare("") && !bare("a b"));
}
