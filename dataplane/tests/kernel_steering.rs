//! Kernel steering end to end: the control daemon (with `[kernel] steering = true`) pins the
//! `sk_reuseport` program; a 2-worker data plane registers its sockets and attaches it.
//! New connections are spread over both workers; weight 0 on worker 1 sends every new
//! connection to worker 0 while worker 1's open connections keep being served; a listener
//! the configuration adds at run time is steered by the same weights, and so is a second
//! one on the same port at another address; a removed one leaves the port map, and added
//! again it is steered again, as is one on IPv6 loopback. Counted per worker from the data plane's /metrics. Runs as root;
//! elsewhere it prints a skip line.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use common::{Ports, curl, nginx_servers, start_control, start_dataplane, write_config};
use omnirelay_ebpf_common::{
    limiter::{MAX_WORKERS, SteerKey, SteerPort},
    names::STEER_PORTS_MAP,
};
use omnirelay_test_support::{
    Capability,
    nginx::Nginx,
    process::{ChildGuard, TempDir, free_port, wait_until},
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
fn ports_map(pin_dir: &str) -> HashMap<MapData, SteerKey, SteerPort> {
    let path = std::path::Path::new(pin_dir)
        .join("maps")
        .join(STEER_PORTS_MAP);
    HashMap::try_from(Map::HashMap(MapData::from_pin(path).unwrap())).unwrap()
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
    ports_map(&pin_dir)
        .insert(
            SteerKey::from(SocketAddr::from(([127, 0, 0, 1], 1))),
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

    let main_addr = format!("127.0.0.1:{}", ports.proxy);
    assert_eq!(
        steered(&pin_dir),
        set(&[&main_addr]),
        "the steering port map"
    );

    let main = ("127.0.0.1", ports.proxy);
    let (mut first, [w0, w1]) = connect_counted(&ports, main, 200);
    assert!(
        w0 >= 50.0 && w1 >= 50.0,
        "equal weights should spread 200 connections: worker 0 has {w0}, worker 1 has {w1}"
    );

    // Drain worker 1.
    write_weights(&config_path, &with_weights("[1, 0]"), &ports, &control);
    let (second, got) = connect_counted(&ports, main, 100);
    assert_eq!(
        got,
        [100.0, 0.0],
        "a drained worker received new connections"
    );

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
    let listener = |name: &str, address: &str| {
        format!("\n[[listeners]]\nname = \"{name}\"\naddress = \"{address}\"\n")
    };
    let at = |ip: &str| listener(&format!("added-{ip}"), &format!("{ip}:{port}"));
    let added = |ip: &str, w: &str| format!("{}{}", with_weights(w), at(ip));
    let (one, two) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    write_config(&config_path, &added("127.0.0.1", "[1, 0]"));
    wait_registered(&dataplane, &one, 1);
    let (third, got) = connect_counted(&ports, ("127.0.0.1", port), 100);
    assert_eq!(
        got,
        [100.0, 0.0],
        "the added listener's connections per worker"
    );
    assert_eq!(steered(&pin_dir), set(&[&main_addr, &one]));

    // A second listener on the same port at another address, beside the first: its own
    // SO_REUSEPORT group and its own entry, steered as well.
    write_config(
        &config_path,
        &format!("{}{}", added("127.0.0.1", "[1, 0]"), at("127.0.0.2")),
    );
    wait_registered(&dataplane, &two, 1);
    let (fourth, got) = connect_counted(&ports, ("127.0.0.2", port), 100);
    assert_eq!(
        got,
        [100.0, 0.0],
        "the second listener's connections per worker"
    );
    assert_eq!(steered(&pin_dir), set(&[&main_addr, &one, &two]));

    // Both removed: they stop accepting and leave the map.
    drop((third, fourth));
    write_config(&config_path, &with_weights("[1, 0]"));
    for ip in ["127.0.0.1", "127.0.0.2"] {
        assert!(
            wait_until(Duration::from_secs(5), || TcpStream::connect((ip, port))
                .is_err()),
            "the removed listener on {ip} still accepts:\n{}",
            dataplane.log()
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || steered(&pin_dir)
            == set(&[&main_addr])),
        "the removed listeners stayed in the steering map: {:?}",
        steered(&pin_dir)
    );

    // Added again, now with worker 0 drained, and beside it one on IPv6 loopback: each
    // takes a block and only worker 1 gets their connections.
    let six = format!("[::1]:{port}");
    let with_v6 = added("127.0.0.1", "[0, 1]") + &listener("added-v6", &six);
    write_weights(&config_path, &with_v6, &ports, &control);
    wait_registered(&dataplane, &one, 2);
    wait_registered(&dataplane, &six, 1);
    let (fifth, got) = connect_counted(&ports, ("127.0.0.1", port), 100);
    assert_eq!(
        got,
        [0.0, 100.0],
        "the re-added listener's connections per worker"
    );
    let (sixth, got) = connect_counted(&ports, ("::1", port), 100);
    assert_eq!(
        got,
        [0.0, 100.0],
        "the IPv6 listener's connections per worker"
    );
    assert_eq!(steered(&pin_dir), set(&[&main_addr, &one, &six]));
    drop((second, fifth, sixth));
    let _ = std::fs::remove_dir_all(&pin_dir);
}

/// Writes `config`, whose worker weights differ from the running ones, and waits until
/// the control daemon has written them into the kernel maps.
fn write_weights(config_path: &std::path::Path, config: &str, ports: &Ports, control: &ChildGuard) {
    let before = kernel_version(ports);
    write_config(config_path, config);
    assert!(
        wait_until(Duration::from_secs(5), || kernel_version(ports) > before),
        "the control daemon did not write the new weights:\n{}",
        control.log()
    );
}

/// Waits until the data plane has logged the registration of `addr` `times` times.
fn wait_registered(dataplane: &ChildGuard, addr: &str, times: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || dataplane
            .log()
            .lines()
            .filter(|l| l.contains("registered for kernel steering") && l.contains(addr))
            .count()
            == times),
        "{addr} was not registered for steering (time {times}):\n{}",
        dataplane.log()
    );
}

/// Opens `n` connections to `to`, waits until the data plane has accepted them all, and
/// returns them with how many each worker got.
fn connect_counted(ports: &Ports, to: (&str, u16), n: usize) -> (Vec<TcpStream>, [f64; 2]) {
    let before = [worker_conns(ports, 0), worker_conns(ports, 1)];
    let conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(to).unwrap()).collect();
    assert!(
        wait_until(Duration::from_secs(5), || {
            worker_conns(ports, 0) + worker_conns(ports, 1) == before[0] + before[1] + n as f64
        }),
        "not every connection to {to:?} was accepted"
    );
    let got = [
        worker_conns(ports, 0) - before[0],
        worker_conns(ports, 1) - before[1],
    ];
    (conns, got)
}

/// The listeners in the steering port map (`address:port`).
fn steered(pin_dir: &str) -> BTreeSet<String> {
    ports_map(pin_dir)
        .keys()
        .map(|key| {
            let key = key.unwrap();
            SocketAddr::new(Ipv6Addr::from(key.addr).to_canonical(), key.port).to_string()
        })
        .collect()
}

fn set(listeners: &[&str]) -> BTreeSet<String> {
    listeners.iter().map(|l| l.to_string()).collect()
}
