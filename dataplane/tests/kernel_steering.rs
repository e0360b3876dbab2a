//! Kernel steering end to end: the control daemon (with `[kernel] steering = true`) pins the
//! `sk_reuseport` program; a 2-worker data plane registers its sockets and attaches it.
//! New connections are spread over both workers; weight 0 on worker 1 sends every new
//! connection to worker 0 while worker 1's open connections keep being served; a listener
//! the configuration adds at run time is steered by the same weights, and a removed one
//! releases its place. Counted per worker from the data plane's /metrics. Runs as root;
//! elsewhere it prints a skip line.

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

use aya::maps::{HashMap, Map, MapData};
use common::{Ports, curl, nginx_servers, start_control, start_dataplane, write_config};
use omnirelay_ebpf_common::{
    limiter::{MAX_WORKERS, SteerPort},
    names::STEER_PORTS_MAP,
};
use omnirelay_test_support::{
    Capability,
    nginx::Nginx,
    process::{TempDir, free_port, wait_until},
    require_caps,
};

fn worker_conns(ports: &Ports, worker: usize) -> f64 {
    let out = curl(&[
        "-s",
        &format!("http://127.0.0.1:{}/metrics", ports.dp_admin),
    ]);
    common::metric(
        &String::from_utf8_lossy(&out.stdout),
        &format!("omnirelay_worker_connections{{worker=\"{worker}\"}}"),
    )
    .unwrap_or(-1.0)
}

fn kernel_version(ports: &Ports) -> u64 {
    let out = curl(&[
        "-s",
        &format!("http://127.0.0.1:{}/control/snapshot", ports.control_admin),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["kernel_version"].as_u64().unwrap_or(0)
}

/// The pinned port map the data plane writes.
fn ports_map(pin_dir: &str) -> HashMap<MapData, u32, SteerPort> {
    let path = std::path::Path::new(pin_dir)
        .join("maps")
        .join(STEER_PORTS_MAP);
    HashMap::try_from(Map::HashMap(MapData::from_pin(path).unwrap())).unwrap()
}

fn open(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect()
}

/// One keep-alive request on an already open connection; true on a 200.
fn request_ok(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"one\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

#[test]
fn steering_spreads_new_connections_and_weight_zero_drains_a_worker() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let ports = Ports::new();
    let _nginx = Nginx::start(&nginx_servers(&ports), &[ports.up1, ports.up2]).unwrap();
    let dir = TempDir::new("steer");
    let pin_dir = format!("/sys/fs/bpf/omnirelay-test-{}-steer", std::process::id());
    let _ = std::fs::remove_dir_all(&pin_dir);
    let base = common::config(&ports, "one");
    let with_weights = |w: &str| {
        format!(
            "{base}\n[kernel]\nsteering = true\npin_dir = \"{pin_dir}\"\nworker_weights = {w}\n"
        )
    };
    let config_path = dir.path().join("omnirelay.toml");
    std::fs::write(&config_path, with_weights("[1, 1]")).unwrap();
    let control = start_control(&dir, &config_path, &ports);
    assert!(
        control.wait_for_log("kernel limiter running", Duration::from_secs(15)),
        "{}",
        control.log()
    );
    // A port entry a previous data plane left behind goes when this one starts.
    let stale_port = 1u32;
    ports_map(&pin_dir)
        .insert(
            stale_port,
            SteerPort {
                base: 5 * MAX_WORKERS,
                workers: 2,
            },
            0,
        )
        .unwrap();
    let dataplane = start_dataplane(&dir, &ports, &["--steering-pin-dir", &pin_dir]);
    assert!(
        dataplane.log().contains("registered for kernel steering"),
        "{}",
        dataplane.log()
    );

    let steered: Vec<u32> = ports_map(&pin_dir).keys().map(Result::unwrap).collect();
    assert_eq!(steered, [u32::from(ports.proxy)], "the steering port map");

    let mut first = open(ports.proxy, 200);
    assert!(
        wait_until(Duration::from_secs(5), || worker_conns(&ports, 0)
            + worker_conns(&ports, 1)
            == 200.0),
        "connections not all accepted"
    );
    let (w0, w1) = (worker_conns(&ports, 0), worker_conns(&ports, 1));
    assert!(
        w0 >= 50.0 && w1 >= 50.0,
        "equal weights should spread 200 connections: worker 0 has {w0}, worker 1 has {w1}"
    );

    // Drain worker 1.
    let before = kernel_version(&ports);
    write_config(&config_path, &with_weights("[1, 0]"));
    assert!(
        wait_until(Duration::from_secs(5), || kernel_version(&ports) > before),
        "the control daemon did not write the new weights:\n{}",
        control.log()
    );
    let second = open(ports.proxy, 100);
    assert!(wait_until(Duration::from_secs(5), || {
        worker_conns(&ports, 0) + worker_conns(&ports, 1) == 300.0
    }));
    assert_eq!(
        worker_conns(&ports, 1),
        w1,
        "a drained worker received new connections"
    );
    assert_eq!(worker_conns(&ports, 0), w0 + 100.0);

    // Worker 1's open connections still serve requests.
    let mut served = 0;
    for c in &mut first {
        served += usize::from(request_ok(c));
    }
    assert_eq!(
        served, 200,
        "open connections stopped being served after the drain"
    );

    // A listener added at run time is registered by both workers and steered by the same
    // weights: without that, the kernel's hash would give worker 1 about half of these.
    let port = free_port();
    let listener = format!("\n[[listeners]]\nname = \"added\"\naddress = \"127.0.0.1:{port}\"\n");
    let with_added = |w: &str| format!("{}{listener}", with_weights(w));
    write_config(&config_path, &with_added("[1, 0]"));
    let registered = format!("127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(10), || dataplane.log().lines().any(
            |l| l.contains("registered for kernel steering") && l.contains(&registered)
        )),
        "the added listener was not registered for steering:\n{}",
        dataplane.log()
    );
    let third = open(port, 100);
    assert!(wait_until(Duration::from_secs(5), || {
        worker_conns(&ports, 0) + worker_conns(&ports, 1) == 400.0
    }));
    assert_eq!(
        worker_conns(&ports, 1),
        w1,
        "the drained worker received connections of the added listener"
    );
    assert_eq!(worker_conns(&ports, 0), w0 + 200.0);

    // Removed, it stops accepting; added again (now with equal weights), it takes a block
    // of the socket array again and both workers get its connections.
    drop(third);
    write_config(&config_path, &with_weights("[1, 0]"));
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "the removed listener still accepts:\n{}",
        dataplane.log()
    );
    let before = kernel_version(&ports);
    write_config(&config_path, &with_added("[1, 1]"));
    assert!(
        wait_until(Duration::from_secs(10), || kernel_version(&ports) > before
            && dataplane
                .log()
                .lines()
                .filter(|l| l.contains("registered for kernel steering") && l.contains(&registered))
                .count()
                == 2),
        "the listener added again was not registered for steering:\n{}",
        dataplane.log()
    );
    let (a0, a1) = (worker_conns(&ports, 0), worker_conns(&ports, 1));
    let fourth = open(port, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        worker_conns(&ports, 0) + worker_conns(&ports, 1) == a0 + a1 + 200.0
    }));
    let (b0, b1) = (worker_conns(&ports, 0) - a0, worker_conns(&ports, 1) - a1);
    assert!(
        b0 >= 50.0 && b1 >= 50.0,
        "equal weights should spread the added listener's 200 connections: worker 0 got {b0}, worker 1 got {b1}"
    );
    drop((second, fourth));
    let _ = std::fs::remove_dir_all(&pin_dir);
}
