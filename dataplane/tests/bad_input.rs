//! Hostile and broken HTTP from clients: each case gets the right 4xx and a closed
//! connection, and the workers keep serving everyone else.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use common::{Stack, get};
use omnirelay_test_support::{Capability, require_caps};

/// Sends `raw`, reads until the server closes (bounded), returns what came back.
fn exchange(stack: &Stack, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(stack.proxy()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "server neither answered nor closed in time: {e}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[test]
fn malformed_requests_get_the_right_status_and_a_closed_connection() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();

    // A healthy keep-alive client, opened before the attacks and used after them.
    let mut good = TcpStream::connect(stack.proxy()).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(10_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        (0..80)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), 400, "malformed"),
        ("missing version", b"GET /\r\nHost: a\r\n\r\n".to_vec(), 400, "malformed"),
        ("oversized header", big_header.into_bytes(), 431, "too large"),
        ("too many headers", many_headers.into_bytes(), 431, "too many"),
        (
            "Content-Length with Transfer-Encoding (smuggling)",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
            "conflicting Content-Length and Transfer-Encoding",
        ),
        (
            "two different Content-Lengths",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
            400,
            "conflicting Content-Length",
        ),
        (
            "chunked not final",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
            400,
            "chunked",
        ),
        (
            "bad chunk size",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
            400,
            "invalid chunk size",
        ),
        (
            "chunk size overflow",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n".to_vec(),
            400,
            "chunk size",
        ),
        ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "Host"),
        (
            "Host that is no host",
            b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n".to_vec(),
            400,
            "invalid Host",
        ),
        (
            "body over the listener limit",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n".to_vec(),
            413,
            "too large",
        ),
        (
            "upgrade",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            501,
            "upgrade",
        ),
    ];
    for (name, raw, want, reason) in cases {
        let response = exchange(&stack, &raw);
        assert_eq!(status(&response), want, "{name}: {response:?}");
        assert!(
            response.to_lowercase().contains("connection: close"),
            "{name}: {response:?}"
        );
        assert!(
            response.contains(reason),
            "{name}: reason {reason:?} missing in {response:?}"
        );
    }

    // The early client is still served on its kept-alive connection, and new ones too.
    good.write_all(b"GET /who HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = good.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("one\n"), "{text}");
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    let bad = stack.dp_metric("omnirelay_bad_requests_total").unwrap();
    assert!(bad >= 11.0, "bad requests counted: {bad}");
}

#[test]
fn a_client_that_stops_mid_body_does_not_hang_the_worker() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let mut s = TcpStream::connect(stack.proxy()).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part")
        .unwrap();
    drop(s);
    for _ in 0..20 {
        assert_eq!(get(&stack.url("/who")).0, 200);
    }
}

/// An upload refused by the data plane itself (413: larger than the listener's body
/// limit) while curl is still sending it: curl reports the refusal, with and without
/// waiting for 100 Continue.
#[test]
fn a_refused_upload_gets_its_answer_while_the_client_still_sends() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let file = stack.dir.path().join("too-large");
    // Over the test listener's 64 MiB `max_body_bytes`.
    std::fs::write(&file, vec![b'x'; 80 << 20]).unwrap();
    for expect in ["Expect: 100-continue", "Expect:"] {
        let text = common::upload(&stack.url("/echo"), &file, expect);
        assert!(text.ends_with("\n413"), "{expect}: {text:?}");
    }
}

/// After refusing a request whose body is still coming, the data plane ends its side
/// (the client reads the answer, then the end of the stream) but keeps reading and
/// dropping what the client sends for a while before it closes: closing with unread
/// bytes would reset the connection, and a reset can destroy an answer the client has
/// not read yet (on a lossy path, or on systems that drop unread data on a reset).
#[test]
fn a_refused_request_body_is_read_and_dropped_before_the_close() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let mut s = TcpStream::connect(stack.proxy()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    s.write_all(&chunk).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 413, "{answer}");
    // The client goes on sending for 200 ms: every write is taken, none meets a reset.
    for i in 0..16 {
        if let Err(e) = s.write_all(&chunk) {
            panic!("write {i} after the answer failed: {e}");
        }
        std::thread::sleep(Duration::from_millis(12));
    }
}

/// A head over the size limit gets 431 while the client is still sending it: the client
/// reads the answer (the data plane drops the rest before it closes, instead of resetting
/// the connection under the answer).
#[test]
fn an_oversized_head_is_answered_while_the_client_still_sends_it() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let mut s = TcpStream::connect(stack.proxy()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        head.resize(1 << 20, b'a');
        // Whether all of it is taken does not matter here; the answer does.
        let _ = writer.write_all(&head);
    });
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "{read:?} after {text:?}");
    assert_eq!(status(&text), 431, "{text}");
    drop(s);
    sending.join().unwrap();
}
