use bytes::BytesMut;

use super::{request, response};
use crate::{Framing, write_request_head, write_response_head};

fn request_out(wire: &[u8], framing: Framing, extra: &[(&str, &[u8])]) -> String {
    let head = request(wire).unwrap();
    let mut out = BytesMut::new();
    write_request_head(&head, None, framing, extra, &[], &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

fn response_out(wire: &[u8], framing: Framing, extra: &[(&str, &[u8])]) -> String {
    let head = response(wire).unwrap();
    let mut out = BytesMut::new();
    write_response_head(&head, framing, extra, &[], &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn request_with_extra_fields() {
    let wire = b"GET /p?q HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let out = request_out(
        wire,
        Framing::None,
        &[("via", b"1.1 omnirelay"), ("x-request-id", b"r1")],
    );
    assert_eq!(
        out,
        "GET /p?q HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nvia: 1.1 omnirelay\r\n\
         x-request-id: r1\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_fields_are_dropped() {
    let wire = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n\
        Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
        Trailer: Expires\r\nTransfer-Encoding: chunked\r\nProxy-Authorization: Basic eA==\r\n\
        Proxy-Authenticate: Basic\r\nconnection: x-other\r\nX-Secret: 1\r\nX-OTHER: 2\r\n\
        X-Kept: 3\r\n\r\n";
    let out = request_out(wire, Framing::Chunked, &[]);
    assert_eq!(
        out,
        "POST / HTTP/1.1\r\nHost: a\r\nX-Kept: 3\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn upgrade_field_is_dropped_without_an_upgrade_request() {
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n";
    assert_eq!(
        request_out(wire, Framing::None, &[]),
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    );
}

#[test]
fn host_survives_being_named_in_connection() {
    let wire =
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length, x-forwarded-for\r\n\
        X-Forwarded-For: 1.2.3.4\r\nContent-Length: 0\r\n\r\n";
    let out = request_out(
        wire,
        Framing::ContentLength(0),
        &[("x-forwarded-for", b"5.6.7.8")],
    );
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 5.6.7.8\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn framing_fields_come_from_the_chosen_framing() {
    let wire = b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\n";
    let out = request_out(wire, Framing::ContentLength(5), &[]);
    assert_eq!(
        out,
        "PUT / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\n"
    );
    let out = request_out(wire, Framing::Chunked, &[]);
    assert_eq!(
        out,
        "PUT / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let out = request_out(wire, Framing::CloseDelimited, &[]);
    assert_eq!(out, "PUT / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn extra_fields_replace_fields_of_the_same_name() {
    let wire = b"GET / HTTP/1.0\r\nX-Forwarded-For: 1.1.1.1\r\nVia: 1.0 a\r\n\
        x-forwarded-for: 2.2.2.2\r\n\r\n";
    let out = request_out(
        wire,
        Framing::None,
        &[
            ("Host", b"backend"),
            ("X-Forwarded-For", b"1.1.1.1, 2.2.2.2, 3.3.3.3"),
        ],
    );
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nVia: 1.0 a\r\nHost: backend\r\n\
         X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3\r\n\r\n",
        "HTTP/1.0 goes out as HTTP/1.1"
    );
}

#[test]
fn response_status_line_and_framing() {
    let wire =
        b"HTTP/1.0 200 Fine Thanks\r\nConnection: close\r\nContent-Length: 3\r\nServer: s\r\n\r\n";
    assert_eq!(
        response_out(
            wire,
            Framing::ContentLength(3),
            &[("via", b"1.0 omnirelay")]
        ),
        "HTTP/1.1 200 Fine Thanks\r\nServer: s\r\nvia: 1.0 omnirelay\r\ncontent-length: 3\r\n\r\n"
    );
    let wire = b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        response_out(wire, Framing::Chunked, &[]),
        "HTTP/1.1 200 \r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        response_out(wire, Framing::CloseDelimited, &[]),
        "HTTP/1.1 200 \r\nconnection: close\r\n\r\n"
    );
    assert_eq!(
        response_out(wire, Framing::CloseDelimited, &[("Connection", b"close")]),
        "HTTP/1.1 200 \r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn no_body_responses_keep_or_drop_content_length() {
    let with_length =
        |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: 42, 42\r\nETag: e\r\n\r\n");
    let out = response_out(
        with_length("304 Not Modified").as_bytes(),
        Framing::None,
        &[],
    );
    assert_eq!(
        out,
        "HTTP/1.1 304 Not Modified\r\nETag: e\r\ncontent-length: 42\r\n\r\n"
    );
    let out = response_out(with_length("200 OK").as_bytes(), Framing::None, &[]);
    assert_eq!(
        out, "HTTP/1.1 200 OK\r\nETag: e\r\ncontent-length: 42\r\n\r\n",
        "HEAD response"
    );
    let out = response_out(with_length("204 No Content").as_bytes(), Framing::None, &[]);
    assert_eq!(out, "HTTP/1.1 204 No Content\r\nETag: e\r\n\r\n");
    let out = response_out(with_length("100 Continue").as_bytes(), Framing::None, &[]);
    assert_eq!(out, "HTTP/1.1 100 Continue\r\nETag: e\r\n\r\n");
    let bad = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n";
    assert_eq!(
        response_out(bad, Framing::None, &[]),
        "HTTP/1.1 304 Not Modified\r\n\r\n"
    );
}

#[test]
fn serialized_heads_parse_back() {
    let wire = b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: close, X-A\r\nX-A: 1\r\nX-B: 2\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    let out = request_out(wire, Framing::Chunked, &[("via", b"1.1 omnirelay")]);
    let again = request(out.as_bytes()).unwrap();
    assert_eq!(again.framing(&Default::default()), Ok(Framing::Chunked));
    let names: Vec<_> = again.headers().iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(names, ["Host", "X-B", "via", "transfer-encoding"]);
    assert!(again.keep_alive(), "the client's close is not forwarded");
}

#[test]
fn many_connection_options_are_all_honoured() {
    let options: Vec<String> = (0..20).map(|i| format!("x-{i}")).collect();
    let mut wire = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: {}, host\r\n",
        options.join(", ")
    );
    for option in &options {
        wire.push_str(&format!("{option}: v\r\n"));
    }
    wire.push_str("x-kept: v\r\n\r\n");
    let out = request_out(wire.as_bytes(), Framing::None, &[]);
    assert_eq!(out, "GET / HTTP/1.1\r\nHost: a\r\nx-kept: v\r\n\r\n");
}

#[test]
fn kept_lines_go_out_as_received_around_dropped_ones() {
    // Whitespace after the colon is kept, trailing whitespace dropped, an empty value
    // written out; kept lines on both sides of dropped ones, and a tab, survive.
    let wire = b"GET / HTTP/1.1\r\nHost:example.com\r\nA:  1\r\nB:\t2 \r\nConnection: close\r\n\
        C: 3\r\nEmpty:\r\nD: 4\r\nTE: trailers\r\nE: 5\r\n\r\n";
    assert_eq!(
        request_out(wire, Framing::None, &[("x-request-id", b"r")]),
        "GET / HTTP/1.1\r\nHost:example.com\r\nA:  1\r\nB:\t2\r\nC: 3\r\nEmpty: \r\nD: 4\r\n\
         E: 5\r\nx-request-id: r\r\n\r\n"
    );
}

#[test]
fn names_of_a_dropped_length_in_any_case_are_checked() {
    // `Keep-Alive` and `X-Kept-AB` share a length; `CONTENT-LENGTH` is dropped in any case;
    // a field named like an extra, in another case, is replaced by it.
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept-AB: 1\r\nKEEP-ALIVE: 5\r\n\
        CONTENT-LENGTH: 0\r\nX-Request-ID: old\r\n\r\n";
    assert_eq!(
        request_out(wire, Framing::None, &[("x-request-id", b"new")]),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Kept-AB: 1\r\nx-request-id: new\r\n\r\n"
    );
}

#[test]
fn an_extra_field_of_an_unlisted_name_still_replaces_its_namesake() {
    // `x-trace` is not one of the names the parser notes, so the fast path is off.
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-Trace: old\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        request_out(wire, Framing::None, &[("x-trace", b"new")]),
        "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nx-trace: new\r\n\r\n"
    );
}

#[test]
fn every_dropped_name_is_noted_by_the_parser() {
    use crate::headers::{KNOWN, known_bit, known_bit_const};
    for name in crate::serialize::DROPPED {
        assert!(
            known_bit(name).is_some(),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    for (i, name) in KNOWN.iter().enumerate() {
        let upper = name.to_ascii_uppercase();
        assert_eq!(known_bit(name), Some(1 << i));
        assert_eq!(known_bit(&upper), Some(1 << i));
        assert_eq!(known_bit_const(&upper), 1 << i);
    }
    assert_eq!(known_bit(b"user-agent"), None);
    assert_eq!(known_bit_const(b"user-agent"), 0);
}

#[test]
fn lookups_of_noted_names_find_them_in_any_case_and_only_when_present() {
    let head = super::request(
        b"GET / HTTP/1.1\r\nHOST: a\r\nConnection: close\r\nconnection: x-y\r\nX-Other: 1\r\n\r\n",
    )
    .unwrap();
    let h = head.headers();
    assert_eq!(
        h.get_all("connection").collect::<Vec<_>>(),
        [&b"close"[..], b"x-y"]
    );
    assert_eq!(h.get("Host"), Some(&b"a"[..]));
    assert_eq!(h.get("x-other"), Some(&b"1"[..]));
    assert!(!h.contains("transfer-encoding"));
    assert!(h.get_shared("content-length").is_none());
    assert_eq!(h.count("CONNECTION"), 2);
}

/// An absolute-form target goes upstream in origin-form; the authority replaces the Host
/// field through the extra field the caller adds.
#[test]
fn an_absolute_form_target_goes_out_in_origin_form() {
    let out = request_out(
        b"GET http://a.example/x?q HTTP/1.1\r\nHost: other\r\n\r\n",
        Framing::None,
        &[("host", b"a.example")],
    );
    assert_eq!(out, "GET /x?q HTTP/1.1\r\nhost: a.example\r\n\r\n");
    let out = request_out(
        b"GET http://a.example?q HTTP/1.1\r\nHost: other\r\n\r\n",
        Framing::None,
        &[("host", b"a.example")],
    );
    assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
}

/// An absolute-form OPTIONS without a path asks about the server as a whole: upstream it
/// is `OPTIONS *` (RFC 9112 §3.2.4).
#[test]
fn an_absolute_form_options_without_a_path_goes_out_as_asterisk() {
    let out = request_out(
        b"OPTIONS http://a.example:8001 HTTP/1.1\r\nHost: a.example:8001\r\n\r\n",
        Framing::None,
        &[("host", b"a.example:8001")],
    );
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
}

#[test]
fn removed_fields_are_dropped_whatever_their_case() {
    let head = request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\nServer-Timing: x\r\nx-debug: 2\r\nAccept: */*\r\n\r\n").unwrap();
    let mut out = BytesMut::new();
    let remove: [Box<str>; 2] = ["x-debug".into(), "server-timing".into()];
    write_request_head(
        &head,
        None,
        Framing::None,
        &[("x-gw", b"1")],
        &remove,
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nx-gw: 1\r\n\r\n"
    );
    let resp = response(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = BytesMut::new();
    write_response_head(&resp, Framing::None, &[], &["server".into()], &mut out);
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn routes_may_edit_only_fields_the_proxy_does_not_own() {
    use crate::{uneditable_field, valid_field_value};
    assert_eq!(uneditable_field("x-gateway", true), None);
    assert_eq!(uneditable_field("server", false), None);
    assert_eq!(
        uneditable_field("via", false),
        None,
        "responses' Via is the upstream's"
    );
    for owned in [
        "host",
        "x-request-id",
        "via",
        "forwarded",
        "x-forwarded-for",
    ] {
        assert!(uneditable_field(owned, true).is_some(), "{owned}");
    }
    for framing in [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ] {
        assert!(uneditable_field(framing, true).is_some(), "{framing}");
        assert!(uneditable_field(framing, false).is_some(), "{framing}");
    }
    assert!(uneditable_field("bad name", true).is_some());
    assert!(valid_field_value(b"max-age=31536000; includeSubDomains"));
    assert!(valid_field_value(b""));
    for bad in [&b"a\r\nx: y"[..], b"a\nb", b" lead", b"trail\t", b"nul\0"] {
        assert!(!valid_field_value(bad), "{bad:?}");
    }
}

/// `via` is one of the names the parser notes: removing it works on the path that copies
/// the head's fields as they came (Via absent) and on the one that filters them (present).
#[test]
fn a_removed_known_field_is_dropped_on_either_path() {
    let remove: [Box<str>; 1] = ["via".into()];
    for (wire, want) in [
        (
            &b"HTTP/1.1 200 OK\r\nVia: 1.1 cache\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"[..],
            "HTTP/1.1 200 OK\r\nX-A: 1\r\ncontent-length: 0\r\n\r\n",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"[..],
            "HTTP/1.1 200 OK\r\nX-A: 1\r\ncontent-length: 0\r\n\r\n",
        ),
    ] {
        let resp = response(wire).unwrap();
        let mut out = BytesMut::new();
        write_response_head(&resp, Framing::None, &[], &remove, &mut out);
        assert_eq!(String::from_utf8(out.to_vec()).unwrap(), want);
    }
}
