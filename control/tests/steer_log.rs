//! aya-log records from the steering program reach the daemon's `tracing` log: a
//! reuseport group whose weights point at a worker slot with no registered socket makes
//! `steer_reuseport` log a warning (its only log line, on that fault path), and the
//! limiter's log pump turns it into a `tracing` event with target `omnirelay::ebpf`.
//! Runs as root; elsewhere it prints a skip line.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    net::{SocketAddr, TcpStream},
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use aya::{
    maps::{HashMap, Map, MapData, ReusePortSockArray},
    programs::{SkReuseport, sk_reuseport::SkReuseportAttachType},
};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
    sockopt::ReusePort,
};
use omnirelay_control::kernel::{KernelLimiter, KernelPlan, LimiterSettings, remove_pins};
use omnirelay_ebpf_common::limiter::{SteerKey, SteerPort, SteerWeights};
use omnirelay_test_support::{Capability, process::free_port, require_caps, trace::CapturedEvents};

fn reuseport_listener(addr: SocketAddr) -> OwnedFd {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, ReusePort, &true).unwrap();
    let SocketAddr::V4(v4) = addr else {
        unreachable!()
    };
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
    listen(&fd, Backlog::new(16).unwrap()).unwrap();
    fd
}

#[test]
fn a_steering_fault_is_logged_through_aya_log_into_tracing() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/omnirelay-test-{}-steerlog",
        std::process::id()
    ));
    let _ = remove_pins(&pin_dir);
    let (events, dispatch) = CapturedEvents::new();
    let mut limiter = tracing::dispatcher::with_default(&dispatch, || {
        KernelLimiter::start(LimiterSettings::unattached(&pin_dir, true)).unwrap()
    });
    // Worker 0 weighs nothing, worker 1 everything: every connection asks for slot 1.
    let mut weights = SteerWeights {
        stamp: 1,
        ..SteerWeights::default()
    };
    weights.weights[0] = 0;
    limiter
        .apply(&KernelPlan {
            version: 1,
            listeners: vec![],
            names: vec![],
            allow: vec![],
            deny: vec![],
            overrides: vec![],
            weights,
            drop_malformed: false,
        })
        .unwrap();

    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let worker0 = reuseport_listener(addr);
    let _worker1 = reuseport_listener(addr);
    let maps = pin_dir.join("maps");
    let mut sockets = ReusePortSockArray::try_from(Map::ReusePortSockArray(
        MapData::from_pin(maps.join("OR_STEER_SOCKETS")).unwrap(),
    ))
    .unwrap();
    let mut ports: HashMap<MapData, SteerKey, SteerPort> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(maps.join("OR_STEER_PORTS")).unwrap(),
    ))
    .unwrap();
    // Only worker 0's socket is registered: slot 1 is the fault.
    sockets.set(0, &worker0, 0).unwrap();
    ports
        .insert(
            SteerKey::from(addr),
            SteerPort {
                base: 0,
                workers: 2,
            },
            0,
        )
        .unwrap();
    let program = SkReuseport::from_pin(
        pin_dir.join("steer_reuseport"),
        SkReuseportAttachType::Select,
    )
    .unwrap();
    program.attach(worker0.as_fd()).unwrap();

    // The kernel falls back to its own hash: the connection still succeeds.
    let _conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    let event = events.wait_for(
        "omnirelay::ebpf",
        &format!("port {port} worker 1 has no registered socket"),
        Duration::from_secs(5),
    );
    let _ = remove_pins(&pin_dir);
    drop(limiter);
    let event = event.unwrap_or_else(|| panic!("no aya-log event; saw: {:?}", events.all()));
    assert!(event.text.contains("kernel hash used"), "{event:?}");
}
