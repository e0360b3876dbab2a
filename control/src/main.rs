//! `omnirelay-control`: the control daemon's command line.
//!
//! Today it drives the kernel side: `xdp-count` attaches the XDP counter to an interface
//! and prints what it counts. The snapshot compiler and publisher join it with the
//! control-plane slice.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use omnirelay_control::kernel::{AttachMode, XdpCounter};
use omnirelay_ebpf_common::TrafficClass;

#[derive(Parser, Debug)]
#[command(
    name = "omnirelay-control",
    version,
    about = "OmniRelay control daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach the XDP packet counter to an interface and print its counters.
    XdpCount {
        /// Interface to attach to (in this process's network namespace).
        #[arg(long)]
        iface: String,
        /// Attach mode: generic (skb), native (driver) or offload.
        #[arg(long, default_value = "generic")]
        mode: AttachMode,
        /// Seconds between two printed lines.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many seconds (default: until SIGINT or SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("sigaction({sig})"))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::XdpCount {
            iface,
            mode,
            interval,
            duration,
        } => xdp_count(&iface, mode, interval, duration),
    }
}

fn xdp_count(
    iface: &str,
    mode: AttachMode,
    interval: f64,
    duration: Option<f64>,
) -> anyhow::Result<()> {
    install_signal_handlers()?;
    let counter = XdpCounter::attach(iface, mode)?;
    let interval = Duration::from_secs_f64(interval.max(0.05));
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let header: Vec<String> = TrafficClass::ALL
        .iter()
        .map(|c| format!("{:>10}", c.name()))
        .collect();
    println!("{:>8} {}", "seconds", header.join(" "));
    let start = Instant::now();
    loop {
        let step_end = Instant::now() + interval;
        while Instant::now() < step_end && !STOP.load(Ordering::Relaxed) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let counts = counter.read()?;
        let cells: Vec<String> = TrafficClass::ALL
            .iter()
            .map(|c| format!("{:>10}", counts.get(*c).packets))
            .collect();
        println!("{:>8.1} {}", start.elapsed().as_secs_f64(), cells.join(" "));
        if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    tracing::info!(interface = iface, "detaching XDP program");
    Ok(())
}
