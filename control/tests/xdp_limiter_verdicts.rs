//! The XDP limiter's verdicts on hand-built frames, run in the kernel with
//! `BPF_PROG_TEST_RUN` against live maps written from a real config: every parse path
//! (VLAN, IPv4, IPv6, TCP, UDP/QUIC, ICMP, fragments), the deny/allow lists, budgets,
//! overrides and the malformed-packet policy. Runs as root; elsewhere it prints a skip line.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{net::IpAddr, path::PathBuf};

use omnirelay_control::{
    config,
    kernel::{AttachMode, KernelLimiter, LimiterCounters, LimiterSettings, plan, remove_pins},
    snapshot::compile,
};
use omnirelay_ebpf_common::limiter::{
    Active, BucketSet, Reason, addr_words, bucket_hash, bucket_set, v4_mapped,
};
use omnirelay_test_support::{
    Capability,
    frames::{self, L4, QUIC_SHORT, QUIC_V1_INITIAL, tcp},
    require_caps,
};

const PASS: u32 = 2;
const DROP: u32 = 1;

const CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "0.0.0.0:8080"
[[listeners]]
name = "quic"
address = "[fd00::1]:443"
[[listeners]]
name = "open"
address = "10.9.9.9:9000"
[[routes]]
name = "all"
path_prefix = "/"
cluster = "c"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]

[[budgets]]
name = "web-syn"
listener = "web"
rate_per_second = 1
burst = 3
overrides = [{ prefix = "10.50.0.0/16", rate_per_second = 1, burst = 1 }]

[[budgets]]
name = "quic-all"
listener = "quic"
rate_per_second = 1
burst = 2
new_flows_only = false

[kernel]
allow = ["10.60.0.0/16"]
deny = ["10.66.0.0/16", "fd66::/16"]
"#;

/// A limiter loaded (not attached) with pins in a folder of its own, removed on drop.
struct Loaded {
    limiter: KernelLimiter,
    pin_dir: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = remove_pins(&self.pin_dir);
    }
}

/// A pin folder of this test process's own for `tag`, emptied of earlier runs' pins.
fn fresh_pin_dir(tag: &str) -> PathBuf {
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/omnirelay-test-{}-{tag}",
        std::process::id()
    ));
    let _ = remove_pins(&pin_dir);
    pin_dir
}

/// Settings of a limiter loaded on no interface, pinned in `pin_dir`.
fn unattached(pin_dir: &std::path::Path) -> LimiterSettings {
    LimiterSettings::unattached(pin_dir, false)
}

fn load(text: &str, tag: &str) -> Loaded {
    load_config_at(&fresh_pin_dir(tag), text)
}

/// Starts (or restarts, reusing the pins) the limiter in `pin_dir` with [`CONFIG`].
fn load_at(pin_dir: &std::path::Path) -> Loaded {
    load_config_at(pin_dir, CONFIG)
}

fn load_config_at(pin_dir: &std::path::Path, text: &str) -> Loaded {
    let mut limiter = KernelLimiter::start(unattached(pin_dir)).unwrap();
    let cfg = config::parse(text, "test.toml").unwrap();
    let snap = compile(&cfg, 1, 0, "test", "");
    limiter.apply(&plan(&snap).unwrap()).unwrap();
    Loaded {
        limiter,
        pin_dir: pin_dir.to_path_buf(),
    }
}

