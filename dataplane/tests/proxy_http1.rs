//! The HTTP/1.1 proxy end to end: real nginx upstream, real control daemon and data plane,
//! curl and wrk as independent clients.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::{Read as _, Write as _};

use common::{Stack, curl, exchange, get, get_once, write_config};
use omnirelay_test_support::{
    Capability,
    process::{ChildGuard, free_port, wait_for_port},
    require_caps,
};
use sha2::{Digest as _, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn bodies_of_every_size_and_framing_arrive_intact() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    for (name, size) in [("empty", 0usize), ("1k", 1024), ("10m", 10 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        let file = stack.dir.path().join(name);
        std::fs::write(&file, &data).unwrap();
        std::fs::write(stack.nginx.root().join(name), &data).unwrap();
        let want = sha(&data);

        // GET: response body streamed back.
        let (code, body) = get(&stack.url(&format!("/{name}")));
        assert_eq!(code, 200, "GET /{name}");
        assert_eq!(sha(&body), want, "GET /{name} body differs");

        // POST with Content-Length and with chunked framing, echoed by the upstream.
        let at_file = format!("@{}", file.display());
        for chunked in [false, true] {
            let mut args = vec!["-s", "-X", "POST", "--data-binary", &at_file];
            if chunked {
                args.extend(["-H", "Transfer-Encoding: chunked"]);
            }
            let url = stack.url("/echo");
            args.push(&url);
            let out = curl(&args);
            assert!(out.status.success(), "curl failed");
            assert_eq!(
                sha(&out.stdout),
                want,
                "POST {name} (chunked: {chunked}) came back different ({} bytes)",
                out.stdout.len()
            );
        }
    }
}

#[test]
fn upstream_connections_are_kept_alive_and_reused() {
    require_caps!(Capability::Program("nginx"), Capability::Program("wrk"));
    let stack = Stack::start();
    let accepts_before = nginx_accepts(&stack);
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d2s", &stack.url("/who")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.split(" requests in")
                .next()
                .filter(|_| l.contains(" requests in"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    let new_upstream = nginx_accepts(&stack) - accepts_before;
    assert!(
        requests > 500,
        "too few requests to judge reuse: {requests}"
    );
    // 8 client connections over 2 workers need at most 8 upstream connections at a time.
    assert!(
        new_upstream <= 16,
        "{requests} requests opened {new_upstream} upstream connections: keep-alive not reused"
    );
    let reused = stack
        .dp_metric("omnirelay_upstream_connections_reused_total{cluster=\"one\"}")
        .unwrap();
    assert!(
        reused as u64 >= requests - new_upstream - 1,
        "reused {reused} of {requests}"
    );
}

/// A POST (which cannot be retried once its body went out) on a pooled upstream
/// connection the backend has meanwhile closed for idleness: the proxy notices the close
/// and opens a new connection instead of failing the request with 502.
#[test]
fn a_pooled_connection_the_backend_closed_is_not_reused() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    // One client connection, so both requests are served by the same worker and pool.
    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    let mut post = |body: &str| {
        let req = format!(
            "POST /echo-brief HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // Until the echoed body is in and the response ends (chunked or not), or an error.
        exchange(&mut conn, &req, |got| {
            got.windows(4).any(|w| w == b"502 ")
                || (got.windows(body.len()).any(|w| w == body.as_bytes())
                    && (got.ends_with(b"\r\n0\r\n\r\n") || got.ends_with(body.as_bytes())))
        })
    };
    let first = post("first");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // nginx closes its side of the pooled connection after 300 ms of idleness.
    std::thread::sleep(std::time::Duration::from_millis(900));
    let second = post("second");
    assert!(
        second.starts_with("HTTP/1.1 200") && second.contains("second"),
        "{second}"
    );
}

/// A client that asks for a large body and never reads it cannot hold the request (its
/// buffers and upstream connection) past the route's request timeout: the proxy's
/// writes are bounded by it too, and the connection is closed.
#[test]
fn a_client_that_stops_reading_is_cut_off_at_the_request_timeout() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    std::fs::write(stack.nginx.root().join("big"), vec![7u8; 32 << 20]).unwrap();
    let v = stack.dp_version();
    let config = common::config(&stack.ports, "one").replace(
        "retry = { max_retries = 2, on = [\"connect-failure\"] }",
        "retry = { max_retries = 2, on = [\"connect-failure\"] }\ntimeouts = { request_ms = 1000 }",
    );
    assert!(config.contains("request_ms = 1000"));
    common::write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);

    let conns = |stack: &Stack| {
        (0..2)
            .map(|w| {
                stack
                    .dp_metric(&format!("omnirelay_worker_connections{{worker=\"{w}\"}}"))
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    // 32 MiB is more than the client's and the proxy's socket buffers hold together.
    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    conn.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(
        omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(2), || {
            conns(&stack) == 1.0
        }),
        "the request did not start"
    );
    // Never read: the proxy's write stalls on a full socket and must give up at the
    // request's deadline (1 s) and close.
    assert!(
        omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(6), || {
            conns(&stack) == 0.0
        }),
        "the stalled connection is still held 5 s after its request timeout"
    );
    drop(conn);
}

/// The response tells the client what becomes of its connection: `connection: close`
/// when the request asked for a close (and the proxy then closes), `connection:
/// keep-alive` to an HTTP/1.0 client that asked to keep it (which then serves another
/// request on it).
#[test]
fn the_response_says_whether_the_client_connection_stays_open() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let who = |conn: &mut std::net::TcpStream, request: &str| {
        exchange(conn, request, |got| got.ends_with(b"one\n")).to_ascii_lowercase()
    };

    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    let head = who(
        &mut conn,
        "GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "closed after it");

    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    for _ in 0..2 {
        let head = who(
            &mut conn,
            "GET /who HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("\r\nconnection: keep-alive\r\n"), "{head}");
    }

    // HTTP/1.1 keeping the connection (the default) gets no Connection field.
    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    let head = who(&mut conn, "GET /who HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        head.starts_with("http/1.1 200") && !head.contains("connection:"),
        "{head}"
    );
}

/// `retry.on = ["timeout"]` with a per-try timeout: an attempt on an endpoint that does
/// not answer is cut at 300 ms and retried on the other one, well within the request's
/// 3 s deadline.
#[test]
fn a_timed_out_attempt_is_retried_on_another_endpoint() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let v = stack.dp_version();
    let ports = &stack.ports;
    let config = common::config(ports, "both")
        .replace(
            "retry = { max_retries = 2, on = [\"connect-failure\"] }",
            "retry = { max_retries = 1, on = [\"timeout\"], per_try_timeout_ms = 300 }\ntimeouts = { request_ms = 3000 }",
        )
        + &format!(
            "\n[[clusters]]\nname = \"both\"\nendpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            ports.up1, ports.up2
        );
    common::write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);
    // up1 sleeps 5 s on /stall; up2 answers "two" to everything. Round robin sends some
    // first attempts to up1.
    for i in 0..4 {
        let started = std::time::Instant::now();
        assert_eq!(
            get(&stack.url("/stall")),
            (200, b"two\n".to_vec()),
            "request {i}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    let timeouts = stack
        .dp_metric("omnirelay_upstream_timeouts_total{cluster=\"both\"}")
        .unwrap_or(0.0);
    assert!(timeouts >= 1.0, "no attempt timed out: {timeouts}");
}

/// `retry.on = ["5xx"]`: a 503 from one endpoint is held back and the request retried on
/// the other; when every attempt fails, the last 503 is forwarded as the upstream sent it.
#[test]
fn a_5xx_is_retried_on_another_endpoint_and_forwarded_when_retries_run_out() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let ports = &stack.ports;
    let with_endpoints = |endpoints: &str| {
        common::config(ports, "flaky").replace(
            "retry = { max_retries = 2, on = [\"connect-failure\"] }",
            "retry = { max_retries = 1, on = [\"5xx\"], budget_percent = 100, min_retries_per_second = 100 }",
        ) + &format!("\n[[clusters]]\nname = \"flaky\"\nendpoints = [{endpoints}]\n")
    };
    let v = stack.dp_version();
    let both = format!("\"127.0.0.1:{}\", \"127.0.0.1:{}\"", ports.up1, ports.up2);
    common::write_config(&stack.config_path, &with_endpoints(&both));
    let v = stack.wait_dp_version_above(v);
    // up1 answers /flaky with 503, up2 with "two"; round robin tries up1 first for some.
    for i in 0..4 {
        assert_eq!(
            get(&stack.url("/flaky")),
            (200, b"two\n".to_vec()),
            "request {i}"
        );
    }
    let retries = stack
        .dp_metric("omnirelay_upstream_retries_total{cluster=\"flaky\"}")
        .unwrap_or(0.0);
    assert!(retries >= 1.0, "no retry: {retries}");

    let only_up1 = format!("\"127.0.0.1:{}\"", ports.up1);
    common::write_config(&stack.config_path, &with_endpoints(&only_up1));
    stack.wait_dp_version_above(v);
    assert_eq!(get(&stack.url("/flaky")), (503, b"flaky one\n".to_vec()));
}

/// `retry.on = ["retriable-status-codes"]` with `statuses = [409]`: up2's 409 is held back
/// and retried on up1, or, with no retry left in the budget, forwarded whole (its upstream
/// connection then goes back to the pool); `"gateway-error"`
/// retries up1's 503 on up2 but forwards up2's 409, which it does not name.
#[test]
fn named_statuses_and_gateway_errors_are_retried() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let ports = &stack.ports;
    let with_retry = |retry: &str| {
        let budget = "budget_percent = 100, min_retries_per_second = 100";
        let retry = if retry.contains("budget") {
            retry.to_owned()
        } else {
            format!("{retry}, {budget}")
        };
        common::config(ports, "both").replace(
            "retry = { max_retries = 2, on = [\"connect-failure\"] }",
            &format!("retry = {{ max_retries = 1, {retry} }}"),
        ) + &format!(
            "\n[[clusters]]\nname = \"both\"\nendpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            ports.up1, ports.up2
        )
    };
    let v = stack.dp_version();
    common::write_config(
        &stack.config_path,
        &with_retry(r#"on = ["retriable-status-codes"], statuses = [409]"#),
    );
    let v = stack.wait_dp_version_above(v);
    // up1 answers /conflict with "one", up2 with 409: every request ends at up1.
    for i in 0..8 {
        assert_eq!(
            get(&stack.url("/conflict")),
            (200, b"one\n".to_vec()),
            "request {i}"
        );
    }
    let retries = || {
        stack
            .dp_metric("omnirelay_upstream_retries_total{cluster=\"both\"}")
            .unwrap_or(0.0)
    };
    let named = retries();
    assert!(named >= 1.0, "no retry: {named}");

    // No retry in the budget: a held-back 409 goes to the client as up2 sent it.
    common::write_config(
        &stack.config_path,
        &with_retry(
            r#"on = ["retriable-status-codes"], statuses = [409], budget_percent = 0, min_retries_per_second = 0"#,
        ),
    );
    let v = stack.wait_dp_version_above(v);
    let opened = || {
        stack
            .dp_metric("omnirelay_upstream_connections_opened_total{cluster=\"both\"}")
            .unwrap_or(0.0)
    };
    let before = opened();
    let answers: Vec<_> = (0..16).map(|_| get(&stack.url("/conflict"))).collect();
    assert!(
        answers.contains(&(409, b"busy two\n".to_vec())),
        "{answers:?}"
    );
    // A forwarded 409 leaves its connection in the pool, as any response does: at most
    // one new connection per endpoint and worker (2), where a closed one would take one
    // per 409.
    let new = opened() - before;
    assert!(
        new <= 4.0,
        "{new} upstream connections opened for 16 requests"
    );
    assert!(
        answers
            .iter()
            .all(|a| *a == (409, b"busy two\n".to_vec()) || *a == (200, b"one\n".to_vec())),
        "{answers:?}"
    );
    assert_eq!(retries(), named, "retried without budget");

    common::write_config(&stack.config_path, &with_retry(r#"on = ["gateway-error"]"#));
    stack.wait_dp_version_above(v);
    for i in 0..8 {
        assert_eq!(
            get(&stack.url("/flaky")),
            (200, b"two\n".to_vec()),
            "request {i}"
        );
    }
    assert!(retries() > named, "no retry of a 503");
    let answers: Vec<_> = (0..8).map(|_| get(&stack.url("/conflict"))).collect();
    assert!(
        answers.contains(&(409, b"busy two\n".to_vec())),
        "a 409 was retried: {answers:?}"
    );
}

/// A backend that refuses a large upload at once (413) and closes without reading the
/// rest: the client gets the backend's 413, with and without `Expect: 100-continue`.
#[test]
fn an_early_answer_to_a_large_upload_reaches_the_client() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let file = stack.dir.path().join("upload");
    std::fs::write(&file, vec![b'u'; 60 << 20]).unwrap();
    let url = stack.url("/small-upload");
    for expect in ["Expect: 100-continue", "Expect:"] {
        let text = common::upload(&url, &file, expect);
        assert!(
            text.ends_with("\n413") && text.contains("413 Request Entity Too Large"),
            "{expect}: {text}"
        );
    }
}

fn nginx_accepts(stack: &Stack) -> u64 {
    // stub_status of up1, asked directly: "server accepts handled requests\n A H R".
    let (code, body) = get(&format!("http://127.0.0.1:{}/status", stack.ports.up1));
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let line = text.lines().nth(2).unwrap_or_default();
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// An HTTP/1.0 request without Host goes upstream (as HTTP/1.1, which needs one) with the
/// authority the client reached, the connection's local address (RFC 9112 §3.3): also on
/// a wildcard listener, whose configured address ([::]:port) names no host, and written
/// as IPv4 for an IPv4 client of that dual-stack socket (not `[::ffff:127.0.0.1]`).
#[test]
fn an_http10_request_without_host_names_the_address_the_client_reached() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let wildcard = stack.add_listener("any", &format!("[::]:{port}"), "", port);
    for addr in [stack.proxy(), wildcard] {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let text = exchange(&mut conn, "GET /headers HTTP/1.0\r\n\r\n", |got| {
            got.ends_with(b"\n") && got.windows(4).any(|w| w == b"\r\n\r\n")
        });
        assert!(text.contains(&format!("\r\n\r\nhost={addr}|")), "{text}");
    }
}

/// An upstream's 103 Early Hints reaches an HTTP/1.1 client ahead of the final response,
/// without hop-by-hop fields; an HTTP/1.0 client, which must not get interim responses,
/// gets the final one only. haproxy is the upstream (its `early-hint` action sends one;
/// this nginx cannot).
#[test]
fn early_hints_from_the_upstream_reach_an_http11_client() {
    require_caps!(Capability::Program("nginx"), Capability::Program("haproxy"));
    let stack = Stack::start();
    let port = free_port();
    let cfg = stack.dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend hints\n  bind 127.0.0.1:{port}\n\
             \x20 http-request early-hint Link \"</style.css>; rel=preload\"\n\
             \x20 http-request early-hint Connection \"x-secret\"\n\
             \x20 http-request return status 200 content-type text/plain string \"final\"\n"
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let haproxy = ChildGuard::spawn("haproxy", cmd, &stack.dir.path().join("haproxy.log")).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_for_port(addr, std::time::Duration::from_secs(5)),
        "{}",
        haproxy.log()
    );
    let v = stack.dp_version();
    let config = common::config(&stack.ports, "one")
        .replace(&format!("127.0.0.1:{}", stack.ports.up1), &addr.to_string());
    write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);

    let ask = |version: &str| {
        let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
        let request = format!("GET / {version}\r\nHost: t\r\nConnection: close\r\n\r\n");
        exchange(&mut conn, &request, |got| got.ends_with(b"final")).to_ascii_lowercase()
    };
    let text = ask("HTTP/1.1");
    let (hints, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(hints.starts_with("http/1.1 103 early hints\r\n"), "{text}");
    assert!(
        hints.contains("\r\nlink: </style.css>; rel=preload"),
        "{text}"
    );
    assert!(
        !hints.contains("connection"),
        "hop-by-hop field relayed: {text}"
    );
    assert!(rest.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nfinal"), "{text}");

    let text = ask("HTTP/1.0");
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(!text.contains(" 103 "), "{text}");
}

/// An absolute-form target (what a client sends to a proxy it knows as one): routed by its
/// path, and sent upstream in origin-form with its authority as the Host (RFC 9112
/// §3.2.2), not the client's Host field.
#[test]
fn an_absolute_form_target_is_routed_by_its_path_and_names_its_authority() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
    let text = exchange(
        &mut conn,
        "GET http://t.example/headers HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        |got| got.ends_with(b"\n") && got.windows(4).any(|w| w == b"\r\n\r\n"),
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\r\n\r\nhost=t.example|"), "{text}");
}

/// Routing sees the path as the upstream will resolve it: with only `/who` routed,
/// `/who/../headers` (or its percent-encoded form) is a request for `/headers` and gets
/// 404, instead of matching `/who` and being served `/headers` by the upstream (nginx
/// decodes `%2F` before resolving dots: `/who/..%2Fheaders` would reach it too, so that
/// is refused).
#[test]
fn dot_segments_cannot_reach_a_path_no_route_allows() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let v = stack.dp_version();
    let config = common::config(&stack.ports, "one").replace(
        "cluster = \"one\"",
        "cluster = \"one\"\npath_prefix = \"/who\"",
    );
    write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);
    let ask = |target: &str| {
        let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        exchange(&mut conn, &request, |_| false)
    };
    for target in [
        "/who/../headers",
        "/who/%2e%2e/headers",
        "/who/./../headers?x",
    ] {
        let text = ask(target);
        assert!(text.starts_with("HTTP/1.1 404"), "{target}: {text}");
    }
    // Dots the upstream could find behind an escaped slash or a path parameter: refused.
    for target in [
        "/who/..%2Fheaders",
        "/who/%2e%2e%2fheaders",
        "/who/..;/headers",
    ] {
        let text = ask(target);
        assert!(text.starts_with("HTTP/1.1 400"), "{target}: {text}");
    }
    let text = ask("/who/./x/../");
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("one\n"),
        "{text}"
    );
}

