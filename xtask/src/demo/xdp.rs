//! `cargo xtask demo --xdp`: the XDP limiter on live traffic. Two client namespaces send UDP
//! to a server namespace over veth pairs; `omnirelay-control run`, inside the server
//! namespace, attaches the limiter to both server ends with a per-source budget for the
//! listener port. One client sends within the budget, the other `--rate` datagrams per
//! second; each second the demo prints what arrived from each and the limiter's counters
//! from the daemon's `/metrics`. Everything is torn down at the end (after `--duration`, or
//! on Ctrl-C): the daemon is stopped and its pins removed, which detaches the program.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use omnirelay_test_support::{
    NetNs, VethPair,
    caps::{self, Capability},
    process::{ChildGuard, TempDir},
};

use crate::run::{self, step};

use super::INTERRUPTED;

const PORT: u16 = 9300;
const BUDGET: u32 = 100;

fn config(pa: &VethPair, pb: &VethPair, pin_dir: &Path) -> String {
    // Every datagram is charged (UDP), not only new flows.
    let listener = omnirelay_test_support::config::budgeted_listener(
        "demo",
        &format!("0.0.0.0:{PORT}"),
        "127.0.0.1:1",
        BUDGET.into(),
        BUDGET.into(),
        false,
    );
    format!(
        "# The demo's config: one listener, a budget of {BUDGET} datagrams per second and source.\n\
         [control]\ngrpc_listen = \"127.0.0.1:7800\"\nadmin_listen = \"127.0.0.1:7801\"\n\
         {listener}[kernel]\ninterfaces = [\"{}\", \"{}\"]\nattach_mode = \"native\"\npin_dir = \"{}\"\n",
        pa.a.ifname,
        pb.a.ifname,
        pin_dir.display()
    )
}

/// The daemon's `/metrics`, read inside the server namespace.
fn metrics(server: &NetNs) -> String {
    server
        .run(|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect("127.0.0.1:7801")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

fn xdp_count(text: &str, reason: &str) -> u64 {
    let prefix = format!("omnirelay_xdp_packets_total{{listener=\"demo\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `rate` datagrams per second from inside `ns` until `stop`.
fn sender(
    ns: &NetNs,
    to: SocketAddr,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let path = ns.path();
    std::thread::spawn(move || {
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        // SAFETY: setns on this thread with a descriptor that outlives the call.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return;
        }
        let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        let start = Instant::now();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate.max(1)));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = sock.send_to(b"omnirelay demo", to);
            i += 1;
        }
    })
}

/// Runs the demo.
pub fn run(args: &super::DemoArgs) -> anyhow::Result<()> {
    if let Err(missing) = caps::require(&[Capability::Root, Capability::NetNs, Capability::XdpVeth])
    {
        bail!("the demo attaches a real XDP program and cannot run here: {missing}");
    }
    super::catch_ctrl_c();

    step("building omnirelay-control");
    run::run(run::cargo().args(["build", "--quiet", "-p", "omnirelay-control"]))?;
    let daemon = run::workspace_root().join("target/debug/omnirelay-control");

    step("creating a server and two client namespaces joined by veth pairs");
    let server = NetNs::new("demo-srv")?;
    let polite_ns = NetNs::new("demo-polite")?;
    let flood_ns = NetNs::new("demo-flood")?;
    let pa = VethPair::new(&server, &polite_ns)?;
    let pb = VethPair::new(&server, &flood_ns)?;
    println!(
        "    polite client {} -> server {} ({})",
        pa.b.ipv4, pa.a.ipv4, pa.a.ifname
    );
    println!(
        "    flooding client {} -> server {} ({})",
        pb.b.ipv4, pb.a.ipv4, pb.a.ifname
    );

    step(&format!(
        "starting omnirelay-control with a budget of {BUDGET} datagrams/s per source on port {PORT}"
    ));
    let dir = TempDir::new("demo-xdp");
    let pin_dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/omnirelay-demo-{}", std::process::id()));
    let cfg = dir.path().join("omnirelay.toml");
    std::fs::write(&cfg, config(&pa, &pb, &pin_dir))?;
    let mut cmd = Command::new(&daemon);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    // setns only, so the daemon pins into the host's /sys/fs/bpf.
    server.enter(&mut cmd)?;
    let log = dir.path().join("control.log");
    let mut control = ChildGuard::spawn("omnirelay-control", cmd, &log)?;
    if !control.wait_for_log("kernel limiter running", Duration::from_secs(20)) {
        let _ = std::fs::remove_dir_all(&pin_dir);
        bail!("the daemon did not attach the limiter:\n{}", control.log());
    }
    println!("    config: {}", cfg.display());
    println!("    daemon log: {}", log.display());
    println!(
        "    inspect meanwhile: ip -n {} -d link show {}   ls {}",
        server.name(),
        pa.a.ifname,
        pin_dir.display()
    );

    let sock = server.run(|| UdpSocket::bind(("0.0.0.0", PORT)))??;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let (polite_ip, flood_ip) = (IpAddr::V4(pa.b.ipv4), IpAddr::V4(pb.b.ipv4));
    let got_polite = Arc::new(AtomicU64::new(0));
    let got_flood = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = std::thread::spawn({
        let (p, f, stop) = (
            Arc::clone(&got_polite),
            Arc::clone(&got_flood),
            Arc::clone(&stop),
        );
        move || {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    if from.ip() == polite_ip {
                        p.fetch_add(1, Ordering::Relaxed);
                    } else if from.ip() == flood_ip {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let polite_rate = BUDGET / 2;
    let senders = [
        sender(
            &polite_ns,
            SocketAddr::from((pa.a.ipv4, PORT)),
            polite_rate,
            Arc::clone(&stop),
        ),
        sender(
            &flood_ns,
            SocketAddr::from((pb.a.ipv4, PORT)),
            args.rate,
            Arc::clone(&stop),
        ),
    ];

    step(&format!(
        "traffic: polite {polite_rate}/s, flood {}/s (per second: received from each, XDP counters)",
        args.rate
    ));
    let deadline = Instant::now() + Duration::from_secs(args.duration.max(1));
    let (mut last_p, mut last_f) = (0, 0);
    while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let (p, f) = (
            got_polite.load(Ordering::Relaxed),
            got_flood.load(Ordering::Relaxed),
        );
        let m = metrics(&server);
        println!(
            "    polite +{:>5}  flood +{:>5}   xdp: passed {:>7}  over_budget {:>7}",
            p - last_p,
            f - last_f,
            xdp_count(&m, "passed"),
            xdp_count(&m, "over_budget")
        );
        (last_p, last_f) = (p, f);
        if !control.is_running() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let _ = receiver.join();

    step("done");
    let running = control.is_running();
    control.kill();
    let out = Command::new(&daemon)
        .args(["kernel-detach", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .context("omnirelay-control kernel-detach")?;
    println!("    {}", String::from_utf8_lossy(&out.stdout).trim());
    println!("    namespaces and veth pairs removed");
    if !running && !INTERRUPTED.load(Ordering::Relaxed) {
        bail!("omnirelay-control stopped early:\n{}", control.log());
    }
    Ok(())
}