/// `CONFIG` with `from` (which must be in it) replaced by `to`.
fn config_with(from: &str, to: &str) -> String {
    assert!(CONFIG.contains(from), "{from:?} is not in CONFIG");
    CONFIG.replace(from, to)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(l: &mut Loaded, frame: &[u8]) -> u32 {
    l.limiter.test_run(frame, 1).unwrap().0
}

fn syn(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    frames::frame(
        ip(src),
        ip(dst),
        40000,
        dport,
        L4::Tcp { flags: tcp::SYN },
        None,
    )
}

fn counters(l: &Loaded) -> LimiterCounters {
    l.limiter.counters().unwrap()
}

#[test]
fn syns_over_the_burst_are_dropped_and_established_traffic_is_not_charged() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "burst");
    let web = 1; // listener id 0 → counter slot 1
    for i in 0..3 {
        assert_eq!(
            run(&mut l, &syn("10.1.1.1", "10.0.0.5", 8080)),
            PASS,
            "SYN {i} within burst"
        );
    }
    assert_eq!(
        run(&mut l, &syn("10.1.1.1", "10.0.0.5", 8080)),
        DROP,
        "4th SYN over burst 3"
    );
    let ack = frames::frame(
        ip("10.1.1.1"),
        ip("10.0.0.5"),
        40000,
        8080,
        L4::Tcp { flags: tcp::ACK },
        None,
    );
    assert_eq!(
        run(&mut l, &ack),
        PASS,
        "new_flows_only: an ACK is not charged"
    );
    let synack = frames::frame(
        ip("10.1.1.1"),
        ip("10.0.0.5"),
        40000,
        8080,
        L4::Tcp {
            flags: tcp::SYN | tcp::ACK,
        },
        None,
    );
    assert_eq!(run(&mut l, &synack), PASS, "SYN+ACK is not a new flow");
    assert_eq!(
        run(&mut l, &syn("10.1.1.2", "10.0.0.5", 8080)),
        PASS,
        "another source has its own bucket"
    );
    assert_eq!(
        run(&mut l, &syn("10.1.1.1", "10.0.0.5", 8081)),
        PASS,
        "another port is not budgeted"
    );
    let c = counters(&l);
    assert_eq!(c.get(web, Reason::OverBudget), 1);
    assert_eq!(c.get(web, Reason::Passed), 3 + 2 + 1);
    assert_eq!(
        c.get(0, Reason::Passed),
        1,
        "the unbudgeted port counts in slot 0"
    );
    assert_eq!(c.total(Reason::Inconsistent), 0);
}

#[test]
fn a_plan_given_at_start_is_in_force_when_start_returns() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let pin_dir = fresh_pin_dir("initial");
    // Without a plan: empty maps, nothing denied.
    let mut bare = Loaded {
        limiter: KernelLimiter::start(unattached(&pin_dir)).unwrap(),
        pin_dir: pin_dir.clone(),
    };
    assert_eq!(bare.limiter.applied_version(), None);
    assert_eq!(run(&mut bare, &syn("10.66.1.1", "10.0.0.5", 8080)), PASS);
    drop(bare);

    // With one: judged by it from the first packet, no apply needed.
    let cfg = config::parse(CONFIG, "test.toml").unwrap();
    let initial = plan(&compile(&cfg, 4, 0, "test", "")).unwrap();
    let mut l = Loaded {
        limiter: KernelLimiter::start_with(unattached(&pin_dir), Some(&initial)).unwrap(),
        pin_dir,
    };
    assert_eq!(l.limiter.applied_version(), Some(4));
    assert_eq!(run(&mut l, &syn("10.66.1.1", "10.0.0.5", 8080)), DROP);
    assert_eq!(
        l.limiter.listener_names(),
        ["web", "quic"],
        "the budgeted listeners"
    );
}

/// [`CONFIG`]'s budget for "web", which [`reordered`] moves after the one for "quic".
const WEB_BUDGET: &str = r#"[[budgets]]
name = "web-syn"
listener = "web"
rate_per_second = 1
burst = 3
overrides = [{ prefix = "10.50.0.0/16", rate_per_second = 1, burst = 1 }]
"#;

/// [`CONFIG`] with the budget list reversed (quic's first), compiled as `version`.
fn reordered(version: u64) -> omnirelay_control::kernel::KernelPlan {
    let text = config_with(WEB_BUDGET, "").replace("[kernel]", &format!("{WEB_BUDGET}\n[kernel]"));
    let cfg = config::parse(&text, "test.toml").unwrap();
    plan(&compile(&cfg, version, 0, "test", "")).unwrap()
}

