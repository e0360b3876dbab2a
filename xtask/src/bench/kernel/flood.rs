//! `flood`: the proxy's throughput for a well-behaved client while another namespace floods
//! SYNs, with three protections measured side by side in the same run (alternating):
//!
//! - `none`: the kernel's own defences only (SYN cookies);
//! - `iptables`: an equivalent `hashlimit` rule in the server namespace's INPUT chain
//!   (SYNs to the listener above the per-source rate and burst are dropped);
//! - `xdp`: the XDP limiter, attached natively by `omnirelay-control` to the server's
//!   veth ends with the same per-source budget.
//!
//! Three namespaces: `srv` (upstream nginx, control daemon, one pinned data plane worker),
//! `good` (wrk, keep-alive) and `flood` (raw SYN frames with valid checksums from 16 source
//! addresses the flood namespace owns, so SYN-ACKs are answered by RSTs) at a fixed rate.
//! The flood sender and wrk share the load core; veth delivers a packet on the sender's
//! CPU, so the cost of handling the flood lands there, and the good client's requests/s
//! shows how much of it each protection removes. Proxy CPU per request is reported beside
//! it.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
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
    process::{TempDir, wait_for_port},
};
use serde_json::{Value, json};

use super::super::{configs, procs::Group, series, series::Series, tools, wrk};

/// The listener port in the server namespace.
const PORT: u16 = 8080;
/// Budget per source address: SYNs per second, and burst.
const RATE: u64 = 100;
const BURST: u64 = 100;
/// Flood source addresses (owned by the flood namespace).
const SOURCES: u8 = 16;
const MODES: [&str; 3] = ["none", "iptables", "xdp"];
/// The flood's rate, packets per second: fixed, so every protection faces the same flood;
/// below what the unprotected kernel can absorb on one core here (about 60,000 SYN/s),
/// so the difference shows as CPU left for the good client.
const FLOOD_PPS: u64 = 40_000;
/// Frames sent per pacing step.
const BATCH: usize = 32;

/// How the scenario runs.
#[derive(Clone, Debug)]
pub struct FloodPlan {
    pub runs: u32,
    pub duration_s: u64,
    pub connections: u32,
    pub proxy_core: usize,
    pub load_core: usize,
}

struct Site {
    srv: NetNs,
    good: NetNs,
    flood: NetNs,
    pg: VethPair,
    pf: VethPair,
    dir: TempDir,
    pin_dir: PathBuf,
    _upstream: Group,
    _control: Group,
    dataplane: Group,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn in_ns(ns: &NetNs, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name(), program]);
    cmd
}

fn wait_in(ns: &NetNs, addr: SocketAddr, secs: u64) -> anyhow::Result<bool> {
    Ok(ns.run(|| wait_for_port(addr, Duration::from_secs(secs)))?)
}

fn control_config(grpc: u16, admin: u16, upstream: u16, kernel: &str) -> String {
    let listener = omnirelay_test_support::config::budgeted_listener(
        "edge",
        &format!("0.0.0.0:{PORT}"),
        &format!("127.0.0.1:{upstream}"),
        RATE,
        BURST,
        true,
    );
    format!(
        "[control]\ngrpc_listen = \"127.0.0.1:{grpc}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n{listener}{kernel}\n"
    )
}

