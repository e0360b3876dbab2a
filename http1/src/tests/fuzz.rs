use crate::fuzz::request_roundtrip;

/// Inputs that reach every branch of the fuzz body: complete and partial heads, each body
/// framing, smuggling attempts, limits and garbage.
const SEEDS: &[&[u8]] = &[
    b"",
    b"G",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y HTTP/1.0\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nVia: 1.0 p\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
      5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\nX",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\nHost: \"q\"\r\n\r\n",
    b"\xff\xfe\x00garbage\r\n\r\n",
    b"GET http://a.example/x?y HTTP/1.1\r\nHost: b\r\n\r\n",
    b"OPTIONS HTTP://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET https://a?q HTTP/1.0\r\n\r\n",
    b"GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
];

#[test]
fn fuzz_body_holds_on_seeds_with_every_selector() {
    for seed in SEEDS {
        for selector in 0..=u8::MAX {
            let mut data = vec![selector];
            data.extend_from_slice(seed);
            request_roundtrip(&data);
        }
    }
    request_roundtrip(b"");
}

/// A small deterministic mutation loop, so the invariants see unusual inputs on every test
/// run and not only under the fuzzer.
#[test]
fn fuzz_body_holds_on_mutated_seeds() {
    const TOKENS: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b" ",
        b",",
        b";",
        b"0",
        b"f",
        b"chunked",
        b"\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 3\r\n",
        b"Host: b\r\n",
        b"Connection: close, host\r\n",
        b"HTTP/1.0",
        b"\x00",
        b"\x80",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..4000 {
        let seed = SEEDS[next() as usize % SEEDS.len()];
        let mut data = vec![next() as u8];
        data.extend_from_slice(seed);
        for _ in 0..(next() % 4 + 1) {
            let at = 1 + next() as usize % data.len();
            match next() % 3 {
                0 => data[at - 1] = next() as u8,
                1 => {
                    let token = TOKENS[next() as usize % TOKENS.len()];
                    data.splice(at..at, token.iter().copied());
                }
                _ => data.truncate(at),
            }
        }
        request_roundtrip(&data);
    }
}