#[test]
fn a_listener_keeps_its_counters_and_buckets_when_budgets_are_reordered_or_removed() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let pin_dir = fresh_pin_dir("ids");
    let mut l = load_at(&pin_dir);
    assert_eq!(l.limiter.listener_names(), ["web", "quic"]);
    let src: std::net::Ipv4Addr = "10.7.7.7".parse().unwrap();
    let web = syn("10.7.7.7", "10.0.0.5", 8080);
    let seed = seed(&pin_dir);
    // The bucket of (web, src), by the id web has (0) and by the one its position in the
    // reordered list would give it (1). Read as TATs: not by verdicts, which would depend
    // on how long the steps below take (a token comes back each second).
    let tat = |id: u32| bucket_of(&pin_dir, tag_of(seed, id, src)).map(|(_, t)| t);
    // Web's counts: slot = id + 1.
    let charged = |l: &Loaded| {
        let c = counters(l);
        c.get(1, Reason::Passed) + c.get(1, Reason::OverBudget)
    };
    run(&mut l, &web);
    let first = tat(0).expect("web's bucket for src");
    assert_eq!(charged(&l), 1);

    // quic's budget listed first: web would be id 1 by position; it stays id 0, with its
    // counts and its bucket.
    l.limiter.apply(&reordered(2)).unwrap();
    assert_eq!(l.limiter.listener_names(), ["web", "quic"]);
    run(&mut l, &web);
    let second = tat(0).unwrap();
    assert!(second > first, "web's bucket was not charged");
    assert_eq!(tat(1), None, "web was charged under another id");
    assert_eq!(charged(&l), 2);

    // A restarted daemon (same pins) reads the ids back from the maps in force, by address.
    let mut restarted = Loaded {
        limiter: KernelLimiter::start_with(unattached(&pin_dir), Some(&reordered(3))).unwrap(),
        pin_dir: pin_dir.clone(),
    };
    assert_eq!(restarted.limiter.listener_names(), ["web", "quic"]);
    run(&mut restarted, &web);
    assert!(tat(0).unwrap() > second, "web's bucket was not charged");
    assert_eq!(tat(1), None, "web was charged under another id");
    assert_eq!(charged(&restarted), 3);

    // web's budget removed and one for a new listener added: the newcomer takes an id never
    // held (2), not web's, and starts from zero; web is no longer labelled.
    let text = config_with(WEB_BUDGET, "").replace(
        "[kernel]",
        "[[listeners]]\nname = \"api\"\naddress = \"10.0.0.9:8443\"\n\
         [[budgets]]\nname = \"api-syn\"\nlistener = \"api\"\nrate_per_second = 1\nburst = 1\n\n\
         [kernel]",
    );
    let cfg = config::parse(&text, "test.toml").unwrap();
    restarted
        .limiter
        .apply(&plan(&compile(&cfg, 4, 0, "test", "")).unwrap())
        .unwrap();
    assert_eq!(restarted.limiter.listener_names(), ["", "quic", "api"]);
    let api = syn("10.7.7.7", "10.0.0.9", 8443);
    run(&mut restarted, &api);
    let c = counters(&restarted);
    assert_eq!(c.get(3, Reason::Passed) + c.get(3, Reason::OverBudget), 1);
    assert!(bucket_of(&pin_dir, tag_of(seed, 2, src)).is_some());
    drop(l);
}

#[test]
fn a_vlan_tag_is_parsed_through() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "vlan");
    let tagged = frames::frame(
        ip("10.2.0.1"),
        ip("10.0.0.5"),
        1,
        8080,
        L4::Tcp { flags: tcp::SYN },
        Some(42),
    );
    let verdicts: Vec<u32> = (0..4).map(|_| run(&mut l, &tagged)).collect();
    assert_eq!(verdicts, vec![PASS, PASS, PASS, DROP]);

    // QinQ: an 802.1ad service tag before the 802.1Q one; a denied source stays denied.
    let mut qinq = tagged[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07]);
    qinq.extend_from_slice(&tagged[12..]);
    let mut l = load(CONFIG, "qinq");
    let verdicts: Vec<u32> = (0..4).map(|_| run(&mut l, &qinq)).collect();
    assert_eq!(
        verdicts,
        vec![PASS, PASS, PASS, DROP],
        "budget through two tags"
    );
    let denied = frames::frame(
        ip("10.66.0.1"),
        ip("10.0.0.5"),
        1,
        8080,
        L4::Tcp { flags: tcp::SYN },
        Some(42),
    );
    let mut denied_qinq = denied[..12].to_vec();
    denied_qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07]);
    denied_qinq.extend_from_slice(&denied[12..]);
    assert_eq!(
        run(&mut l, &denied_qinq),
        DROP,
        "deny list through two tags"
    );
}