#[test]
fn forwarding_headers_request_id_and_hop_by_hop_handling() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let url = stack.url("/headers");
    let out = curl(&[
        "-s",
        "-H",
        "X-Forwarded-For: 203.0.113.7",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: s3cret",
        "-H",
        "TE: trailers",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("xff=203.0.113.7, 127.0.0.1|"), "{text}");
    assert!(text.contains("via=1.1 omnirelay|"), "{text}");
    assert!(text.contains("fwd=for=127.0.0.1;"), "{text}");
    assert!(
        text.contains("te=\n") || text.ends_with("te=\n"),
        "TE must not reach the upstream: {text}"
    );
    let rid = text
        .split("rid=")
        .nth(1)
        .unwrap()
        .split('|')
        .next()
        .unwrap();
    assert_eq!(rid.len(), 32, "generated request id: {text}");

    // A given request id is propagated as is, and shows in the access log.
    let out = curl(&["-s", "-H", "X-Request-Id: abc-123", &url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rid=abc-123|"));
    let log_path = stack.dir.path().join("access.log");
    assert!(
        omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(5), || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("\"request_id\":\"abc-123\"")
        }),
        "access log lacks the request id"
    );
    let line = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .find(|l| l.contains("abc-123"))
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["route"], "default");
    assert_eq!(v["cluster"], "one");
    assert_eq!(v["status"], 200);
    assert_eq!(v["endpoint"], format!("127.0.0.1:{}", stack.ports.up1));
}

