use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{PROXY_PSEUDONYM, Version, forwarded, via, x_forwarded_for};

fn v4() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 51000))
}

fn v6() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 51000))
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

const NONE: [&[u8]; 0] = [];

#[test]
fn x_forwarded_for_appends_the_peer() {
    assert_eq!(text(x_forwarded_for(NONE, v4())), "192.0.2.1");
    assert_eq!(
        text(x_forwarded_for([&b"203.0.113.5"[..]], v4())),
        "203.0.113.5, 192.0.2.1"
    );
    let existing = [&b" 203.0.113.5, 198.51.100.7 "[..], b"", b"10.0.0.1"];
    assert_eq!(
        text(x_forwarded_for(existing, v4())),
        "203.0.113.5, 198.51.100.7, 10.0.0.1, 192.0.2.1"
    );
    assert_eq!(
        text(x_forwarded_for(NONE, v6())),
        "2001:db8::1",
        "IPv6 unbracketed, no port"
    );
    let mapped = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9).to_ipv6_mapped(), 1));
    assert_eq!(text(x_forwarded_for(NONE, mapped)), "198.51.100.9");
}

#[test]
fn forwarded_element_for_ipv4_and_ipv6() {
    assert_eq!(
        text(forwarded(NONE, v4(), "http", Some(b"example.com"))),
        "for=192.0.2.1;proto=http;host=example.com"
    );
    assert_eq!(
        text(forwarded(NONE, v6(), "https", None)),
        "for=\"[2001:db8::1]\";proto=https"
    );
    let mapped = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9).to_ipv6_mapped(), 1));
    assert_eq!(
        text(forwarded(NONE, mapped, "http", None)),
        "for=198.51.100.9;proto=http"
    );
}

#[test]
fn forwarded_quotes_non_token_values_and_appends() {
    assert_eq!(
        text(forwarded(NONE, v4(), "http", Some(b"example.com:8080"))),
        "for=192.0.2.1;proto=http;host=\"example.com:8080\""
    );
    assert_eq!(
        text(forwarded(NONE, v4(), "http", Some(b"[2001:db8::2]:443"))),
        "for=192.0.2.1;proto=http;host=\"[2001:db8::2]:443\""
    );
    assert_eq!(
        text(forwarded(NONE, v4(), "http", Some(b"a\"b\\c d"))),
        "for=192.0.2.1;proto=http;host=\"a\\\"b\\\\c d\""
    );
    assert_eq!(
        text(forwarded(NONE, v4(), "http", Some(b""))),
        "for=192.0.2.1;proto=http;host=\"\""
    );
    let existing = [&b"for=198.51.100.1;proto=https"[..], b"for=unknown"];
    assert_eq!(
        text(forwarded(existing, v6(), "http", None)),
        "for=198.51.100.1;proto=https, for=unknown, for=\"[2001:db8::1]\";proto=http"
    );
}

#[test]
fn via_names_the_received_version() {
    assert_eq!(PROXY_PSEUDONYM, "omnirelay");
    assert_eq!(text(via(NONE, Version::Http11)), "1.1 omnirelay");
    assert_eq!(text(via(NONE, Version::Http10)), "1.0 omnirelay");
    assert_eq!(
        text(via([&b"1.1 edge-a"[..]], Version::Http11)),
        "1.1 edge-a, 1.1 omnirelay"
    );
    assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
}

#[test]
fn ipv4_peers_are_written_as_std_formats_them() {
    // The hand-written dotted decimal against the standard library's, over octets of one,
    // two and three digits in every position.
    for a in [0u8, 7, 10, 99, 100, 199, 255] {
        for b in [0u8, 9, 42, 250] {
            let ip = std::net::Ipv4Addr::new(a, b, 255 - b, a.wrapping_mul(3));
            let peer = std::net::SocketAddr::from((ip, 4321));
            assert_eq!(text(x_forwarded_for(NONE, peer)), ip.to_string());
            assert_eq!(
                text(forwarded(NONE, peer, "http", None)),
                format!("for={ip};proto=http")
            );
        }
    }
}