#[test]
fn overrides_replace_the_budget_for_their_prefix() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "override");
    assert_eq!(run(&mut l, &syn("10.50.3.3", "10.0.0.5", 8080)), PASS);
    assert_eq!(
        run(&mut l, &syn("10.50.3.3", "10.0.0.5", 8080)),
        DROP,
        "override burst is 1"
    );
}

#[test]
fn deny_drops_before_parsing_the_transport_and_allow_bypasses_budgets() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "lists");
    assert_eq!(run(&mut l, &syn("10.66.1.1", "10.0.0.5", 8080)), DROP);
    assert_eq!(
        run(&mut l, &syn("10.66.1.1", "10.0.0.5", 22)),
        DROP,
        "any port"
    );
    let icmp = frames::frame(ip("10.66.1.1"), ip("10.0.0.5"), 0, 0, L4::Icmp, None);
    assert_eq!(run(&mut l, &icmp), DROP, "any protocol");
    let mut truncated = syn("10.66.1.1", "10.0.0.5", 8080);
    truncated.truncate(frames::ip_offset(false) + 20 + 6);
    assert_eq!(
        run(&mut l, &truncated),
        DROP,
        "fails closed: truncated TCP from a denied source"
    );
    let v6 = syn("fd66::9", "fd00::1", 443);
    assert_eq!(run(&mut l, &v6), DROP, "IPv6 deny");
    for i in 0..10 {
        assert_eq!(
            run(&mut l, &syn("10.60.0.7", "10.0.0.5", 8080)),
            PASS,
            "allowed SYN {i}"
        );
    }
    let c = counters(&l);
    assert_eq!(c.total(Reason::Denied), 5);
    assert_eq!(c.get(1, Reason::Allowed), 10);
    assert_eq!(c.total(Reason::OverBudget), 0);
}

#[test]
fn all_packet_charging_on_ipv6_udp_and_quic_initial_detection() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "v6");
    let udp = |payload| {
        frames::frame(
            ip("fd00::77"),
            ip("fd00::1"),
            5000,
            443,
            L4::Udp { payload },
            None,
        )
    };
    let verdicts: Vec<u32> = (0..3).map(|_| run(&mut l, &udp(QUIC_SHORT))).collect();
    assert_eq!(
        verdicts,
        vec![PASS, PASS, DROP],
        "every packet charged, burst 2"
    );

    // On a new-flows listener only QUIC Initials are charged.
    let text = config_with("new_flows_only = false", "new_flows_only = true");
    let mut l = load(&text, "quic");
    for _ in 0..5 {
        assert_eq!(
            run(&mut l, &udp(QUIC_SHORT)),
            PASS,
            "1-RTT packets are not new flows"
        );
    }
    let verdicts: Vec<u32> = (0..3).map(|_| run(&mut l, &udp(QUIC_V1_INITIAL))).collect();
    assert_eq!(verdicts, vec![PASS, PASS, DROP], "Initials are charged");
}

/// `frame` (IPv6) with extension headers inserted before its transport header: each
/// `(type, body)` is one header whose next-header byte is filled in to chain them.
fn with_extensions(frame: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let ipo = frames::ip_offset(false);
    let transport_type = frame[ipo + 6];
    let mut inserted = Vec::new();
    for (i, (_, body)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(transport_type, |(t, _)| *t);
        inserted.push(next);
        inserted.extend_from_slice(body);
    }
    let mut out = frame[..ipo + 40].to_vec();
    out[ipo + 6] = headers[0].0;
    let payload = u16::from_be_bytes([out[ipo + 4], out[ipo + 5]]) + inserted.len() as u16;
    out[ipo + 4..ipo + 6].copy_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&inserted);
    out.extend_from_slice(&frame[ipo + 40..]);
    out
}

