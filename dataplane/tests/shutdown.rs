//! Graceful shutdown of the data plane: SIGTERM (or SIGINT) stops new connections, closes
//! idle ones, lets open requests finish (their responses say `connection: close`), flushes
//! the access log and exits 0; `--drain-timeout` bounds it, and a second signal ends it at
//! once.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io::Read as _,
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{Stack, curl, exchange};
use nix::sys::signal::Signal;
use omnirelay_test_support::{Capability, process::wait_until, require_caps};

/// Client connections the data plane holds, over its two workers.
fn open_connections(stack: &Stack) -> f64 {
    (0..2)
        .filter_map(|w| stack.dp_metric(&format!("omnirelay_worker_connections{{worker=\"{w}\"}}")))
        .sum()
}

/// A request to `/stall` (answered after 5 s) in flight through the proxy: the thread
/// returns the whole response as curl saw it (`-i`: with the head).
fn stalled_request(stack: &Stack) -> std::thread::JoinHandle<String> {
    let url = stack.url("/stall");
    let before = open_connections(stack);
    let request = std::thread::spawn(move || {
        let out = curl(&["-s", "-i", "--max-time", "20", &url]);
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    });
    assert!(
        wait_until(Duration::from_secs(5), || open_connections(stack) > before),
        "the request did not reach the proxy"
    );
    request
}

/// Writes a GET of `path` on `conn` and reads the response to its end (the proxy closes
/// the connection after it); the response, lower-cased.
fn get_to_close(conn: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    exchange(conn, &request, |_| false).to_ascii_lowercase()
}

/// An idle keep-alive connection: one request served on it.
fn idle_connection(stack: &Stack) -> TcpStream {
    let mut conn = TcpStream::connect(stack.proxy()).unwrap();
    let request = "GET /who HTTP/1.1\r\nHost: t\r\n\r\n";
    let got = exchange(&mut conn, request, |got| got.ends_with(b"one\n"));
    assert!(got.ends_with("one\n"), "closed before the response: {got}");
    conn
}

#[test]
fn sigterm_lets_open_requests_finish_closes_idle_connections_and_exits() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut stack = Stack::start();
    let mut idle = idle_connection(&stack);
    let stalled = stalled_request(&stack);
    // Accepted, its first request not sent yet when the drain starts.
    let before = open_connections(&stack);
    let mut fresh = TcpStream::connect(stack.proxy()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || open_connections(
        &stack
    ) > before));

    stack.dataplane.signal(Signal::SIGTERM);
    // The idle connection is closed at once (well before the stalled request ends).
    let mut buf = [0u8; 64];
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the idle connection stays open"
    );
    // A load balancer probing health sees the drain; new connections are refused.
    let health = curl(&["-s", "-w", " %{http_code}", &stack.dp_admin("/healthz")]);
    assert_eq!(String::from_utf8_lossy(&health.stdout), "draining\n 503");
    assert!(
        wait_until(Duration::from_secs(2), || TcpStream::connect(stack.proxy())
            .is_err()),
        "still accepting new connections"
    );
    // The connection accepted before the drain gets its first request served (a client
    // would not retry it), told that the connection ends with it.
    let response = get_to_close(&mut fresh, "/who");
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
    // The open request gets its answer, told that the connection ends with it.
    let response = stalled.join().unwrap();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nlate\n"), "{response}");
    // Then the process exits by itself, successfully, its access log flushed.
    let status = stack.dataplane.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        stack.dataplane.log()
    );
    let log = std::fs::read_to_string(stack.dir.path().join("access.log")).unwrap();
    assert!(log.contains("\"path\":\"/stall\""), "{log}");
    assert!(
        stack
            .dataplane
            .log()
            .contains("drained: every connection closed")
    );
}

#[test]
fn the_drain_timeout_and_a_second_signal_cut_open_requests() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    // --drain-timeout 1: the request, answered after 5 s, is cut at about 1 s.
    let mut stack = Stack::start_with_args(&["--drain-timeout", "1"]);
    let stalled = stalled_request(&stack);
    let signalled = Instant::now();
    stack.dataplane.signal(Signal::SIGTERM);
    let status = stack.dataplane.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited {took:?} after the signal"
    );
    assert!(!stalled.join().unwrap().contains("late"));
    assert!(stack.dataplane.log().contains("drain timeout: stopping"));

    // A second signal during the (default, 30 s) drain stops it at once.
    let mut stack = Stack::start();
    let stalled = stalled_request(&stack);
    stack.dataplane.signal(Signal::SIGINT);
    assert!(
        stack
            .dataplane
            .wait_for_log("draining", Duration::from_secs(2))
    );
    stack.dataplane.signal(Signal::SIGTERM);
    let status = stack.dataplane.wait_exit(Duration::from_secs(3));
    assert!(status.is_some(), "still running after a second signal");
    assert!(!stalled.join().unwrap().contains("late"));
    assert!(
        stack
            .dataplane
            .log()
            .contains("second signal: stopping now")
    );
}

/// `--drain-delay-ms`: after the signal `/healthz` fails at once while new connections are
/// still accepted and served (each response closing its connection), so that a load
/// balancer's health checks take the data plane out of rotation before its listeners
/// close.
#[test]
fn health_checks_fail_before_the_listeners_close() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut stack = Stack::start_with_args(&["--drain-delay-ms", "1500"]);
    let signalled = Instant::now();
    stack.dataplane.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(1), || {
            let health = curl(&["-s", "-w", " %{http_code}", &stack.dp_admin("/healthz")]);
            String::from_utf8_lossy(&health.stdout) == "draining\n 503"
        }),
        "/healthz still passes"
    );
    let mut conn = TcpStream::connect(stack.proxy()).unwrap();
    let response = get_to_close(&mut conn, "/who");
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "too slow to tell"
    );
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect(stack.proxy())
            .is_err()),
        "still accepting after the delay"
    );
    assert!(signalled.elapsed() >= Duration::from_millis(1400));
    let status = stack.dataplane.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// After a log rotation renames the access log, SIGUSR1 has the data plane write to a new
/// file at the path (as nginx does); SIGHUP neither stops it nor loses anything.
#[test]
fn sigusr1_reopens_the_access_log_and_sighup_is_ignored() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let log = stack.dir.path().join("access.log");
    let rotated = stack.dir.path().join("access.log.1");
    assert_eq!(common::get(&stack.url("/whofirst")).0, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/whofirst"))
    }));
    std::fs::rename(&log, &rotated).unwrap();
    stack.dataplane.signal(Signal::SIGUSR1);
    assert!(
        stack
            .dataplane
            .wait_for_log("SIGUSR1", Duration::from_secs(5))
    );
    stack.dataplane.signal(Signal::SIGHUP);
    assert!(
        stack
            .dataplane
            .wait_for_log("SIGHUP ignored", Duration::from_secs(5))
    );
    assert_eq!(common::get(&stack.url("/whosecond")).0, 200);
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/whosecond"))
        }),
        "no new access log at the path"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("/whofirst") && !old.contains("/whosecond"),
        "{old}"
    );
}