#[test]
fn unmatched_requests_get_404_and_dead_upstreams_503() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let dead = omnirelay_test_support::process::free_port();
    let v = stack.dp_version();
    let cfg = common::config(&stack.ports, "two")
        .replace(
            &format!("endpoints = [\"127.0.0.1:{}\"]", stack.ports.up2),
            &format!("endpoints = [\"127.0.0.1:{dead}\"]"),
        )
        .replace(
            "cluster = \"two\"",
            "cluster = \"two\"\npath_prefix = \"/api/\"",
        );
    common::write_config(&stack.config_path, &cfg);
    stack.wait_dp_version_above(v);

    let (code, body) = get(&stack.url("/x"));
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("no route"));
    assert_eq!(
        stack.dp_metric("omnirelay_requests_unrouted_total"),
        Some(1.0)
    );

    let (code, body) = get(&stack.url("/api/x"));
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("upstream connect failed"));
    let failures = stack
        .dp_metric("omnirelay_upstream_connect_failures_total{cluster=\"two\"}")
        .unwrap();
    assert!(
        failures >= 3.0,
        "1 try + 2 retries expected, got {failures}"
    );
}

/// A header condition sees every value of a repeated field (joined with `,`): a request
/// that says `x-canary: 1` and `x-canary: 2` does not take the route on `x-canary = "1"`.
#[test]
fn a_header_condition_sees_every_value_of_a_repeated_field() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let v = stack.dp_version();
    let config = common::config(&stack.ports, "one").replacen(
        "[[routes]]",
        "[[routes]]\nname = \"canary\"\ncluster = \"two\"\n\
         headers = [{ name = \"x-canary\", exact = \"1\" }]\n\n[[routes]]",
        1,
    );
    write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);
    for (fields, want) in [
        ("x-canary: 1\r\n", "two"),
        ("x-canary: 1\r\nx-canary: 2\r\n", "one"),
        ("X-Canary: 2\r\nx-canary: 1\r\n", "one"),
        ("", "one"),
    ] {
        let mut conn = std::net::TcpStream::connect(stack.proxy()).unwrap();
        let request = format!("GET /who HTTP/1.1\r\nhost: a\r\n{fields}connection: close\r\n\r\n");
        let text = exchange(&mut conn, &request, |_| false);
        assert!(
            text.ends_with(&format!("\r\n\r\n{want}\n")),
            "{fields:?}: {text}"
        );
    }
}