#[test]
fn ipv6_extension_headers_do_not_hide_the_transport_from_the_budget() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let initial = frames::frame(
        ip("fd00::78"),
        ip("fd00::1"),
        5000,
        443,
        L4::Udp {
            payload: QUIC_V1_INITIAL,
        },
        None,
    );
    // Destination options (8 bytes: length 0, PadN), an atomic fragment (offset 0, no
    // more fragments), and hop-by-hop + routing + destination options together.
    let dst_opts = (60u8, vec![0, 1, 4, 0, 0, 0, 0]);
    let atomic_fragment = (44u8, vec![0, 0, 0, 0, 0, 0, 1]);
    let cases = [
        ("destination options", vec![dst_opts.clone()]),
        ("atomic fragment", vec![atomic_fragment]),
        (
            "three headers",
            vec![
                (0u8, vec![0, 1, 4, 0, 0, 0, 0]),
                (43u8, vec![0, 0, 0, 0, 0, 0, 0]),
                dst_opts.clone(),
            ],
        ),
    ];
    for (name, headers) in &cases {
        let mut l = load(CONFIG, "v6ext");
        let frame = with_extensions(&initial, headers);
        let verdicts: Vec<u32> = (0..3).map(|_| run(&mut l, &frame)).collect();
        assert_eq!(
            verdicts,
            vec![PASS, PASS, DROP],
            "{name}: charged like a plain packet"
        );
    }

    // A later fragment has no transport header: not charged. A chain longer than the
    // program walks is malformed.
    let mut l = load(CONFIG, "v6frag");
    let later = with_extensions(&initial, &[(44u8, vec![0, 0x01, 0x00, 0, 0, 0, 2])]);
    for _ in 0..4 {
        assert_eq!(run(&mut l, &later), PASS, "a later fragment");
    }
    let long = with_extensions(&initial, &vec![dst_opts; 5]);
    assert_eq!(run(&mut l, &long), PASS, "malformed passes by default");
    assert_eq!(counters(&l).total(Reason::Malformed), 1);
}

/// IPv6 sources are charged per /64: a host rotating through the addresses of its /64
/// shares one budget; another /64 has its own.
#[test]
fn ipv6_sources_in_one_64_share_a_budget() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "v6net");
    let udp = |src: &str| {
        frames::frame(
            ip(src),
            ip("fd00::1"),
            5000,
            443,
            L4::Udp {
                payload: QUIC_SHORT,
            },
            None,
        )
    };
    // quic-all: every packet charged, burst 2.
    let verdicts: Vec<u32> = ["fd00::1:1", "fd00::1:2", "fd00::ffff:3"]
        .iter()
        .map(|s| run(&mut l, &udp(s)))
        .collect();
    assert_eq!(verdicts, vec![PASS, PASS, DROP], "one /64, one burst");
    assert_eq!(run(&mut l, &udp("fd00:0:0:1::1")), PASS, "another /64");
}

/// A listener without a budget beside a budgeted wildcard on the same port: its address
/// is not charged (the wildcard's budget is not its), other addresses still are.
#[test]
fn an_unbudgeted_listener_beside_a_budgeted_wildcard_is_not_charged() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let text = config_with(
        "[[listeners]]\nname = \"open\"",
        "[[listeners]]\nname = \"inner\"\naddress = \"10.0.0.7:8080\"\n[[listeners]]\nname = \"open\"",
    );
    let mut l = load(&text, "inner");
    for i in 0..8 {
        assert_eq!(
            run(&mut l, &syn("10.4.4.5", "10.0.0.7", 8080)),
            PASS,
            "SYN {i} to the unbudgeted listener"
        );
    }
    let verdicts: Vec<u32> = (0..4)
        .map(|_| run(&mut l, &syn("10.4.4.5", "10.0.0.5", 8080)))
        .collect();
    assert_eq!(
        verdicts,
        vec![PASS, PASS, PASS, DROP],
        "the wildcard's budget, burst 3"
    );
    let c = counters(&l);
    assert_eq!(c.get(0, Reason::Passed), 8, "counted under no listener");
}

