//! The XDP limiter end to end: the real `omnirelay-control` daemon, started inside a server
//! network namespace, attaches `xdp_limiter` (native mode) to the server ends of two veth
//! pairs whose other ends sit in two client namespaces. Clients send paced UDP to a budgeted
//! listener port; a UDP socket in the server namespace counts what arrives per source, and
//! the pinned counter map is read directly. Runs as root; elsewhere it prints a skip line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use omnirelay_control::kernel::{LimiterCounters, read_pinned_counters, remove_pins};
use omnirelay_ebpf_common::limiter::Reason;
use omnirelay_test_support::{
    Capability, NetNs, VethPair,
    process::{ChildGuard, TempDir, wait_until, workspace_bin},
    require_caps,
};

/// The budgeted UDP port on the server.
const PORT: u16 = 9300;
/// Counter slot of the one budgeted listener (id 0).
const SLOT: usize = 1;

/// One test at a time: rates are measured, and two floods at once would share the CPU.
static SERIAL: Mutex<()> = Mutex::new(());

/// Server namespace, two client namespaces, the daemon's files and its pin folder.
struct Site {
    server: NetNs,
    a: NetNs,
    b: NetNs,
    pa: VethPair,
    pb: VethPair,
    dir: TempDir,
    pin_dir: PathBuf,
}

impl Drop for Site {
    fn drop(&mut self) {
        // Unpinning the links detaches the programs (the namespaces go right after).
        let _ = remove_pins(&self.pin_dir);
    }
}