/// An idempotent request with a body is retried after a 5xx with its body sent again
/// whole (kept while it fits in 64 KiB), Content-Length and chunked; a POST, or a body
/// too large to keep, gets the 503 as the upstream sent it. up2 answers /replay with
/// 503, up1 echoes the body; round robin sends first attempts to both.
#[test]
fn a_kept_request_body_goes_up_again_on_a_retry() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let ports = &stack.ports;
    let v = stack.dp_version();
    let config = common::config(ports, "both").replace(
        "retry = { max_retries = 2, on = [\"connect-failure\"] }",
        "retry = { max_retries = 1, on = [\"5xx\"], budget_percent = 100, min_retries_per_second = 100 }",
    ) + &format!(
        // up2's 503s must not get it ejected: every request here must meet it first on
        // some worker.
        "\n[[clusters]]\nname = \"both\"\nendpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\noutlier = {{ consecutive_failures = 1000 }}\n",
        ports.up1, ports.up2
    );
    write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);
    let dir = stack.dir.path();
    let small: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    std::fs::write(dir.join("small"), &small).unwrap();
    std::fs::write(dir.join("large"), &large).unwrap();
    let send = |method: &str, file: &str, chunked: bool| {
        let out = dir.join("out");
        let mut args = vec!["-s", "-X", method, "-o", out.to_str().unwrap()];
        args.extend(["-w", "%{http_code}", "-H", "Expect:"]);
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        let data = format!("@{}", dir.join(file).display());
        let url = stack.url("/replay");
        args.extend(["--data-binary", &data, &url]);
        let res = curl(&args);
        let code: u16 = String::from_utf8_lossy(&res.stdout).parse().unwrap();
        (code, std::fs::read(out).unwrap())
    };
    // Six requests over two workers: one worker gets three in a row, so both endpoints
    // take first attempts.
    for chunked in [false, true] {
        for i in 0..6 {
            let (code, body) = send("PUT", "small", chunked);
            assert_eq!(code, 200, "PUT {i} (chunked: {chunked})");
            assert!(
                body == small,
                "PUT {i} (chunked: {chunked}): the echo differs"
            );
        }
    }
    let retries = stack
        .dp_metric("omnirelay_upstream_retries_total{cluster=\"both\"}")
        .unwrap_or(0.0);
    assert!(retries >= 2.0, "retries: {retries}");
    for (method, file) in [("POST", "small"), ("PUT", "large")] {
        let codes: Vec<u16> = (0..6).map(|_| send(method, file, false).0).collect();
        assert!(codes.contains(&503), "{method} {file}: {codes:?}");
        assert!(codes.iter().all(|c| [200, 503].contains(c)), "{codes:?}");
    }
}

/// A listener with `preserve_request_id = false` gives every request an id of its own
/// (clients are not trusted to name requests); the default passes a client's id on.
#[test]
fn a_listener_that_does_not_trust_request_ids_replaces_them() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let edge = stack.add_listener("edge", &address, "preserve_request_id = false\n", port);
    let rid = |addr| {
        let text = get_once(
            addr,
            "/headers",
            "host: a\r\nx-request-id: chosen-by-client\r\n",
        );
        let rid = text.split("|rid=").nth(1).and_then(|r| r.split('|').next());
        rid.unwrap_or_else(|| panic!("no rid in {text}")).to_owned()
    };
    assert_eq!(rid(stack.proxy()), "chosen-by-client");
    let replaced = rid(edge);
    assert_ne!(replaced, "chosen-by-client");
    assert!(
        replaced.len() == 32 && replaced.bytes().all(|b| b.is_ascii_hexdigit()),
        "{replaced}"
    );
}

/// A listener with `merge_slashes = true` routes and forwards `//two/x` as `/two/x`; one
/// without it treats the doubled slash as a segment of its own (Envoy's default), so a
/// route on `/two/` does not take it.
#[test]
fn a_listener_that_merges_slashes_routes_and_forwards_the_merged_path() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let (merged, plain) = (free_port(), free_port());
    let extra = format!(
        "routes = [\"two\", \"default\"]\nmerge_slashes = true\n\n\
         [[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:{plain}\"\n\
         routes = [\"two\", \"default\"]\n\n\
         [[routes]]\nname = \"two\"\npath_prefix = \"/two/\"\ncluster = \"two\"\n"
    );
    let merged = stack.add_listener("merged", &format!("127.0.0.1:{merged}"), &extra, merged);
    let plain = std::net::SocketAddr::from(([127, 0, 0, 1], plain));
    assert!(wait_for_port(plain, std::time::Duration::from_secs(5)));
    let body = |addr, target: &str| {
        let text = get_once(addr, target, "host: a\r\n");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    };
    assert_eq!(body(merged, "//two//x").1, "two\n");
    assert_eq!(body(plain, "/two/x").1, "two\n");
    let (status, _) = body(plain, "//two/x");
    assert!(
        status.contains(" 404 "),
        "{status}: the default cluster has no such file"
    );
    // What the upstream is sent: the merged path, the query as it came.
    assert_eq!(body(merged, "//uri//a/?q=1//2").1, "/uri/a/?q=1//2\n");
    assert_eq!(body(plain, "//uri//a/?q=1//2").1, "//uri//a/?q=1//2\n");
}

/// A route's `rewrite`: the matched prefix replaced and the Host field set on the way
/// upstream (the query kept; `Forwarded` still names the host the client asked for).
#[test]
fn a_route_rewrites_the_path_prefix_and_the_host_sent_upstream() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let extra = "routes = [\"old\", \"meta\", \"default\"]\n\n\
         [[routes]]\nname = \"old\"\npath_prefix = \"/old\"\ncluster = \"one\"\n\
         rewrite = { prefix = \"/uri/\" }\n\n\
         [[routes]]\nname = \"meta\"\npath_exact = \"/meta\"\ncluster = \"one\"\n\
         rewrite = { prefix = \"/headers\", host = \"backend.internal:8080\" }\n";
    let addr = stack.add_listener("rewriting", &format!("127.0.0.1:{port}"), extra, port);
    let body = |target: &str| {
        let text = get_once(addr, target, "host: a.example\r\n");
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or(text)
    };
    // `/old` replaced by `/uri/` with no doubled slash, the query as it came.
    assert_eq!(body("/old/x/y?q=1"), "/uri/x/y?q=1\n");
    assert_eq!(body("/old"), "/uri/\n");
    // Dot segments are resolved first, then the prefix replaced.
    assert_eq!(body("/old/a/../b"), "/uri/b\n");
    // A rewrite that would make one (`/old../x` matches `/old` and would go up as
    // `/uri/../x`) is refused.
    let refused = get_once(addr, "/old../x", "host: a\r\n");
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    assert!(refused.contains("rewritten path"), "{refused}");
    let meta = body("/meta");
    assert!(meta.starts_with("host=backend.internal:8080|"), "{meta}");
    assert!(
        meta.contains("host=a.example"),
        "Forwarded keeps the asked host: {meta}"
    );
    // Other routes are untouched.
    assert_eq!(body("/uri/plain"), "/uri/plain\n");
}

/// A cluster's `max_requests`: with that many requests in flight over the data plane's
/// workers, one more is answered 503 at once and counted; the place frees when the
/// request in flight ends.
#[test]
fn a_cluster_at_max_requests_answers_503_until_a_place_frees() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let extra = format!(
        "routes = [\"limited\"]\n\n\
         [[routes]]\nname = \"limited\"\ncluster = \"limited\"\n\
         timeouts = {{ request_ms = 1500 }}\n\n\
         [[clusters]]\nname = \"limited\"\nendpoints = [\"127.0.0.1:{}\"]\nmax_requests = 1\n",
        stack.ports.up1
    );
    let addr = stack.add_listener("limited", &format!("127.0.0.1:{port}"), &extra, port);
    let get = move |path: &str| get_once(addr, path, "host: a\r\n");
    // A request that holds the only place (the upstream stalls; the route gives up at
    // 1.5 s with 504).
    let stalled = std::thread::spawn(move || get("/stall"));
    let attempts = "omnirelay_upstream_attempts_total{cluster=\"limited\"}";
    assert!(
        omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(5), || {
            stack.dp_metric(attempts) == Some(1.0)
        }),
        "the stalled request did not go up"
    );
    let refused = get("/who");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("max_requests"), "{refused}");
    assert_eq!(
        stack.dp_metric("omnirelay_upstream_overflows_total{cluster=\"limited\"}"),
        Some(1.0)
    );
    let first = stalled.join().unwrap();
    assert!(first.starts_with("HTTP/1.1 504 "), "{first}");
    let freed = get("/who");
    assert!(
        freed.starts_with("HTTP/1.1 200 ") && freed.ends_with("one\n"),
        "{freed}"
    );
}

