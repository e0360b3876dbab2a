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
use omnirelay_test_support::{Capability, NetNs, VethPair, require_caps, trace::CapturedEvents};

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
    let (events, dispatch) = CapturedEvents::new();

    let counter = server
        .run(|| {
            tracing::dispatcher::with_default(&dispatch, || {
                XdpCounter::attach(&pair.b.ifname, AttachMode::Generic)
            })
        })
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

    // aya-log records from the program reach tracing in userspace.
    let logged = events.wait_for(
        "omnirelay::ebpf",
        "first ipv4 packet on this cpu",
        Duration::from_secs(5),
    );
    assert!(
        logged.is_some(),
        "no eBPF log event; got {:?}",
        events.all()
    );

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
