//! `omnirelay-control`: the control daemon's command line.
//!
//! - `run`: the daemon (publishes signed snapshots of the config, watches it for changes).
//! - `validate FILE`: checks a config and lists every error with its field path.
//! - `example-config`: prints the embedded example config.
//! - `xdp-count`: attaches the XDP counter to an interface and prints what it counts.

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
    /// Run the control daemon.
    Run {
        /// The config file (TOML); `example-config` prints a starting point.
        #[arg(long)]
        config: std::path::PathBuf,
        /// Directory for the signing key and the snapshot history (created if missing).
        #[arg(long, default_value = "/var/lib/omnirelay")]
        state_dir: std::path::PathBuf,
        /// Overrides `[control].grpc_listen`.
        #[arg(long)]
        grpc_listen: Option<std::net::SocketAddr>,
        /// Overrides `[control].admin_listen`.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Check a config file; prints every error with its field path, exits 1 if any.
    Validate {
        /// The config file.
        file: std::path::PathBuf,
    },
    /// Print the embedded example config.
    ExampleConfig,
    /// Measure the XDP limiter's cost per packet with BPF_PROG_TEST_RUN, beside a program
    /// that only drops (prints one JSON object per run).
    XdpCost {
        /// Runs of each program per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements.
        #[arg(long, default_value_t = 1)]
        runs: u32,
    },
    /// Detach the kernel programs and remove every pinned map, link and program under the
    /// pin folder (enforcement stops).
    KernelDetach {
        /// The `[kernel].pin_dir` to remove.
        #[arg(long, default_value = omnirelay_control::config::DEFAULT_PIN_DIR)]
        pin_dir: std::path::PathBuf,
    },
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
        Command::Run {
            config,
            state_dir,
            grpc_listen,
            admin_listen,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(omnirelay_control::daemon::run(
                omnirelay_control::daemon::DaemonOptions {
                    config,
                    state_dir,
                    grpc_listen,
                    admin_listen,
                },
            ))
        }
        Command::Validate { file } => validate(&file),
        Command::ExampleConfig => {
            print!("{}", omnirelay_control::EXAMPLE_CONFIG);
            Ok(())
        }
        Command::XdpCost { repeat, runs } => {
            for _ in 0..runs {
                let sample = omnirelay_control::kernel::cost::measure(repeat)?;
                println!("{}", serde_json::to_string(&sample)?);
            }
            Ok(())
        }
        Command::KernelDetach { pin_dir } => {
            omnirelay_control::kernel::remove_pins(&pin_dir)?;
            println!("removed {} (programs detached)", pin_dir.display());
            Ok(())
        }
        Command::XdpCount {
            iface,
            mode,
            interval,
            duration,
        } => xdp_count(&iface, mode, interval, duration),
    }
}

fn validate(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match omnirelay_control::config::parse(&text, &file.display().to_string()) {
        Ok(c) => {
            // The files `[control.tls]` names are read too, relative to the config's folder
            // as the daemon reads them.
            if let Some(tls) = &c.control.tls
                && let Err(e) =
                    omnirelay_control::daemon::ControlTls::load(tls, file, Default::default())
            {
                eprintln!("{}: {e}", file.display());
                std::process::exit(1);
            }
            println!(
                "{}: ok ({} listeners, {} routes, {} clusters, {} budgets)",
                file.display(),
                c.listeners.len(),
                c.routes.len(),
                c.clusters.len(),
                c.budgets.len()
            );
            Ok(())
        }
        Err(errors) => {
            eprint!("{errors}");
            std::process::exit(1);
        }
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