fn setup(omni: &Path, plan: &FloodPlan, nofile: u64) -> anyhow::Result<Site> {
    let srv = NetNs::new("fls")?;
    let good = NetNs::new("flg")?;
    let flood = NetNs::new("flf")?;
    let pg = VethPair::new(&srv, &good)?;
    let pf = VethPair::new(&srv, &flood)?;
    let base = pf.b.ipv4.octets();
    for i in 0..SOURCES {
        let a = Ipv4Addr::new(base[0], base[1], base[2], 100 + i);
        flood.ip(&["addr", "add", &format!("{a}/24"), "dev", &pf.b.ifname])?;
    }
    let dir = TempDir::new("bench-flood");
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/omnirelay-bench-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&pin_dir);

    // Upstream nginx in the server namespace, on the load core.
    let root = dir.path().join("www");
    configs::write_bodies(&root, &[100])?;
    let up_port = 9080;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        configs::upstream_nginx(dir.path(), &root, up_port, nofile),
    )?;
    let mut cmd = in_ns(&srv, "taskset");
    cmd.args(["-c", &plan.load_core.to_string()])
        .arg(tools::program("nginx")?)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path());
    let upstream = Group::spawn(cmd, &dir.path().join("nginx.log"))?;
    if !wait_in(&srv, SocketAddr::from(([127, 0, 0, 1], up_port)), 10)? {
        bail!("upstream nginx did not start:\n{}", upstream.log_tail(20));
    }

    // The control daemon that feeds the data plane (no kernel section: protections are
    // switched per run).
    let cfg = dir.path().join("omnirelay.toml");
    std::fs::write(&cfg, control_config(7800, 7801, up_port, ""))?;
    let mut cmd = in_ns(
        &srv,
        omni.join("omnirelay-control").to_str().context("path")?,
    );
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let control = Group::spawn(cmd, &dir.path().join("control.log"))?;
    if !wait_in(&srv, SocketAddr::from(([127, 0, 0, 1], 7801)), 15)? {
        bail!("control daemon did not start:\n{}", control.log_tail(20));
    }

    let mut cmd = in_ns(&srv, "taskset");
    cmd.args(["-c", &plan.proxy_core.to_string()])
        .arg(omni.join("omnirelay-dataplane"))
        .args(["--control", "http://127.0.0.1:7800", "--public-key"])
        .arg(dir.path().join("state/snapshot-signing.pub"))
        .args(["--workers", "1", "--no-pin", "--access-log", "off"])
        .args(["--admin", "127.0.0.1:9901"]);
    let dataplane = Group::spawn(cmd, &dir.path().join("dataplane.log"))?;
    if !wait_in(&srv, SocketAddr::from(([0, 0, 0, 0], PORT)), 15)? {
        bail!("data plane did not start:\n{}", dataplane.log_tail(20));
    }
    Ok(Site {
        srv,
        good,
        flood,
        pg,
        pf,
        dir,
        pin_dir,
        _upstream: upstream,
        _control: control,
        dataplane,
    })
}

/// A protection switched on for one run; switched off on drop.
enum Protection<'a> {
    None,
    Iptables(&'a NetNs, Vec<String>),
    Xdp(Option<Group>, PathBuf, PathBuf),
}

impl Drop for Protection<'_> {
    fn drop(&mut self) {
        match self {
            Protection::None => {}
            Protection::Iptables(ns, rule) => {
                let mut cmd = in_ns(ns, "iptables");
                cmd.arg("-D").args(rule.iter());
                let _ = cmd.output();
            }
            Protection::Xdp(group, control, pin_dir) => {
                // Stop the daemon, then remove the pins: that detaches the program.
                drop(group.take());
                let _ = Command::new(control)
                    .args(["kernel-detach", "--pin-dir"])
                    .arg(&*pin_dir)
                    .output();
            }
        }
    }
}

