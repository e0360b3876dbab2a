//! The XDP counter, end to end on a real kernel: loaded through aya, attached to one end of
//! a veth pair in a network namespace this test creates, fed known traffic from a second
//! namespace, and its counters read back. Runs as root; elsewhere it prints a skip line.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use omnirelay_control::kernel::{AttachMode, ClassCounters, XdpCounter};
use omnirelay_ebpf_common::TrafficClass;
use omnirelay_test_support::{
    Capability, NetNs, VethPair,
    process::{ChildGuard, TempDir, wait_until},
    require_caps,
};

/// UDP payload size of each test datagram.
const PAYLOAD: usize = 100;
/// Ethernet + IPv4 + UDP headers.
const HEADERS: u64 = 14 + 20 + 8;

/// Polls the counters (bounded in time) until `done` holds or `timeout` passes.
fn wait_counters(
    counter: &XdpCounter,
    timeout: Duration,
    done: impl Fn(&ClassCounters) -> bool,
) -> ClassCounters {
    let deadline = Instant::now() + timeout;
    loop {
        let now = counter.read().expect("read counters");
        if done(&now) || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_udp(ns: &NetNs, to: std::net::SocketAddr, count: usize) {
    ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let payload = [0xabu8; PAYLOAD];
        for _ in 0..count {
            sock.send_to(&payload, to).expect("send");
        }
    })
    .expect("enter client namespace");
}

#[test]
fn xdp_counter_counts_exactly_the_packets_sent_over_a_veth() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let client = NetNs::new("xc").unwrap();
    let server = NetNs::new("xs").unwrap();
    let pair = VethPair::new(&client, &server).unwrap();

    let counter = server
        .run(|| XdpCounter::attach(&pair.b.ifname, AttachMode::Generic))
        .unwrap()
        .expect("attach XDP counter");

    // The kernel's own view: the interface carries a generic XDP program.
    let link = server.ip(&["-d", "link", "show", &pair.b.ifname]).unwrap();
    assert!(
        link.contains("xdpgeneric"),
        "no XDP program on {}: {link}",
        pair.b.ifname
    );

    // One datagram first, so neighbour resolution (ARP) is done before the measured burst.
    let target = std::net::SocketAddr::from((pair.b.ipv4, 9));
    send_udp(&client, target, 1);
    let warm = wait_counters(&counter, Duration::from_secs(5), |c| {
        c.get(TrafficClass::Ipv4).packets >= 1
    });
    assert_eq!(
        warm.get(TrafficClass::Ipv4).packets,
        1,
        "warm-up datagram not counted"
    );
    assert!(
        warm.get(TrafficClass::Arp).packets >= 1,
        "ARP request not classified: {warm:?}"
    );

    const BURST: u64 = 500;
    send_udp(&client, target, BURST as usize);
    let after = wait_counters(&counter, Duration::from_secs(5), |c| {
        c.since(&warm).get(TrafficClass::Ipv4).packets >= BURST
    });
    let delta = after.since(&warm).get(TrafficClass::Ipv4);
    assert_eq!(delta.packets, BURST, "counted {delta:?}");
    assert_eq!(delta.bytes, BURST * (HEADERS + PAYLOAD as u64));
    assert_eq!(after.get(TrafficClass::Malformed).packets, 0);

    // Dropping the counter detaches the program.
    drop(counter);
    let link = server.ip(&["-d", "link", "show", &pair.b.ifname]).unwrap();
    assert!(
        !link.contains("xdpgeneric"),
        "XDP program still attached after drop: {link}"
    );
}

#[test]
fn attach_to_a_missing_interface_names_it_in_the_error() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::BpfSyscall);
    let ns = NetNs::new("xm").unwrap();
    let err = ns
        .run(|| XdpCounter::attach("no-such-if0", AttachMode::Generic))
        .unwrap()
        .expect_err("attach to a missing interface must fail");
    let text = err.to_string();
    assert!(text.contains("no-such-if0"), "{text}");
    assert!(text.contains("generic"), "{text}");
}

#[test]
fn native_mode_on_veth_without_support_is_an_error_not_a_fallback() {
    // veth supports native XDP only when the peer has XDP or GRO set up; on a fresh pair the
    // kernel may accept or refuse it. Either way the outcome must be explicit: attached in
    // exactly the requested mode, or an error naming interface and mode.
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let (a, b) = (NetNs::new("na").unwrap(), NetNs::new("nb").unwrap());
    let pair = VethPair::new(&a, &b).unwrap();
    let result = b
        .run(|| XdpCounter::attach(&pair.b.ifname, AttachMode::Native))
        .unwrap();
    let link = b.ip(&["-d", "link", "show", &pair.b.ifname]).unwrap();
    match result {
        Ok(counter) => {
            assert_eq!(counter.mode(), AttachMode::Native);
            assert!(link.contains("xdp ") || link.contains("xdpdrv"), "{link}");
            assert!(!link.contains("xdpgeneric"), "fell back to generic: {link}");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&pair.b.ifname) && text.contains("native"),
                "{text}"
            );
            assert!(
                !link.contains("xdp"),
                "something attached despite the error: {link}"
            );
        }
    }
}

/// aya-log records written by the XDP program reach the daemon's `tracing` output. Checked
/// through the real binary (its own process, its own subscriber), which is also what an
/// operator sees: `omnirelay-control xdp-count` on a veth in a namespace.
#[test]
fn aya_log_records_reach_the_daemons_tracing_output() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    // Built next to this test; the VM harness puts it in the guest's PATH instead.
    let built = std::path::PathBuf::from(env!("CARGO_BIN_EXE_omnirelay-control"));
    let Some(bin) = Some(built.clone())
        .filter(|p| p.exists())
        .or_else(|| omnirelay_test_support::caps::find_in_path("omnirelay-control"))
    else {
        omnirelay_test_support::skip::report(&format!(
            "needs the omnirelay-control binary ({} or in PATH)",
            built.display()
        ));
        return;
    };
    let client = NetNs::new("lc").unwrap();
    let server = NetNs::new("ls").unwrap();
    let pair = VethPair::new(&client, &server).unwrap();
    let dir = TempDir::new("xdp-log");
    let mut cmd = server.command(bin.to_str().unwrap());
    cmd.args([
        "xdp-count",
        "--iface",
        &pair.b.ifname,
        "--interval",
        "0.2",
        "--duration",
        "8",
    ])
    .env("RUST_LOG", "info");
    let daemon = ChildGuard::spawn(
        "omnirelay-control xdp-count",
        cmd,
        &dir.path().join("out.log"),
    )
    .unwrap();
    assert!(
        daemon.wait_for_log("XDP program attached", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );

    send_udp(&client, std::net::SocketAddr::from((pair.b.ipv4, 9)), 50);
    assert!(
        daemon.wait_for_log("first ipv4 packet on this cpu", Duration::from_secs(5)),
        "no aya-log record in the daemon's output:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("first ipv4 packet"))
        .unwrap();
    assert!(
        line.contains("omnirelay::ebpf"),
        "not under the ebpf target: {line}"
    );
    assert!(line.contains("program=\"xdp_counter\""), "{line}");
    // The printed counter table sees the datagrams too.
    assert!(
        wait_until(Duration::from_secs(5), || daemon
            .log()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .any(|ipv4| ipv4 >= 50)),
        "{}",
        daemon.log()
    );
}
