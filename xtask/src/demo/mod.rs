//! `cargo xtask demo`: OmniRelay on its embedded defaults. Starts two demo upstreams, the
//! control daemon on the shipped example config (state in a temp dir) and the data plane,
//! sends requests through, changes the config live and shows the routing change, shows an
//! invalid config being rejected while traffic continues, and prints where to look. Ends
//! after `--duration` seconds or on Ctrl-C, leaving nothing running.
//!
//! `cargo xtask demo --xdp` runs the kernel demo instead: the XDP limiter, attached by the
//! control daemon, holding a flooding client to its budget while a polite one loses nothing.

mod upstream;
mod xdp;

use std::{
    net::SocketAddr,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use omnirelay_test_support::process::{ChildGuard, TempDir, wait_for_port, wait_until};

use crate::run::{self, step};

/// Options of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Seconds to keep everything running at the end, for a look around (Ctrl-C ends early).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Run the XDP limiter demo instead (root, network namespaces).
    #[arg(long)]
    pub xdp: bool,
    /// XDP demo: datagrams per second the flooding client sends.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
}

pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C reaches the whole process group; catching it lets the demo clean up first.
pub(crate) fn catch_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
}

const CONTROL_ADMIN: &str = "127.0.0.1:7801";
const DATAPLANE_ADMIN: &str = "127.0.0.1:9901";
const PROXY: &str = "127.0.0.1:8080";

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if args.xdp {
        return xdp::run(args);
    }
    catch_ctrl_c();
    step("building omnirelay-control and omnirelay-dataplane");
    run::run(run::cargo().args([
        "build",
        "--quiet",
        "-p",
        "omnirelay-control",
        "-p",
        "omnirelay-dataplane",
    ]))?;
    let bin = run::workspace_root().join("target/debug");

    let dir = TempDir::new("demo");
    let config = dir.path().join("omnirelay.toml");
    let example = run::output(Command::new(bin.join("omnirelay-control")).arg("example-config"))
        .context("omnirelay-control example-config")?;
    std::fs::write(&config, format!("{example}\n"))?;

    step("starting two demo upstreams (A on :9101, B on :9102)");
    let _a = upstream::DemoUpstream::start("127.0.0.1:9101".parse()?, "A")?;
    let _b = upstream::DemoUpstream::start("127.0.0.1:9102".parse()?, "B")?;

    step("starting the control daemon on the shipped example config");
    let mut control_cmd = Command::new(bin.join("omnirelay-control"));
    control_cmd
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let control = ChildGuard::spawn(
        "omnirelay-control",
        control_cmd,
        &dir.path().join("control.log"),
    )?;
    wait_listening(CONTROL_ADMIN, &control)?;
    println!(
        "    config {}; state (signing key, SQLite history) in {}",
        config.display(),
        dir.path().join("state").display()
    );

    step("starting the data plane (one io_uring worker per core)");
    let mut dp_cmd = Command::new(bin.join("omnirelay-dataplane"));
    dp_cmd
        .args(["--control", "http://127.0.0.1:7800", "--public-key"])
        .arg(dir.path().join("state/snapshot-signing.pub"))
        .args(["--admin", DATAPLANE_ADMIN, "--access-log"])
        .arg(dir.path().join("access.log"));
    let dataplane = ChildGuard::spawn(
        "omnirelay-dataplane",
        dp_cmd,
        &dir.path().join("dataplane.log"),
    )?;
    wait_listening(PROXY, &dataplane)?;
    wait_listening(DATAPLANE_ADMIN, &dataplane)?;

    step("requests through the proxy (snapshot version 1)");
    for path in [
        "/api/users",
        "/api/orders",
        "/api/users",
        "/",
        "/index.html",
    ] {
        println!("    GET {path:<12} -> {}", http_get(PROXY, path)?);
    }

    step("changing the config live: route \"default\" now goes to B");
    let text = std::fs::read_to_string(&config)?;
    let changed = text.replace(
        "endpoints = [{ address = \"127.0.0.1:9101\", weight = 1 }]",
        "endpoints = [{ address = \"127.0.0.1:9102\", weight = 1 }]",
    );
    if changed == text {
        bail!("the example config no longer has the endpoint the demo edits");
    }
    write_atomically(&config, &changed)?;
    let started = Instant::now();
    if !wait_until(Duration::from_secs(10), || {
        dataplane_version().is_ok_and(|v| v >= 2)
    }) {
        bail!(
            "the data plane did not take the new snapshot:\n{}",
            dataplane.log()
        );
    }
    println!(
        "    version 2 live on the data plane after {:.0?}",
        started.elapsed()
    );
    for path in ["/", "/index.html"] {
        println!("    GET {path:<12} -> {}", http_get(PROXY, path)?);
    }

    step("an invalid config is rejected; the running snapshot stays");
    write_atomically(
        &config,
        &changed.replace("lb = \"least_request\"", "lb = \"fastest\""),
    )?;
    let reply = run::output(Command::new("curl").args([
        "-s",
        "-X",
        "POST",
        &format!("http://{CONTROL_ADMIN}/control/reload"),
    ]))
    .unwrap_or_else(|| "(curl not available)".into());
    println!("    POST /control/reload -> {reply}");
    println!("    GET /            -> {}", http_get(PROXY, "/")?);
    write_atomically(&config, &changed)?;

    step("where to look");
    println!("    proxy                 http://{PROXY}/");
    println!("    data plane metrics    http://{DATAPLANE_ADMIN}/metrics");
    println!("    data plane snapshot   http://{DATAPLANE_ADMIN}/snapshot");
    println!("    data plane clusters   http://{DATAPLANE_ADMIN}/clusters");
    println!("    control snapshot      http://{CONTROL_ADMIN}/control/snapshot");
    println!("    control history       http://{CONTROL_ADMIN}/control/history");
    println!("    control metrics       http://{CONTROL_ADMIN}/metrics");
    println!(
        "    access log            {}",
        dir.path().join("access.log").display()
    );
    println!(
        "    edit the config       {}  (applied within a second)",
        config.display()
    );
    println!("\n    running for {} s; Ctrl-C to stop now", args.duration);
    let end = Instant::now() + Duration::from_secs(args.duration);
    while Instant::now() < end && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(dataplane);
    drop(control);
    step("stopped the data plane, the control daemon and the upstreams; removed the temp dir");
    Ok(())
}

fn wait_listening(addr: &str, child: &ChildGuard) -> anyhow::Result<()> {
    let sock: SocketAddr = addr.parse()?;
    if !wait_for_port(sock, Duration::from_secs(20)) {
        bail!("nothing listens on {addr}; log:\n{}", child.log());
    }
    Ok(())
}

fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A minimal HTTP/1.1 GET over a fresh connection; returns the body's first line.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(format!("{status}: {body}"))
}

fn dataplane_version() -> anyhow::Result<u64> {
    let body = run::output(
        Command::new("curl").args(["-s", &format!("http://{DATAPLANE_ADMIN}/snapshot")]),
    )
    .context("curl")?;
    let v = body
        .split("\"version\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .context("no version")?;
    Ok(v)
}