/// A route's `request_headers` and `response_headers`: fields set (replacing the
/// message's own) and removed on the way up and on the way back.
#[test]
fn a_route_sets_and_removes_fields_both_ways() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let extra = "routes = [\"edited\"]\n\n\
         [[routes]]\nname = \"edited\"\ncluster = \"one\"\n\
         retry = { max_retries = 1, on = [\"5xx\"] }\n\
         request_headers = { set = { \"X-Gateway\" = \"edge 1\" }, remove = [\"x-debug\"] }\n\
         response_headers = { set = { \"strict-transport-security\" = \"max-age=60\" }, \
         remove = [\"server\"] }\n";
    let addr = stack.add_listener("edited", &format!("127.0.0.1:{port}"), extra, port);
    let fields = "host: a\r\nx-gateway: client\r\nx-debug: 1\r\nx-keep: yes\r\n";
    let text = get_once(addr, "/edits", fields);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "gw=edge 1|debug=|keep=yes\n");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nstrict-transport-security: max-age=60"),
        "{head}"
    );
    assert!(!lower.contains("\r\nserver:"), "{head}");
    // A 5xx held back for a retry and then relayed (both attempts answered 503) gets the
    // same edits.
    let flaky = get_once(addr, "/flaky", "host: a\r\n");
    let flaky_head = flaky.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(flaky_head.starts_with("http/1.1 503 "), "{flaky}");
    assert!(
        flaky_head.contains("\r\nstrict-transport-security: max-age=60"),
        "{flaky}"
    );
    assert!(!flaky_head.contains("\r\nserver:"), "{flaky}");
    assert_eq!(
        stack.dp_metric("omnirelay_upstream_retries_total{cluster=\"one\"}"),
        Some(1.0)
    );
    // The default listener's route is untouched: nginx names itself.
    let plain = get_once(stack.proxy(), "/edits", fields);
    assert!(
        plain.to_ascii_lowercase().contains("\r\nserver: nginx"),
        "{plain}"
    );
    assert!(plain.ends_with("gw=client|debug=1|keep=yes\n"), "{plain}");
}

/// The proxy's own answers to a request read whole keep the client connection, as
/// nginx's and Envoy's do: a 404 (no route), 503 (connect failed), 504 (upstream timed
/// out), also to a HEAD (its head says the length, no body follows) and to an HTTP/1.0
/// client that asked to keep the connection, after a body that went up whole, and after
/// a small one that went nowhere (read and dropped, Content-Length or chunked). After one
/// whose body is not dropped, a 400 about the request, or a client's `connection: close`,
/// it closes.
#[test]
fn the_proxys_own_answers_keep_the_connection_when_the_request_was_read_whole() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let dead = free_port();
    let extra = format!(
        "routes = [\"who\", \"dead\", \"slow\"]\n\n\
         [[routes]]\nname = \"who\"\ncluster = \"one\"\npath_exact = \"/who\"\n\n\
         [[routes]]\nname = \"dead\"\ncluster = \"dead\"\npath_prefix = \"/dead/\"\n\n\
         [[routes]]\nname = \"slow\"\ncluster = \"one\"\npath_prefix = \"/stall\"\n\
         timeouts = {{ request_ms = 300 }}\n\n\
         [[clusters]]\nname = \"dead\"\nendpoints = [\"127.0.0.1:{dead}\"]\n"
    );
    let addr = stack.add_listener("local", &format!("127.0.0.1:{port}"), &extra, port);
    let ends = |tail: &'static str| move |got: &[u8]| got.ends_with(tail.as_bytes());
    let closed = |conn: &mut std::net::TcpStream| {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).is_ok_and(|_| rest.is_empty())
    };

    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let mut ask = |request: &str, tail: &'static str| {
        let got = exchange(&mut conn, request, ends(tail));
        assert!(got.ends_with(tail), "{request:?} got {got:?}");
        got.to_ascii_lowercase()
    };
    let unrouted = ask(
        "GET /nowhere HTTP/1.1\r\nhost: a\r\n\r\n",
        "no route matches this request\n",
    );
    assert!(unrouted.starts_with("http/1.1 404 "), "{unrouted}");
    assert!(!unrouted.contains("connection:"), "{unrouted}");
    let head = ask("HEAD /nowhere HTTP/1.1\r\nhost: a\r\n\r\n", "\r\n\r\n");
    assert!(
        head.starts_with("http/1.1 404 ") && head.contains("content-length: 30\r\n"),
        "{head}"
    );
    let refused = ask(
        "GET /dead/x HTTP/1.1\r\nhost: a\r\n\r\n",
        "upstream connect failed\n",
    );
    assert!(refused.starts_with("http/1.1 503 "), "{refused}");
    let late = ask(
        "GET /stall HTTP/1.1\r\nhost: a\r\n\r\n",
        "upstream timed out\n",
    );
    assert!(late.starts_with("http/1.1 504 "), "{late}");
    // A body that went up whole before the upstream failed leaves the connection open.
    let late = ask(
        "POST /stall HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
        "upstream timed out\n",
    );
    assert!(late.starts_with("http/1.1 504 "), "{late}");
    // A small body of a request answered without going upstream is read and dropped
    // (coming in two pieces here, the second after the answer).
    let dropped = ask(
        "POST /nowhere HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello",
        "no route matches this request\n",
    );
    assert!(!dropped.contains("connection:"), "{dropped}");
    let moved = ask("worldGET /who HTTP/1.1\r\nhost: a\r\n\r\n", "one\n");
    assert!(moved.starts_with("http/1.1 200 "), "{moved}");
    // So is a chunked one, its last chunk and trailer after the answer.
    let dropped = ask(
        "POST /nowhere HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "no route matches this request\n",
    );
    assert!(!dropped.contains("connection:"), "{dropped}");
    let moved = ask(
        "6\r\n world\r\n0\r\nx-sum: 1\r\n\r\nGET /who HTTP/1.1\r\nhost: a\r\n\r\n",
        "one\n",
    );
    assert!(moved.starts_with("http/1.1 200 "), "{moved}");
    // Also a body of exactly 64 KiB, and one whose upstream could not be reached (none of
    // it was read).
    let full = format!(
        "POST /nowhere HTTP/1.1\r\nhost: a\r\ncontent-length: 65536\r\n\r\n{}",
        "x".repeat(65536)
    );
    ask(&full, "no route matches this request\n");
    let refused = ask(
        "POST /dead/x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
        "upstream connect failed\n",
    );
    assert!(!refused.contains("connection:"), "{refused}");
    // Nothing extra was sent after any of them (the HEAD's body least of all): the next
    // response on the connection is read from its first byte.
    let served = ask("GET /who HTTP/1.1\r\nhost: a\r\n\r\n", "one\n");
    assert!(served.starts_with("http/1.1 200 "), "{served}");
    let old = ask(
        "GET /nowhere HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
        "no route matches this request\n",
    );
    assert!(old.contains("\r\nconnection: keep-alive\r\n"), "{old}");
    let served = ask("GET /who HTTP/1.1\r\nhost: a\r\n\r\n", "one\n");
    assert!(served.starts_with("http/1.1 200 "), "{served}");
    let last = ask(
        "GET /nowhere HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        "no route matches this request\n",
    );
    assert!(last.contains("\r\nconnection: close\r\n"), "{last}");
    assert!(closed(&mut conn), "open after the client's close");

    // A body the proxy does not drop (over 64 KiB, or awaiting 100 Continue), and a 400
    // about the request itself, close.
    for (request, status, tail) in [
        (
            "POST /nowhere HTTP/1.1\r\nhost: a\r\ncontent-length: 65537\r\n\r\nhello",
            "404",
            "no route matches this request\n",
        ),
        (
            "POST /nowhere HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            "404",
            "no route matches this request\n",
        ),
        (
            "GET /a/..%2Fwho HTTP/1.1\r\nhost: a\r\n\r\n",
            "400",
            "path parameter\n",
        ),
    ] {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let got = exchange(&mut conn, request, ends(tail));
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")) && got.ends_with(tail),
            "{request:?} got {got}"
        );
        assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
        assert!(closed(&mut conn), "{request:?}: open after {got}");
    }
    // A chunked body that turns out larger than 64 KiB, or malformed, closes the
    // connection after the answer (which could not know it).
    let chunk = "x".repeat(70 * 1024);
    for body in [
        format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()),
        "5\r\nhello\r\nzz\r\n".to_owned(),
    ] {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let request = format!(
            "POST /nowhere HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n{body}"
        );
        let got = exchange(&mut conn, &request, ends("no route matches this request\n"));
        assert!(got.starts_with("HTTP/1.1 404 "), "{got}");
        let waited = std::time::Instant::now();
        assert!(closed(&mut conn), "open after {:.20}", body);
        assert!(
            waited.elapsed() < std::time::Duration::from_millis(1500),
            "closed only when the drop timed out"
        );
    }
    // A body that does not come whole within 2 s: the connection closes after all.
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let short = "POST /nowhere HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello";
    let got = exchange(&mut conn, short, ends("no route matches this request\n"));
    assert!(got.starts_with("HTTP/1.1 404 "), "{got}");
    let waited = std::time::Instant::now();
    assert!(closed(&mut conn), "open with the body short");
    let took = waited.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "closed after {took:?}"
    );
}