impl Site {
    fn new(tag: &str) -> Site {
        let server = NetNs::new(&format!("{tag}s")).unwrap();
        let a = NetNs::new(&format!("{tag}a")).unwrap();
        let b = NetNs::new(&format!("{tag}b")).unwrap();
        // End `a` of each pair is the server side.
        let pa = VethPair::new(&server, &a).unwrap();
        let pb = VethPair::new(&server, &b).unwrap();
        let dir = TempDir::new(tag);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/omnirelay-test-{}-{tag}",
            std::process::id()
        ));
        let _ = remove_pins(&pin_dir);
        Site {
            server,
            a,
            b,
            pa,
            pb,
            dir,
            pin_dir,
        }
    }

    fn client_a_ip(&self) -> IpAddr {
        IpAddr::V4(self.pa.b.ipv4)
    }

    fn client_b_ip(&self) -> IpAddr {
        IpAddr::V4(self.pb.b.ipv4)
    }

    /// The server address each client sends to (its own link's server end).
    fn target(&self, client: &NetNs) -> SocketAddr {
        let pair = if client.name() == self.a.name() {
            &self.pa
        } else {
            &self.pb
        };
        SocketAddr::new(IpAddr::V4(pair.a.ipv4), PORT)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("omnirelay.toml")
    }

    /// Writes the config: one listener on 0.0.0.0:PORT with a budget charging every packet.
    fn write_config(&self, rate: u64, burst: u64, kernel_extra: &str) {
        let mut text = omnirelay_test_support::config::budgeted_listener(
            "udp",
            &format!("0.0.0.0:{PORT}"),
            "127.0.0.1:1",
            rate,
            burst,
            false,
        );
        text.push_str(&format!(
            "[kernel]\ninterfaces = [\"{}\", \"{}\"]\nattach_mode = \"native\"\npin_dir = \"{}\"\n{kernel_extra}\n",
            self.pa.a.ifname,
            self.pb.a.ifname,
            self.pin_dir.display()
        ));
        // Write then rename, as editors do: the daemon never reads half a file.
        let tmp = self.dir.path().join("omnirelay.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Starts the daemon inside the server namespace and waits for its first map write.
    fn start_daemon(&self, n: u32) -> ChildGuard {
        let mut cmd = Command::new(workspace_bin("omnirelay-control"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--grpc-listen", "127.0.0.1:7800"])
            .args(["--admin-listen", "127.0.0.1:7801"])
            .env("RUST_LOG", "info");
        self.server.enter(&mut cmd).unwrap();
        let log = self.dir.path().join(format!("control-{n}.log"));
        let child = ChildGuard::spawn("omnirelay-control", cmd, &log).unwrap();
        assert!(
            child.wait_for_log("kernel limiter running", Duration::from_secs(20)),
            "the daemon did not write the kernel maps:\n{}",
            child.log()
        );
        // The published snapshot is in the maps before the program judges a packet (a
        // program on recreated maps would otherwise pass or drop by empty lists).
        let log = child.log();
        let written = log.find("kernel maps updated");
        let attached = log
            .find("XDP program attached")
            .or_else(|| log.find("XDP program replaced inside the pinned link"));
        assert!(
            matches!((written, attached), (Some(w), Some(a)) if w < a),
            "the maps must be written before the program attaches:\n{log}"
        );
        child
    }

    /// GET on the daemon's admin API (it listens on the server namespace's loopback).
    fn admin_get(&self, path: &str) -> String {
        let path = path.to_owned();
        self.server
            .run(move || {
                use std::io::{Read as _, Write as _};
                let mut s = std::net::TcpStream::connect("127.0.0.1:7801").unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
            .unwrap()
    }

    fn counters(&self) -> LimiterCounters {
        read_pinned_counters(&self.pin_dir).unwrap()
    }

    /// The XDP program id on a server interface, or None when nothing is attached.
    fn xdp_prog_id(&self, ifname: &str) -> Option<u64> {
        let out = self
            .server
            .ip(&["-j", "link", "show", "dev", ifname])
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v[0]["xdp"]["prog"]["id"].as_u64()
    }
}

/// Arrival times per source address, recorded by a UDP socket in the server namespace.
struct Receiver {
    arrivals: Arc<Mutex<HashMap<IpAddr, Vec<Instant>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(site: &Site) -> Receiver {
        let sock = site
            .server
            .run(|| UdpSocket::bind(("0.0.0.0", PORT)).unwrap())
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let arrivals: Arc<Mutex<HashMap<IpAddr, Vec<Instant>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let arrivals = Arc::clone(&arrivals);
            let stop = Arc::clone(&stop);
            move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = sock.recv_from(&mut buf) {
                        let now = Instant::now();
                        arrivals
                            .lock()
                            .unwrap()
                            .entry(from.ip())
                            .or_default()
                            .push(now);
                    }
                }
            }
        });
        Receiver {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    /// Packets from `ip` that arrived in `[from, to)`.
    fn count(&self, ip: IpAddr, from: Instant, to: Instant) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .get(&ip)
            .map_or(0, |v| v.iter().filter(|t| **t >= from && **t < to).count())
    }

    fn total(&self, ip: IpAddr) -> usize {
        self.arrivals.lock().unwrap().get(&ip).map_or(0, Vec::len)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `rate` datagrams per second for `secs` seconds from inside `ns`, paced against the
/// clock (late packets catch up, so the average rate holds). Returns the number sent.
fn send_paced(ns: &NetNs, to: SocketAddr, rate: u64, secs: f64) -> JoinHandle<u64> {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let total = (rate as f64 * secs) as u64;
        let start = Instant::now();
        let payload = [0x5au8; 64];
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // ENOBUFS under load is possible on a busy host; count only what left.
            let _ = sock.send_to(&payload, to);
        }
        total
    })
}

fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= expected * tolerance
}

#[test]
fn an_over_budget_client_is_held_to_its_rate_and_a_polite_one_loses_nothing() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let site = Site::new("xlr");
    site.write_config(200, 20, "");
    let _daemon = site.start_daemon(0);
    let rx = Receiver::start(&site);

    let start = Instant::now();
    let flood = send_paced(&site.a, site.target(&site.a), 1000, 6.0);
    let polite = send_paced(&site.b, site.target(&site.b), 100, 6.0);
    let flood_sent = flood.join().unwrap();
    let polite_sent = polite.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // A 5 s window that starts after the initial burst is spent.
    let (from, to) = (
        start + Duration::from_millis(500),
        start + Duration::from_millis(5500),
    );
    let got = rx.count(site.client_a_ip(), from, to) as f64;
    assert!(
        within(got, 200.0 * 5.0, 0.10),
        "over-budget client: {got} packets in 5 s, expected 1000 ± 10% (sent {flood_sent} in 6 s)"
    );
    assert_eq!(
        rx.total(site.client_b_ip()) as u64,
        polite_sent,
        "the client within its budget lost packets"
    );
    let c = site.counters();
    assert!(c.get(SLOT, Reason::OverBudget) > 3000, "{c:?}");
    assert_eq!(c.total(Reason::Inconsistent), 0);

    // The same counters on the daemon's /metrics, labelled by listener and reason.
    let metrics = site.admin_get("/metrics");
    let over = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("omnirelay_xdp_packets_total{listener=\"udp\",reason=\"over_budget\"} ")
        })
        .unwrap_or_else(|| panic!("no XDP series on /metrics:\n{metrics}"));
    assert!(over.trim().parse::<u64>().unwrap() >= c.get(SLOT, Reason::OverBudget));
}

