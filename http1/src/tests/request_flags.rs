use super::request;

#[test]
fn upgrade_detection() {
    let ws = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
        Upgrade: websocket\r\n\r\n";
    assert!(request(ws).unwrap().is_upgrade());
    assert!(
        request(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
            .unwrap()
            .is_upgrade()
    );
    let no_upgrade_field = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n";
    assert!(!request(no_upgrade_field).unwrap().is_upgrade());
    let no_connection_token = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n";
    assert!(!request(no_connection_token).unwrap().is_upgrade());
}

#[test]
fn expect_continue_detection() {
    let expect = |version: &str, value: &str| {
        let wire = format!("PUT / HTTP/{version}\r\nHost: a\r\nExpect: {value}\r\n\r\n");
        request(wire.as_bytes()).unwrap().expects_continue()
    };
    assert!(expect("1.1", "100-continue"));
    assert!(expect("1.1", "100-Continue"));
    assert!(!expect("1.0", "100-continue"), "ignored on HTTP/1.0");
    assert!(!expect("1.1", "something-else"));
    assert!(
        !request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .expects_continue()
    );
}

#[test]
fn request_keep_alive() {
    let keep = |version: &str, fields: &str| {
        let wire = format!("GET / HTTP/{version}\r\nHost: a\r\n{fields}\r\n");
        request(wire.as_bytes()).unwrap().keep_alive()
    };
    assert!(keep("1.1", ""));
    assert!(!keep("1.1", "Connection: close\r\n"));
    assert!(!keep("1.1", "Connection: foo\r\nConnection: Close\r\n"));
    assert!(!keep("1.0", ""));
    assert!(keep("1.0", "Connection: Keep-Alive\r\n"));
    assert!(!keep("1.0", "Connection: keep-alive, close\r\n"));
}