/// Routes that answer themselves: a fixed response (with the route's response fields)
/// and redirects built from the request's host, port, path and query, read by curl; on
/// one keep-alive connection beside proxied requests; counted per route with no cluster.
#[test]
fn routes_answer_with_a_fixed_response_or_a_redirect() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let port = free_port();
    let extra = "routes = [\"robots\", \"gone\", \"v1\", \"secure\", \"who\"]\n\n\
         [[routes]]\nname = \"robots\"\npath_exact = \"/robots.txt\"\n\
         direct_response = { status = 200, body = \"User-agent: *\\nDisallow: /\\n\" }\n\
         response_headers = { set = { \"cache-control\" = \"max-age=60\" } }\n\n\
         [[routes]]\nname = \"gone\"\npath_prefix = \"/old/\"\n\
         direct_response = { status = 410, body = \"<p>gone</p>\", content_type = \"text/html\" }\n\n\
         [[routes]]\nname = \"v1\"\npath_prefix = \"/v1/\"\n\
         redirect = { prefix = \"/v2/\", code = 308 }\n\n\
         [[routes]]\nname = \"secure\"\npath_prefix = \"/login\"\n\
         redirect = { scheme = \"https\", host = \"auth.example\", strip_query = true }\n\n\
         [[routes]]\nname = \"who\"\ncluster = \"one\"\npath_exact = \"/who\"\n";
    let addr = stack.add_listener("own", &format!("127.0.0.1:{port}"), extra, port);
    let url = |path: &str| format!("http://{addr}{path}");

    let out = curl(&["-s", "-i", &url("/robots.txt")]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-type: text/plain\r\n"), "{text}");
    assert!(text.contains("\r\ncache-control: max-age=60\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nuser-agent: *\ndisallow: /\n"),
        "{text}"
    );
    let out = curl(&["-s", "-i", &url("/old/page")]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 410 gone\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-type: text/html\r\n"), "{text}");
    assert!(text.ends_with("<p>gone</p>"), "{text}");

    let redirect = |path: &str, host: &str| {
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-H",
            &format!("host: {host}"),
            "-w",
            "%{http_code} %{redirect_url}",
            &url(path),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        redirect("/v1/users?id=3", "api.example:8080"),
        "308 http://api.example:8080/v2/users?id=3"
    );
    assert_eq!(
        redirect("/login?next=/home", "www.example"),
        "301 https://auth.example/login"
    );

    // One connection: answers, a proxied request and a HEAD (no body follows its head).
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let mut ask = |request: &str, tail: &'static str| {
        let got = exchange(&mut conn, request, |got| got.ends_with(tail.as_bytes()));
        assert!(got.ends_with(tail), "{request:?} got {got:?}");
        got
    };
    ask(
        "GET /robots.txt HTTP/1.1\r\nhost: a\r\n\r\n",
        "Disallow: /\n",
    );
    let head = ask("HEAD /old/x HTTP/1.1\r\nhost: a\r\n\r\n", "\r\n\r\n");
    assert!(head.contains("content-length: 11\r\n"), "{head}");
    let moved = ask("GET /v1/ HTTP/1.1\r\nhost: a\r\n\r\n", "\r\n\r\n");
    assert!(
        moved.starts_with("HTTP/1.1 308 Permanent Redirect\r\n")
            && moved.contains("\r\nlocation: http://a/v2/\r\ncontent-length: 0\r\n"),
        "{moved}"
    );
    // A small body sent to a route that answers itself is dropped.
    ask(
        "POST /robots.txt HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc",
        "Disallow: /\n",
    );
    ask("GET /who HTTP/1.1\r\nhost: a\r\n\r\n", "one\n");

    assert_eq!(
        stack.dp_metric("omnirelay_requests_total{route=\"robots\",cluster=\"\",class=\"2xx\"}"),
        Some(3.0)
    );
    assert_eq!(
        stack.dp_metric("omnirelay_requests_total{route=\"v1\",cluster=\"\",class=\"3xx\"}"),
        Some(2.0)
    );
}