#[test]
fn deny_drops_everything_from_a_prefix_and_allow_bypasses_the_budget() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let site = Site::new("xld");
    let a_net = format!("{}/24", {
        let o = site.pa.b.ipv4.octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], 0)
    });
    site.write_config(
        10,
        5,
        &format!(
            "deny = [\"{a_net}\"]\nallow = [\"{}/32\"]",
            site.client_b_ip()
        ),
    );
    let _daemon = site.start_daemon(0);
    let rx = Receiver::start(&site);
    let denied = send_paced(&site.a, site.target(&site.a), 500, 1.0);
    let allowed = send_paced(&site.b, site.target(&site.b), 500, 1.0);
    let denied_sent = denied.join().unwrap();
    let allowed_sent = allowed.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        rx.total(site.client_a_ip()),
        0,
        "a denied source got through"
    );
    assert_eq!(
        rx.total(site.client_b_ip()) as u64,
        allowed_sent,
        "the allowed source was held to the 10/s budget"
    );
    let c = site.counters();
    assert!(c.get(SLOT, Reason::Denied) >= denied_sent, "{c:?}");
    assert_eq!(c.get(SLOT, Reason::Allowed), allowed_sent);
    assert_eq!(c.get(SLOT, Reason::OverBudget), 0);
}

#[test]
fn a_budget_change_applies_within_a_second_and_hammered_updates_never_tear() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let site = Site::new("xlc");
    site.write_config(50, 5, "");
    let _daemon = site.start_daemon(0);
    let _rx = Receiver::start(&site);
    let flood = send_paced(&site.a, site.target(&site.a), 1000, 8.0);
    // Let the flood run into the budget.
    assert!(wait_until(Duration::from_secs(3), || {
        site.counters().get(SLOT, Reason::OverBudget) > 200
    }));

    // Raise the budget above the flood rate; drops must stop within a second.
    let written = Instant::now();
    site.write_config(100_000, 1000, "");
    let mut last = site.counters().get(SLOT, Reason::OverBudget);
    let mut last_increase = written;
    while written.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(10));
        let now = site.counters().get(SLOT, Reason::OverBudget);
        if now != last {
            last = now;
            last_increase = Instant::now();
        }
    }
    let took = last_increase - written;
    assert!(
        took < Duration::from_secs(1),
        "drops continued {took:?} after the budget was raised"
    );

    // Hammer: swap which client is denied and which allowed, as fast as the daemon takes
    // it, while both send. Every packet must see one whole generation.
    let polite = send_paced(&site.b, site.target(&site.b), 1000, 4.0);
    let net = |ip: IpAddr| format!("{ip}/32");
    let (na, nb) = (net(site.client_a_ip()), net(site.client_b_ip()));
    for i in 0..40 {
        let (deny, allow) = if i % 2 == 0 { (&na, &nb) } else { (&nb, &na) };
        site.write_config(
            100 + i,
            10,
            &format!("deny = [\"{deny}\"]\nallow = [\"{allow}\"]"),
        );
        std::thread::sleep(Duration::from_millis(70));
    }
    flood.join().unwrap();
    polite.join().unwrap();
    let c = site.counters();
    assert!(
        c.get(SLOT, Reason::Denied) > 100 && c.get(SLOT, Reason::Allowed) > 100,
        "the hammered configs did not take turns: {c:?}"
    );
    assert_eq!(
        c.total(Reason::Inconsistent),
        0,
        "a packet saw entries of two snapshot versions: {c:?}"
    );
}