#[test]
fn malformed_frames_are_counted_and_pass_or_drop_per_policy() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let good = syn("10.3.3.3", "10.0.0.5", 8080);
    let ipo = frames::ip_offset(false);
    // (The kernel's test runner refuses frames shorter than an Ethernet header, so the
    // "short Ethernet" path is covered only by its bounds check.)
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("short vlan", {
            let t = frames::frame(
                ip("10.3.3.3"),
                ip("10.0.0.5"),
                1,
                8080,
                L4::Tcp { flags: tcp::SYN },
                Some(1),
            );
            t[..16].to_vec()
        }),
        ("short ipv4", good[..ipo + 12].to_vec()),
        ("short tcp", good[..ipo + 20 + 10].to_vec()),
        (
            "short ipv6",
            syn("fd00::2", "fd00::1", 443)[..ipo + 30].to_vec(),
        ),
        (
            "short udp",
            frames::frame(
                ip("10.3.3.3"),
                ip("10.0.0.5"),
                1,
                8080,
                L4::Udp { payload: b"" },
                None,
            )[..ipo + 20 + 4]
                .to_vec(),
        ),
    ];
    let mut bad_ihl = good.clone();
    bad_ihl[ipo] = 0x43;
    cases.push(("IHL 3", bad_ihl));
    let mut bad_version = good.clone();
    bad_version[ipo] = 0x55;
    cases.push(("IP version 5", bad_version));
    let mut bad_doff = good.clone();
    bad_doff[ipo + 20 + 12] = 2 << 4;
    cases.push(("TCP data offset 2", bad_doff));
    let mut long_ihl = good.clone();
    long_ihl[ipo] = 0x4f; // 60-byte header: the TCP header would start past the frame end
    cases.push(("IHL past the end", long_ihl));

    for (policy, verdict) in [("pass", PASS), ("drop", DROP)] {
        let text = format!("{CONFIG}\nmalformed = \"{policy}\"\n");
        let mut l = load(&text, policy);
        for (name, frame) in &cases {
            assert_eq!(
                run(&mut l, frame),
                verdict,
                "{name} under malformed = {policy}"
            );
        }
        assert_eq!(counters(&l).total(Reason::Malformed), cases.len() as u64);
    }

    // Fragments that can only hide a TCP header from the limiter (RFC 1858) are dropped
    // under either policy: a first fragment (more-fragments set) holding 8 bytes of TCP,
    // and a TCP fragment at offset 1 (8 bytes), which could rewrite the first one's flags.
    let mut tiny_first = good.clone();
    tiny_first[ipo + 6] = 0x20;
    tiny_first[ipo + 7] = 0;
    tiny_first.truncate(ipo + 20 + 8);
    let mut offset_one = good.clone();
    offset_one[ipo + 6] = 0;
    offset_one[ipo + 7] = 1;
    for policy in ["pass", "drop"] {
        let text = format!("{CONFIG}\nmalformed = \"{policy}\"\n");
        let mut l = load(&text, &format!("frag-{policy}"));
        for (name, frame) in [
            ("tiny first fragment", &tiny_first),
            ("TCP at offset 1", &offset_one),
        ] {
            assert_eq!(
                run(&mut l, frame),
                DROP,
                "{name} under malformed = {policy}"
            );
        }
        assert_eq!(counters(&l).total(Reason::Malformed), 2);
    }

    // Not malformed: ARP, a non-first fragment (no transport header), ICMP.
    let mut l = load(CONFIG, "notmal");
    let mut arp = good.clone();
    arp[12] = 0x08;
    arp[13] = 0x06;
    let mut fragment = good.clone();
    fragment[ipo + 6] = 0;
    fragment[ipo + 7] = 10;
    fragment.truncate(ipo + 20 + 4);
    let icmp = frames::frame(ip("10.3.3.3"), ip("10.0.0.5"), 0, 0, L4::Icmp, None);
    for f in [&arp, &fragment, &icmp] {
        assert_eq!(run(&mut l, f), PASS);
    }
    let c = counters(&l);
    assert_eq!(c.total(Reason::Malformed), 0);
    assert_eq!(c.get(0, Reason::Passed), 3);
}

/// The bucket hash seed the limiter in `pin_dir` uses, read from its pinned map.
fn seed(pin_dir: &std::path::Path) -> u64 {
    active(pin_dir).seed
}

/// The active word, seed and tick length the limiter in `pin_dir` runs with.
fn active(pin_dir: &std::path::Path) -> Active {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(pin_dir.join("maps/OR_ACTIVE")).unwrap();
    let active: Array<_, Active> = Array::try_from(Map::Array(data)).unwrap();
    active.get(&0, 0).unwrap()
}