/// `weighted_clusters` shares a route's requests by weight (up1 says "one", up2 "two"):
/// 1:1 sends many to each, and the route's requests are counted per cluster; a cluster
/// of weight 0 gets none; split by hash, each user keeps to one cluster, and users go to
/// both.
#[test]
fn a_route_splits_its_requests_over_weighted_clusters() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let extra = "routes = [\"even\", \"sticky\", \"dark\"]\n\n\
         [[routes]]\nname = \"even\"\npath_exact = \"/who\"\n\
         weighted_clusters = [{ name = \"one\", weight = 5 }, { name = \"two\", weight = 5 }]\n\n\
         [[routes]]\nname = \"sticky\"\npath_prefix = \"/who/sticky\"\n\
         weighted_clusters = [{ name = \"one\", weight = 5 }, { name = \"two\", weight = 5 }]\n\
         split_by_hash = true\nhash_on = { header = \"x-user\" }\n\n\
         [[routes]]\nname = \"dark\"\npath_prefix = \"/\"\n\
         weighted_clusters = [{ name = \"one\", weight = 0 }, { name = \"two\", weight = 1 }]\n";
    let addr = stack.add_listener("split", &format!("127.0.0.1:{port}"), extra, port);
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let mut who_is = |target: &str, fields: &str| {
        let request = format!("GET {target} HTTP/1.1\r\nhost: a\r\n{fields}\r\n");
        let got = exchange(&mut conn, &request, |got| {
            got.ends_with(b"one\n") || got.ends_with(b"two\n")
        });
        assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
        got.ends_with("one\n")
    };
    // Each user's requests go to one cluster; 24 users all to one: odds 2 in 2^24.
    let users: Vec<bool> = (0..24)
        .map(|u| {
            let seen: Vec<bool> = (0..4)
                .map(|_| who_is("/who/sticky", &format!("x-user: user-{u}\r\n")))
                .collect();
            assert!(seen.iter().all(|&s| s == seen[0]), "user-{u}: {seen:?}");
            seen[0]
        })
        .collect();
    assert!(users.contains(&true) && users.contains(&false), "{users:?}");
    let mut who = |target: &str| who_is(target, "");
    let n = 200;
    let ones = (0..n).filter(|_| who("/who")).count();
    // Binomial(200, 1/2): outside 60..=140 with probability below 1e-8.
    assert!((60..=140).contains(&ones), "{ones} of {n} went to one");
    assert!(
        !(0..20).any(|_| who("/who/else")),
        "a weight 0 cluster was picked"
    );

    let count = |cluster: &str| {
        stack
            .dp_metric(&format!(
                "omnirelay_requests_total{{route=\"even\",cluster=\"{cluster}\",class=\"2xx\"}}"
            ))
            .unwrap_or(0.0) as usize
    };
    assert_eq!((count("one"), count("two")), (ones, n - ones));
}

/// `expected_statuses` lets an HTTP check pass on a status other than 2xx, an endpoint
/// new to the checks waits out for its first one, which comes at once (the interval is
/// 20 s) and brings it in on one pass (the threshold is 3), and a TCP check only
/// connects: up1 answers the check's path `/flaky` with 503, which the check expects (in,
/// and it takes requests); a mute listener that accepts connections but never answers,
/// added later, gets no request while its first check waits for its 10 s timeout, and
/// when the check turns to TCP, its new first check passes at once; a dead address, added
/// with it, fails its first check and stays out.
#[test]
fn health_checks_expect_statuses_and_tcp_checks_only_connect() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let dead = free_port();
    let silent = mute_listener();
    let (up1, up2) = (stack.ports.up1, stack.ports.up2);
    let listener = |endpoints: &[u16], check: &str| {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        format!(
            "routes = [\"checked\"]\n\n\
             [[routes]]\nname = \"checked\"\ncluster = \"four\"\n\n\
             [[clusters]]\nname = \"four\"\nendpoints = [{}]\n\
             health_check = {{ {check}, interval_ms = 20000, timeout_ms = 10000, \
             unhealthy_threshold = 2, healthy_threshold = 3 }}\n",
            endpoints.join(", ")
        )
    };
    let http = r#"path = "/flaky", expected_statuses = ["200-299", 503]"#;
    let addr = stack.add_listener(
        "checked",
        &format!("127.0.0.1:{port}"),
        &listener(&[up1, up2], http),
        port,
    );
    let change = |text: String| {
        let v = stack.dp_version();
        write_config(
            &stack.config_path,
            &format!(
                "{}\n[[listeners]]\nname = \"checked\"\naddress = \"127.0.0.1:{port}\"\n{text}",
                common::config(&stack.ports, "one"),
            ),
        );
        stack.wait_dp_version_above(v);
    };
    let cluster = || {
        let listed = curl(&["-s", &stack.dp_admin("/clusters")]);
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        listed["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "four")
            .cloned()
            .unwrap()
    };
    let health = || {
        cluster()["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["health"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let reached = |want: &[&str]| {
        assert!(
            omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(15), || {
                health() == want
            }),
            "endpoints {:?}, expected {want:?}",
            health()
        );
    };
    // up1 passes: its 503 to the check is expected.
    reached(&["in", "in"]);
    let check = cluster()["health_check"].clone();
    assert_eq!(
        (
            &check["protocol"],
            &check["path"],
            &check["expected_statuses"]
        ),
        (
            &serde_json::json!("http"),
            &serde_json::json!("/flaky"),
            &serde_json::json!(["200-299", "503"])
        )
    );

    // The mute and the dead endpoint join: pending, they get no request meanwhile (one
    // sent to the mute endpoint would not be answered, one to the dead one would count a
    // connect failure).
    change(listener(&[up1, up2, silent, dead], http));
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let ones = (0..20)
        .filter(|_| {
            let got = exchange(&mut conn, "GET /who HTTP/1.1\r\nhost: a\r\n\r\n", |got| {
                got.ends_with(b"one\n") || got.ends_with(b"two\n")
            });
            assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
            got.ends_with("one\n")
        })
        .count();
    assert!(
        (1..20).contains(&ones),
        "{ones} of 20 requests to up1: both endpoints in take requests"
    );
    assert_eq!(
        stack.dp_metric("omnirelay_upstream_connect_failures_total{cluster=\"four\"}"),
        Some(0.0),
        "a request was sent to the dead endpoint"
    );
    reached(&["in", "in", "pending", "out"]);

    // A TCP check: the mute endpoint, still pending, is checked again at once, and comes
    // in (it accepts connections).
    change(listener(&[up1, up2, silent, dead], r#"protocol = "tcp""#));
    reached(&["in", "in", "in", "out"]);
    let check = cluster()["health_check"].clone();
    assert_eq!(
        (&check["protocol"], &check["path"]),
        (&serde_json::json!("tcp"), &serde_json::Value::Null)
    );
}

/// The port of a listener that accepts connections and never answers on them (it holds
/// up to 1,000 of them, unread, for the rest of the test).
fn mute_listener() -> u16 {
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = mute.incoming().take(1000).collect();
        drop(held);
    });
    port
}

