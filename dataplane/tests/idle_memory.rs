//! Resident memory per idle keep-alive client connection, measured on the real data plane:
//! N connections each send one request, read the answer and stay open; the data plane's
//! VmRSS is compared with what it was just before. Ignored by default (it opens thousands
//! of sockets and prints a number rather than checking one); run it with
//! `cargo test --release -p omnirelay-dataplane --test idle_memory -- --ignored --nocapture`
//! (`OMNIRELAY_IDLE_CONNS` sets N, default 5000). `cargo xtask bench http1-keepalive`
//! measures the same against nginx, haproxy and Envoy.

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

use common::Stack;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "a measurement: opens thousands of sockets and prints KiB per idle connection"]
fn resident_memory_per_idle_keep_alive_connection() {
    let n: usize = std::env::var("OMNIRELAY_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let stack = Stack::start();
    let pid = stack.dataplane.pid();
    // Warm up: the workers' buffer pools and the snapshot caches fill on first use.
    for _ in 0..50 {
        let (code, _) = common::get(&stack.url("/who"));
        assert_eq!(code, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    let mut buf = [0u8; 512];
    for _ in 0..n {
        let mut s = TcpStream::connect(stack.proxy()).unwrap();
        s.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let got = s.read(&mut buf).unwrap();
        assert!(buf[..got].starts_with(b"HTTP/1.1 200"));
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let with = rss_kib(pid);
    let per_conn = (with as f64 - before as f64) / n as f64;
    println!(
        "data plane RSS {before} KiB before, {with} KiB with {n} idle connections: \
         {per_conn:.3} KiB per idle connection"
    );
    drop(conns);
}