#[test]
fn enforcement_survives_a_daemon_kill_and_restart_replaces_the_program_in_place() {
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let site = Site::new("xlk");
    site.write_config(200, 20, "");
    let mut daemon = site.start_daemon(0);
    let iface = site.pa.a.ifname.clone();
    let first_prog = site.xdp_prog_id(&iface).expect("XDP attached");
    let rx = Receiver::start(&site);

    // Watch the interface the whole time: it must never be without a program.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let ns = site.server.name().to_owned();
        let iface = iface.clone();
        move || {
            let mut seen = Vec::new();
            let mut gaps = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new("ip")
                    .args(["-n", &ns, "-j", "link", "show", "dev", &iface])
                    .output()
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                match v[0]["xdp"]["prog"]["id"].as_u64() {
                    Some(id) if seen.last() != Some(&id) => seen.push(id),
                    Some(_) => {}
                    None => gaps += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen, gaps)
        }
    });

    let start = Instant::now();
    let flood = send_paced(&site.a, site.target(&site.a), 1000, 6.0);
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill();
    let drops_at_kill = site.counters().get(SLOT, Reason::OverBudget);
    std::thread::sleep(Duration::from_millis(1000));
    let drops_while_down = site.counters().get(SLOT, Reason::OverBudget) - drops_at_kill;
    let _daemon2 = site.start_daemon(1);
    flood.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (progs, gaps) = watcher.join().unwrap();

    assert!(
        drops_while_down > 500,
        "with the daemon dead for 1 s, only {drops_while_down} packets were dropped"
    );
    let (from, to) = (
        start + Duration::from_millis(500),
        start + Duration::from_millis(5500),
    );
    let got = rx.count(site.client_a_ip(), from, to) as f64;
    assert!(
        within(got, 1000.0, 0.10),
        "across the kill and restart the flood got {got} packets in 5 s, expected 1000 ± 10%"
    );
    assert_eq!(gaps, 0, "the interface was seen without an XDP program");
    let last_prog = site.xdp_prog_id(&iface).expect("still attached");
    assert_ne!(
        last_prog, first_prog,
        "the restarted daemon did not load its program"
    );
    assert_eq!(progs.first(), Some(&first_prog));
    assert_eq!(
        progs.last(),
        Some(&last_prog),
        "program ids seen: {progs:?}"
    );
}

/// Sends raw Ethernet frames out of `ifname` inside `ns` (AF_PACKET).
fn send_raw(ns: &NetNs, ifname: &str, frames: &[Vec<u8>]) {
    let ifname = ifname.to_owned();
    let frames = frames.to_vec();
    ns.run(move || {
        // SAFETY: plain socket syscalls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let name = std::ffi::CString::new(ifname).unwrap();
            let index = libc::if_nametoindex(name.as_ptr());
            assert!(index > 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            for f in &frames {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    })
    .unwrap();
}

#[test]
fn malformed_frames_from_a_raw_socket_are_counted_and_passed() {
    use omnirelay_test_support::frames::{self, L4, tcp};
    require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let site = Site::new("xlm");
    site.write_config(200, 20, "");
    let mut daemon = site.start_daemon(0);
    let rx = Receiver::start(&site);

    let src = site.client_a_ip();
    let dst = IpAddr::V4(site.pa.a.ipv4);
    let good = frames::frame(src, dst, 1000, PORT, L4::Tcp { flags: tcp::SYN }, None);
    let ipo = frames::ip_offset(false);
    let mut bad_ihl = good.clone();
    bad_ihl[ipo] = 0x42;
    let mut long_ihl = good.clone();
    long_ihl[ipo] = 0x4f;
    let mut bad_doff = good.clone();
    bad_doff[ipo + 20 + 12] = 0x10;
    let malformed = vec![
        good[..ipo + 12].to_vec(),
        good[..ipo + 20 + 8].to_vec(),
        bad_ihl,
        long_ihl,
        bad_doff,
        frames::frame(src, dst, 1, PORT, L4::Udp { payload: b"" }, None)[..ipo + 20 + 3].to_vec(),
    ];
    let rounds = 50;
    let all: Vec<Vec<u8>> = (0..rounds).flat_map(|_| malformed.clone()).collect();
    let before = site.counters().total(Reason::Malformed);
    send_raw(&site.a, &site.pa.b.ifname, &all);
    let expected = before + all.len() as u64;
    assert!(
        wait_until(Duration::from_secs(2), || site
            .counters()
            .total(Reason::Malformed)
            >= expected),
        "malformed frames counted: {} of {}",
        site.counters().total(Reason::Malformed) - before,
        all.len()
    );
    assert_eq!(site.counters().total(Reason::Malformed), expected);

    // The program and the daemon are unharmed: well-formed traffic still flows.
    let sent = send_paced(&site.a, site.target(&site.a), 50, 0.2)
        .join()
        .unwrap();
    assert!(wait_until(Duration::from_secs(2), || rx.total(src) as u64 == sent));
    assert!(daemon.is_running());
}