fn protect<'a>(site: &'a Site, omni: &Path, mode: &str) -> anyhow::Result<Protection<'a>> {
    match mode {
        "none" => Ok(Protection::None),
        "iptables" => {
            let rule: Vec<String> = [
                "INPUT",
                "-p",
                "tcp",
                "--syn",
                "--dport",
                &PORT.to_string(),
                "-m",
                "hashlimit",
                "--hashlimit-above",
                &format!("{RATE}/sec"),
                "--hashlimit-burst",
                &BURST.to_string(),
                "--hashlimit-mode",
                "srcip",
                "--hashlimit-name",
                "omnirelay_bench",
                "-j",
                "DROP",
            ]
            .iter()
            .map(ToString::to_string)
            .collect();
            let mut cmd = in_ns(&site.srv, "iptables");
            cmd.arg("-A").args(&rule);
            crate::run::run(&mut cmd)?;
            Ok(Protection::Iptables(&site.srv, rule))
        }
        "xdp" => {
            let kernel = format!(
                "[kernel]\ninterfaces = [\"{}\", \"{}\"]\nattach_mode = \"native\"\npin_dir = \"{}\"\n",
                site.pf.a.ifname,
                site.pg.a.ifname,
                site.pin_dir.display()
            );
            let cfg = site.dir.path().join("kernel.toml");
            std::fs::write(&cfg, control_config(7810, 7811, 9080, &kernel))?;
            let control = omni.join("omnirelay-control");
            let mut cmd = Command::new(&control);
            cmd.args(["run", "--config"])
                .arg(&cfg)
                .arg("--state-dir")
                .arg(site.dir.path().join("kstate"));
            // setns only: the daemon must see the host's /sys/fs/bpf.
            site.srv.enter(&mut cmd)?;
            let log = site.dir.path().join("kernel-control.log");
            let group = Group::spawn(cmd, &log)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("kernel limiter running")
            {
                if Instant::now() > deadline {
                    bail!("the XDP limiter did not start:\n{}", group.log_tail(20));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Protection::Xdp(Some(group), control, site.pin_dir.clone()))
        }
        other => bail!("unknown protection {other}"),
    }
}

fn mac_of(ns: &NetNs, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out)?;
    let text = v[0]["address"].as_str().context("no MAC address")?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP SYN frame with valid IPv4 and TCP checksums.
