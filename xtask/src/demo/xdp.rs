//! `cargo xtask demo --xdp`: the XDP counter on live traffic. Two network namespaces joined by a
//! veth pair; `omnirelay-control xdp-count` attaches the program to the server end and
//! prints its counters each second while the client end sends UDP over IPv4 and IPv6.
//! Everything is torn down at the end (after `--duration`, or on Ctrl-C).

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use omnirelay_test_support::{
    NetNs, VethPair,
    caps::{self, Capability},
};

use crate::run::{self, step};

use super::INTERRUPTED;

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

    step("creating two network namespaces joined by a veth pair");
    let client = NetNs::new("demo-client")?;
    let server = NetNs::new("demo-server")?;
    let pair = VethPair::new(&client, &server)?;
    println!(
        "    client {} ({}, {}) in {}",
        pair.a.ifname,
        pair.a.ipv4,
        pair.a.ipv6,
        client.name()
    );
    println!(
        "    server {} ({}, {}) in {}",
        pair.b.ifname,
        pair.b.ipv4,
        pair.b.ipv6,
        server.name()
    );

    step("attaching the XDP counter to the server end (generic mode)");
    let mut child = server
        .command(daemon.to_str().context("non-UTF-8 target path")?)
        .args(["xdp-count", "--iface", &pair.b.ifname, "--mode", "generic"])
        .args(["--interval", "1", "--duration", &args.duration.to_string()])
        .spawn()
        .context("start omnirelay-control")?;

    std::thread::sleep(Duration::from_millis(500));
    println!(
        "    inspect it meanwhile: ip -n {} -d link show {}",
        server.name(),
        pair.b.ifname
    );

    let stop = Arc::new(AtomicBool::new(false));
    let targets = [
        SocketAddr::from((pair.b.ipv4, 9)),
        SocketAddr::from((pair.b.ipv6, 9)),
    ];
    let period = Duration::from_secs(1) / args.rate.max(1);
    let deadline = Instant::now() + Duration::from_secs(args.duration.max(1));
    let sent = client.run(|| -> anyhow::Result<u64> {
        let v4 = UdpSocket::bind("0.0.0.0:0")?;
        let v6 = UdpSocket::bind("[::]:0")?;
        let mut sent = 0u64;
        while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // A send can fail while IPv6 neighbour discovery settles; keep going.
            sent += u64::from(v4.send_to(b"omnirelay demo", targets[0]).is_ok());
            sent += u64::from(v6.send_to(b"omnirelay demo", targets[1]).is_ok());
            std::thread::sleep(period);
        }
        Ok(sent)
    })??;
    stop.store(true, Ordering::Relaxed);

    // The daemon stops by itself at the same deadline (or got the same Ctrl-C).
    let status = child.wait().context("wait for omnirelay-control")?;
    step("done");
    println!("    client sent {sent} datagrams; omnirelay-control exited with {status}");
    println!("    namespaces and veth pair removed");
    if !status.success() && !INTERRUPTED.load(Ordering::Relaxed) {
        bail!("omnirelay-control failed ({status})");
    }
    Ok(())
}