/// The program's clock moves a tick (1/HZ) at a time: a burst smaller than a tick's worth
/// of tokens must not cap the rate at burst × HZ. At 1000/s with burst 1, a tick of 4 ms
/// (HZ 250) lets about 4 SYNs through, not 1.
#[test]
fn a_burst_below_one_ticks_worth_does_not_cap_the_rate() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let text = config_with(
        "rate_per_second = 1\nburst = 3",
        "rate_per_second = 1000\nburst = 1",
    );
    let mut l = load(&text, "tick");
    let per_tick = (u64::from(active(&l.pin_dir).tick_ns) / 1_000_000).max(1);
    let frame = syn("10.4.4.4", "10.0.0.5", 8080);
    let passed = (0..40).filter(|_| run(&mut l, &frame) == PASS).count() as u64;
    assert!(
        passed >= per_tick.min(40),
        "{passed} of 40 passed; a tick's worth is {per_tick}"
    );
    assert!(passed < 40, "nothing was limited");
}

/// `n` IPv4 sources (in 172.0.0.0/10, about 64 per set) whose buckets for listener `id`
/// fall in the set of `of`'s bucket, found by the same hash the program computes.
fn set_mates(seed: u64, id: u32, of: std::net::Ipv4Addr, n: usize) -> Vec<std::net::Ipv4Addr> {
    let set = |a: std::net::Ipv4Addr| bucket_set(tag_of(seed, id, a));
    let target = set(of);
    let mates: Vec<_> = (0..1u32 << 22)
        .map(|i| std::net::Ipv4Addr::from(0xac00_0000 | i))
        .filter(|a| *a != of && set(*a) == target)
        .take(n)
        .collect();
    assert_eq!(mates.len(), n, "not enough addresses share a set in a /10");
    mates
}

/// The way holding `tag` in its set of the pinned bucket array, as (tag, TAT), if any.
fn bucket_of(pin_dir: &std::path::Path, tag: u64) -> Option<(u64, u64)> {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(pin_dir.join("maps/OR_BUCKETS")).unwrap();
    let sets: Array<_, BucketSet> = Array::try_from(Map::Array(data)).unwrap();
    let set = sets.get(&bucket_set(tag), 0).unwrap();
    set.ways
        .iter()
        .find(|w| w.tag == tag)
        .map(|w| (w.tag, w.tat_ns))
}

fn tag_of(seed: u64, listener: u32, a: std::net::Ipv4Addr) -> u64 {
    bucket_hash(seed, listener, &addr_words(&v4_mapped(a.octets())))
}

#[test]
fn a_source_in_debt_keeps_its_bucket_while_new_sources_cycle_through_its_set() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let mut l = load(CONFIG, "sets");
    let seed = seed(&l.pin_dir);
    // Listener "web" (id 0): 1 SYN/s, burst 3. The debtor spends its burst and is held.
    let debtor = std::net::Ipv4Addr::new(172, 31, 0, 1);
    let mates = set_mates(seed, 0, debtor, 12);
    let verdicts: Vec<u32> = (0..4)
        .map(|_| run(&mut l, &syn(&debtor.to_string(), "10.0.0.5", 8080)))
        .collect();
    assert_eq!(verdicts, vec![PASS, PASS, PASS, DROP]);
    let held = bucket_of(&l.pin_dir, tag_of(seed, 0, debtor)).expect("no bucket for the debtor");
    // Twelve new sources of the same set (four ways) take their first SYN: each needs a
    // way, and the way given up is always the least indebted one, never the debtor's
    // (whose TAT, three seconds ahead, is the highest). The check reads the bucket itself,
    // not a verdict, so it holds however slowly the test runs (in a VM, say).
    for mate in &mates {
        assert_eq!(
            run(&mut l, &syn(&mate.to_string(), "10.0.0.5", 8080)),
            PASS,
            "first SYN from {mate}"
        );
    }
    assert_eq!(
        bucket_of(&l.pin_dir, tag_of(seed, 0, debtor)),
        Some(held),
        "the debtor's bucket was given up to a newcomer: its debt was forgotten"
    );
    // The newcomers cycled through the other three ways: three of them hold one now.
    let held_mates = mates
        .iter()
        .filter(|m| bucket_of(&l.pin_dir, tag_of(seed, 0, **m)).is_some())
        .count();
    assert_eq!(held_mates, 3);
}