/// A new health-checked cluster is warmed before its snapshot is swapped in (as Envoy
/// warms a new cluster): the version that adds it becomes current only once the first
/// checks of its endpoints are done (the mute one's takes its 3 s timeout), so a dead
/// endpoint and a mute one are out from the first request, and every request goes to the
/// live one. Without warming the version would be current at once, with the mute
/// endpoint pending.
#[test]
fn a_new_checked_cluster_starts_with_its_first_checks_done() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let dead = free_port();
    let silent = mute_listener();
    let up2 = stack.ports.up2;
    let asked = std::time::Instant::now();
    let addr = stack.add_listener(
        "warmed",
        &format!("127.0.0.1:{port}"),
        &format!(
            "routes = [\"warmed\"]\n\n\
             [[routes]]\nname = \"warmed\"\ncluster = \"new\"\n\n\
             [[clusters]]\nname = \"new\"\n\
             endpoints = [\"127.0.0.1:{dead}\", \"127.0.0.1:{silent}\", \"127.0.0.1:{up2}\"]\n\
             health_check = {{ path = \"/who\", interval_ms = 20000, timeout_ms = 3000 }}\n"
        ),
        port,
    );
    let took = asked.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "the version was current after {took:?}, before the mute endpoint's check ended"
    );
    // Read at once: nothing is pending.
    let listed = curl(&["-s", &stack.dp_admin("/clusters")]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let health: Vec<&str> = listed["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "new")
        .unwrap()["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["health"].as_str().unwrap())
        .collect();
    assert_eq!(health, ["out", "out", "in"]);
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for _ in 0..20 {
        let got = exchange(&mut conn, "GET /who HTTP/1.1\r\nhost: a\r\n\r\n", |got| {
            got.ends_with(b"one\n") || got.ends_with(b"two\n")
        });
        assert!(
            got.starts_with("HTTP/1.1 200 ") && got.ends_with("two\n"),
            "{got}"
        );
    }
    assert_eq!(
        stack.dp_metric("omnirelay_upstream_connect_failures_total{cluster=\"new\"}"),
        Some(0.0),
        "a request was sent to the dead endpoint"
    );
    // The warming checks are counted (the next ones come within the 20 s interval).
    let checks = |result: &str| {
        stack
            .dp_metric(&format!(
                "omnirelay_health_checks_total{{cluster=\"new\",result=\"{result}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert!(
        checks("passed") >= 1.0 && checks("failed") >= 2.0,
        "{} passed, {} failed",
        checks("passed"),
        checks("failed")
    );
}

/// A cluster's `health_check` takes out the endpoints that fail it, and requests go to
/// the others: up1 answers the check's path `/flaky` with 503 (out at once), a dead
/// address refuses connections (out after two checks), up2 passes. With the path changed
/// to one up1 passes, up1 comes back (the dead one stays out, never tried by a request).
#[test]
fn endpoints_failing_their_health_checks_get_no_requests() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let dead = free_port();
    let (up1, up2) = (stack.ports.up1, stack.ports.up2);
    let listener = |check_path: &str| {
        format!(
            "routes = [\"checked\"]\n\n\
             [[routes]]\nname = \"checked\"\ncluster = \"both\"\n\n\
             [[clusters]]\nname = \"both\"\n\
             endpoints = [\"127.0.0.1:{up1}\", \"127.0.0.1:{up2}\", \"127.0.0.1:{dead}\"]\n\
             health_check = {{ path = \"{check_path}\", interval_ms = 100, timeout_ms = 100, \
             unhealthy_threshold = 2, healthy_threshold = 1 }}\n"
        )
    };
    let addr = stack.add_listener(
        "checked",
        &format!("127.0.0.1:{port}"),
        &listener("/flaky"),
        port,
    );
    let unhealthy = || stack.dp_metric("omnirelay_upstream_endpoints_unhealthy{cluster=\"both\"}");
    let wait_unhealthy = |n: f64| {
        assert!(
            omnirelay_test_support::process::wait_until(std::time::Duration::from_secs(10), || {
                unhealthy() == Some(n)
            }),
            "{:?} endpoints out, expected {n}",
            unhealthy()
        );
    };
    wait_unhealthy(2.0);
    let answers = |n: usize| {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        (0..n)
            .map(|_| {
                let got = exchange(&mut conn, "GET /who HTTP/1.1\r\nhost: a\r\n\r\n", |got| {
                    got.ends_with(b"one\n") || got.ends_with(b"two\n")
                });
                assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
                got.ends_with("one\n")
            })
            .collect::<Vec<bool>>()
    };
    assert!(
        answers(20).iter().all(|&one| !one),
        "a request went to an endpoint out"
    );
    // The admin API names the endpoints out (once their first checks are done).
    let health = || {
        let listed = curl(&["-s", &stack.dp_admin("/clusters")]);
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let both = listed["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "both")
            .cloned()
            .unwrap();
        assert_eq!(both["health_checked"], true);
        both["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let port = e["address"].as_str().unwrap().rsplit(':').next().unwrap();
                (port.to_owned(), e["health"].as_str().unwrap().to_owned())
            })
            .collect::<Vec<(String, String)>>()
    };
    let want = [
        (up1.to_string(), "out".to_owned()),
        (up2.to_string(), "in".to_owned()),
        (dead.to_string(), "out".to_owned()),
    ];
    let wait = std::time::Duration::from_secs(10);
    assert!(
        omnirelay_test_support::process::wait_until(wait, || health() == want),
        "{:?}",
        health()
    );
    let failed = || {
        stack
            .dp_metric("omnirelay_health_checks_total{cluster=\"both\",result=\"failed\"}")
            .unwrap_or(0.0)
    };
    assert!(
        omnirelay_test_support::process::wait_until(wait, || failed() >= 3.0),
        "{} failed checks",
        failed()
    );

    // The check changes: up1 passes it and comes back; the dead address stays out.
    let v = stack.dp_version();
    write_config(
        &stack.config_path,
        &format!(
            "{}\n[[listeners]]\nname = \"checked\"\naddress = \"127.0.0.1:{port}\"\n{}",
            common::config(&stack.ports, "one"),
            listener("/who")
        ),
    );
    stack.wait_dp_version_above(v);
    wait_unhealthy(1.0);
    let seen = answers(40);
    assert!(
        seen.iter().any(|&one| one) && seen.iter().any(|&one| !one),
        "{seen:?}"
    );
    assert_eq!(
        stack.dp_metric("omnirelay_upstream_connect_failures_total{cluster=\"both\"}"),
        Some(0.0),
        "a request was sent to the dead endpoint"
    );

    // Without the check, the checks stop and no endpoint is out.
    let v = stack.dp_version();
    let unchecked = listener("/who").replace("health_check", "# health_check");
    write_config(
        &stack.config_path,
        &format!(
            "{}\n[[listeners]]\nname = \"checked\"\naddress = \"127.0.0.1:{port}\"\n{unchecked}",
            common::config(&stack.ports, "one"),
        ),
    );
    stack.wait_dp_version_above(v);
    assert_eq!(
        unhealthy(),
        None,
        "no health is kept for an unchecked cluster"
    );
    let checks = || {
        ["passed", "failed"].map(|r| {
            stack.dp_metric(&format!(
                "omnirelay_health_checks_total{{cluster=\"both\",result=\"{r}\"}}"
            ))
        })
    };
    // A check under way when the version changed may still finish and count.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = checks();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        checks(),
        before,
        "checks went on after the check was removed"
    );
}

/// A route's `rate_limit` is one budget over all workers and clients: a burst of 3 at 1
/// a second lets 3 quick requests on 8 connections through (not 3 per worker) and
/// answers the rest 429, counted per route.
#[test]
fn a_route_over_its_rate_limit_answers_429() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    let port = free_port();
    let extra = "routes = [\"limited\"]\n\n\
         [[routes]]\nname = \"limited\"\ncluster = \"one\"\n\
         rate_limit = { requests_per_second = 1, burst = 3 }\n";
    let addr = stack.add_listener("limited", &format!("127.0.0.1:{port}"), extra, port);
    // One request on each of 8 connections (the kernel spreads them over the workers).
    let statuses: Vec<String> = (0..8)
        .map(|_| {
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            let got = exchange(&mut conn, "GET /who HTTP/1.1\r\nhost: a\r\n\r\n", |got| {
                got.ends_with(b"one\n") || got.ends_with(b"taken\n")
            });
            got.split(' ').nth(1).unwrap_or("none").to_owned()
        })
        .collect();
    let ok = statuses.iter().filter(|s| *s == "200").count();
    let limited = statuses.iter().filter(|s| *s == "429").count();
    // 3 at once, and one more if a second passed meanwhile.
    assert!((3..=4).contains(&ok) && ok + limited == 8, "{statuses:?}");
    assert_eq!(&statuses[..3], ["200", "200", "200"], "{statuses:?}");
    assert_eq!(
        stack.dp_metric("omnirelay_route_rate_limited_total{route=\"limited\"}"),
        Some(limited as f64)
    );
}