fn syn_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&PORT.to_be_bytes());
    tcp.extend_from_slice(&u32::from(sport).wrapping_mul(2_654_435_761).to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let pseudo_sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let c = checksum(&tcp, pseudo_sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// Sends SYN frames from the flood namespace at [`FLOOD_PPS`] until `stop`.
fn start_flood(
    site: &Site,
    core: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let src_mac = mac_of(&site.flood, &site.pf.b.ifname)?;
    let dst_mac = mac_of(&site.srv, &site.pf.a.ifname)?;
    let base = site.pf.b.ipv4.octets();
    let dst = site.pf.a.ipv4;
    let frames: Vec<Vec<u8>> = (0..1024u16)
        .map(|i| {
            let src = Ipv4Addr::new(
                base[0],
                base[1],
                base[2],
                100 + (i % u16::from(SOURCES)) as u8,
            );
            syn_frame(src_mac, dst_mac, src, dst, 20_000 + i)
        })
        .collect();
    let ns_path = site.flood.path();
    let ifname = site.pf.b.ifname.clone();
    Ok(std::thread::spawn(move || -> anyhow::Result<()> {
        let file = std::fs::File::open(ns_path)?;
        // SAFETY: setns, sched_setaffinity and socket syscalls on this thread, with a
        // descriptor (`file`) that outlives the call and a socket this thread closes.
        unsafe {
            use std::os::fd::AsRawFd as _;
            anyhow::ensure!(
                libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0,
                "setns: {}",
                std::io::Error::last_os_error()
            );
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            anyhow::ensure!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let name = std::ffi::CString::new(ifname)?;
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            addr.sll_halen = 6;
            let mut n = 0u64;
            let start = Instant::now();
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let due = start + Duration::from_secs_f64(next as f64 / FLOOD_PPS as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                for _ in 0..BATCH {
                    let f = &frames[next % frames.len()];
                    next += 1;
                    let r = libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&raw const addr).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    n += u64::from(r > 0);
                }
                sent.store(n, Ordering::Relaxed);
            }
            libc::close(fd);
        }
        Ok(())
    }))
}

/// One run under one protection: (wrk report, proxy CPU µs, flood packets per second).
fn measure(
    site: &Site,
    omni: &Path,
    plan: &FloodPlan,
    mode: &str,
) -> anyhow::Result<(wrk::WrkReport, f64, f64)> {
    let _protection = protect(site, omni, mode)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = start_flood(site, plan.load_core, Arc::clone(&stop), Arc::clone(&sent))?;
    let flood_start = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = site.dataplane.cpu_us();
    let mut cmd = in_ns(&site.good, "taskset");
    cmd.args(["-c", &plan.load_core.to_string(), "wrk", "-t1"])
        .arg(format!("-c{}", plan.connections))
        .arg(format!("-d{}s", plan.duration_s))
        .arg("--latency")
        .arg(format!(
            "http://{}{}",
            SocketAddr::new(IpAddr::V4(site.pg.a.ipv4), PORT),
            configs::body_path(100)
        ));
    let report = wrk::run(&mut cmd);
    let cpu = site.dataplane.cpu_us().saturating_sub(cpu0) as f64;
    stop.store(true, Ordering::Relaxed);
    let flooded = flood_start.elapsed().as_secs_f64();
    flood
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
    let pps = sent.load(Ordering::Relaxed) as f64 / flooded;
    Ok((report?, cpu, pps))
}

/// Runs the scenario.
pub fn run(omni: &Path, plan: &FloodPlan, nofile: u64) -> anyhow::Result<Value> {
    let started = Instant::now();
    tools::ensure_packages(&["iptables"])?;
    let site = setup(omni, plan, nofile)?;
    let mut rps = Series::new(
        "Good client requests/s during the SYN flood",
        "req/s, higher is better",
        false,
        "iptables",
    );
    let mut cpu = Series::new(
        "Proxy CPU per request during the flood",
        "µs, lower is better",
        true,
        "iptables",
    );
    let mut p99 = Series::new("Good client latency p99", "µs", true, "iptables");
    let mut offered = Series::new(
        "SYN flood sent (packets/s; the target is fixed)",
        "packets/s",
        false,
        "none",
    );
    let mut notes = Vec::new();
    for run in 0..plan.runs {
        for mode in MODES {
            match measure(&site, omni, plan, mode) {
                Ok((r, cpu_us, pps)) => {
                    rps.push(mode, r.rps);
                    if r.requests > 0 {
                        cpu.push(mode, cpu_us / r.requests as f64);
                    }
                    p99.push(mode, r.p99_us);
                    offered.push(mode, pps);
                    let errors = r.socket_errors() + r.non_2xx_3xx;
                    if errors > 0 {
                        notes.push(format!(
                            "run {run} {mode}: wrk reported {errors} errors (socket {}, non-2xx {})",
                            r.socket_errors(),
                            r.non_2xx_3xx
                        ));
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    println!("    {mode} failed: {why}");
                    for s in [&mut rps, &mut cpu, &mut p99, &mut offered] {
                        s.fail(mode, &why);
                    }
                }
            }
        }
    }
    if let (Some(x), Some(i), Some(n)) = (
        rps.median("xdp"),
        rps.median("iptables"),
        rps.median("none"),
    ) {
        notes.push(format!(
            "good-client requests/s: xdp {x:.0}, iptables {i:.0}, none {n:.0} (xdp/iptables {:.2}×, xdp/none {:.2}×)",
            x / i,
            x / n
        ));
    }
    let knobs = json!({
        "runs": plan.runs,
        "duration_s": plan.duration_s,
        "connections": plan.connections,
        "proxy_core": plan.proxy_core,
        "load_core": plan.load_core,
        "budget_per_source": { "rate_per_second": RATE, "burst": BURST, "charged": "TCP SYN" },
        "flood_sources": SOURCES,
        "flood_pps": FLOOD_PPS,
        "xdp_attach_mode": "native",
        "protections": MODES,
    });
    let doc = series::scenario_json(
        super::FLOOD,
        started.elapsed().as_secs_f64(),
        knobs,
        &[rps, cpu, p99, offered],
        &notes,
    );
    drop(site);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_frames_carry_valid_checksums() {
        let f = syn_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 1, 100),
            Ipv4Addr::new(198, 18, 1, 1),
            20_000,
        );
        assert_eq!(f.len(), 54);
        // A correct checksum sums (with itself) to zero.
        assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 header");
        let mut pseudo = 0u32;
        for c in [&f[26..30], &f[30..34]] {
            pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]))
                + u32::from(u16::from_be_bytes([c[2], c[3]]));
        }
        pseudo += 6 + 20;
        assert_eq!(checksum(&f[34..54], pseudo), 0, "TCP segment");
        assert_eq!(f[47], 0x02, "SYN only");
    }
}