#[test]
fn a_restart_keeps_the_seed_so_buckets_survive() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    let pin_dir = fresh_pin_dir("seed");
    let mut first = load_at(&pin_dir);
    let seed_before = seed(&pin_dir);
    assert_ne!(seed_before, 0);
    // A second start on the same pins (a restarted daemon: a new program, the same maps),
    // done before the burst so that the verdicts below do not depend on how long a start
    // takes (a token comes back each second).
    let mut second = load_at(&pin_dir);
    assert_eq!(seed(&pin_dir), seed_before, "the restart chose a new seed");
    let verdicts: Vec<u32> = (0..4)
        .map(|_| run(&mut first, &syn("10.4.4.4", "10.0.0.5", 8080)))
        .collect();
    assert_eq!(verdicts, vec![PASS, PASS, PASS, DROP]);
    assert_eq!(
        run(&mut second, &syn("10.4.4.4", "10.0.0.5", 8080)),
        DROP,
        "the restarted program found no bucket for the held source"
    );
    drop(first);
}

#[test]
fn a_pinned_map_with_another_layout_is_recreated_not_reused() {
    require_caps!(Capability::Root, Capability::BpfSyscall);
    use aya::maps::MapInfo;
    let pin_dir = fresh_pin_dir("layout");
    // A first start pins every map; then OR_BUCKETS is replaced by a map of another type
    // and size (the counter object's per-CPU array), as an older build might have left.
    let first = load_at(&pin_dir);
    let bucket_pin = pin_dir.join("maps/OR_BUCKETS");
    let wanted = MapInfo::from_pin(&bucket_pin).unwrap();
    std::fs::remove_file(&bucket_pin).unwrap();
    let mut other = aya::Ebpf::load(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/omnirelay-xdp"
    )))
    .unwrap();
    other
        .map_mut("XDP_COUNTERS")
        .unwrap()
        .pin(&bucket_pin)
        .unwrap();
    drop(other);
    let stale = MapInfo::from_pin(&bucket_pin).unwrap();
    assert_ne!(stale.value_size(), wanted.value_size());

    let mut l = load_at(&pin_dir);
    let now = MapInfo::from_pin(&bucket_pin).unwrap();
    drop(first);
    assert_eq!(
        (now.key_size(), now.value_size(), now.max_entries()),
        (wanted.key_size(), wanted.value_size(), wanted.max_entries()),
        "the incompatible pinned map was reused"
    );
    // And the limiter works with it.
    let verdicts: Vec<u32> = (0..4)
        .map(|_| run(&mut l, &syn("10.7.7.7", "10.0.0.5", 8080)))
        .collect();
    assert_eq!(verdicts, vec![PASS, PASS, PASS, DROP]);
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(&format!(": {e}"));
        source = e.source();
    }
    s
}

#[test]
fn an_attach_failure_names_the_interface_mode_and_errno() {
    require_caps!(Capability::Root, Capability::BpfSyscall, Capability::NetNs);
    let start = |interface: &str, tag: &str| {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/omnirelay-test-{}-{tag}",
            std::process::id()
        ));
        let result = KernelLimiter::start(LimiterSettings {
            interfaces: vec![interface.to_owned()],
            mode: AttachMode::Native,
            pin_dir: pin_dir.clone(),
            steering: false,
        });
        let _ = remove_pins(&pin_dir);
        error_chain(&result.unwrap_err())
    };
    let missing = start("or-missing0", "attach-missing");
    assert!(
        missing.contains("or-missing0") && missing.contains("native"),
        "{missing}"
    );
    assert!(missing.contains("unknown network interface"), "{missing}");

    // Loopback has no native XDP: the kernel refuses with an errno, and there is no
    // silent fallback to generic mode. In a namespace of its own, so nothing else is hit.
    let ns = omnirelay_test_support::NetNs::new("xat").unwrap();
    let refused = ns.run(|| start("lo", "attach-lo")).unwrap();
    assert!(
        refused.contains("interface lo") && refused.contains("native"),
        "{refused}"
    );
    assert!(refused.contains("os error"), "no errno in: {refused}");
}
