//! `omnirelay-dataplane`: the proxy. Subscribes to the control daemon (and/or starts from a
//! snapshot file), verifies every snapshot against the control plane's public key, and
//! serves HTTP/1.1 on one pinned io_uring worker per core.
//!
//! SIGTERM or SIGINT drains it: no new connections, idle ones closed, open requests
//! answered (with `connection: close`), then it exits, after `--drain-timeout` at most; a
//! second signal exits at once. SIGUSR1 reopens the access log file; SIGHUP is ignored.
//!
//! This file is the one place the data plane names provider crates ([`providers`]); the
//! library only knows their contracts.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, OnceLock, mpsc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use omnirelay_dataplane::{
    admin, health,
    lb::Strategies,
    proxy::{self, ProxyOptions},
    snapshot::{
        ControlClient, ControlTlsFiles, SnapshotHolder, SnapshotVerifier, spawn_control_client,
    },
    telemetry::{AccessLog, Metrics},
};
use omnirelay_plugin_topology::{RendezvousStrategy, RingHashStrategy};

#[derive(Parser, Debug)]
#[command(
    name = "omnirelay-dataplane",
    version,
    about = "OmniRelay data plane (HTTP/1.1 proxy)"
)]
struct Cli {
    /// Control daemon gRPC endpoint, e.g. http://127.0.0.1:7800.
    #[arg(long)]
    control: Option<String>,
    /// CA certificates (PEM) the control daemon's certificate must chain to; needed with an
    /// https:// --control endpoint.
    #[arg(long, requires = "control")]
    control_ca: Option<PathBuf>,
    /// This data plane's certificate (PEM), for a control daemon that requires one
    /// (`[control.tls].client_ca`).
    #[arg(long, requires_all = ["control", "control_key"])]
    control_cert: Option<PathBuf>,
    /// The private key of --control-cert (PEM).
    #[arg(long, requires_all = ["control", "control_cert"])]
    control_key: Option<PathBuf>,
    /// The name the control daemon's certificate must hold (default: the --control host).
    #[arg(long, requires = "control")]
    control_server_name: Option<String>,
    /// The control plane's public key: a file (snapshot-signing.pub) or the hex itself.
    #[arg(long)]
    public_key: String,
    /// Start from this encoded SignedSnapshot (e.g. saved from /v1/snapshot).
    #[arg(long)]
    snapshot_file: Option<PathBuf>,
    /// Keep every snapshot received from the control daemon in this file (replaced whole)
    /// and start from it: a data plane restarted while the control daemon is away serves
    /// its last configuration instead of waiting.
    #[arg(long)]
    snapshot_cache: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// io_uring completion delivery: default, coop or defer (see the proxy docs).
    #[arg(long, default_value = "coop")]
    uring_mode: proxy::UringMode,
    /// io_uring submission queue entries per worker.
    #[arg(long, default_value_t = 1024)]
    ring_entries: u32,
    /// Admin address (/metrics, /healthz, /snapshot).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Access log: a file path, "-" for stdout, or "off".
    #[arg(long, default_value = "-")]
    access_log: String,
    /// Name reported to the control daemon.
    #[arg(long, default_value = "dataplane")]
    node_id: String,
    /// Register the worker sockets with the kernel steering program the control daemon
    /// pinned in this folder (its `[kernel].pin_dir`, with `steering = true`).
    #[arg(long)]
    steering_pin_dir: Option<PathBuf>,
    /// After a response on a reused connection, read the next request directly (buffers
    /// kept) for this long before falling back to a buffer-less readiness wait
    /// (milliseconds; 0: always wait). Keep it above the kernel's tick (4 ms at HZ=250):
    /// a shorter window makes every sleep of a busy worker reprogram the CPU's timer.
    #[arg(long, default_value_t = 20)]
    client_hot_read_ms: u64,
    /// Seconds to wait for the first snapshot.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// On SIGTERM or SIGINT, seconds open requests are given to finish before the process
    /// exits with them cut.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// On SIGTERM or SIGINT, milliseconds `/healthz` fails while the listeners still accept,
    /// before the drain closes them: time for a load balancer's health checks to take the
    /// data plane out of rotation.
    #[arg(long, default_value_t = 0)]
    drain_delay_ms: u64,
}

/// The providers of the hash-based balancing policies: the first-party strategies, with
/// the default ring size (the snapshot format has no per-cluster ring size).
fn providers() -> Strategies {
    Strategies {
        ring_hash: Arc::new(RingHashStrategy::default()),
        rendezvous: Arc::new(RendezvousStrategy),
    }
}

fn main() -> anyhow::Result<()> {
    // Blocked before any thread starts (each inherits the mask), so that only the signal
    // thread of `handle_signals` receives them.
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        handled.add(s);
    }
    handled
        .thread_block()
        .context("blocking SIGTERM, SIGINT, SIGUSR1 and SIGHUP")?;
    let log_slot: Arc<OnceLock<AccessLog>> = Arc::default();
    let signals = handle_signals(handled, Arc::clone(&log_slot))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let key_text = if std::path::Path::new(&cli.public_key).is_file() {
        std::fs::read_to_string(&cli.public_key)
            .with_context(|| format!("reading {}", cli.public_key))?
    } else {
        cli.public_key.clone()
    };
    let verifier =
        SnapshotVerifier::from_hex(&key_text).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    // New health-checked clusters are warmed before their snapshot is swapped in.
    let holder = Arc::new(
        SnapshotHolder::new(verifier, providers())
            .with_warmer(health::warmer(Arc::clone(&metrics))),
    );

    if let Some(path) = &cli.snapshot_file {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if let Err(e) = holder.apply_bytes(&bytes) {
            anyhow::ensure!(cli.control.is_some(), "{}: {e}", path.display());
        }
    }
    if let Some(path) = &cli.snapshot_cache {
        // Verified like any snapshot; one that is missing, stale or refused is passed over
        // and the data plane waits for the control daemon.
        match std::fs::read(path) {
            Ok(bytes) => match holder.apply_bytes(&bytes) {
                Ok(version) => {
                    tracing::info!(version, path = %path.display(), "starting from the snapshot cache")
                }
                Err(e) => tracing::warn!(path = %path.display(), "snapshot cache not used: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "snapshot cache not read: {e}"),
        }
    }
    if let Some(endpoint) = &cli.control {
        let tls = ControlTlsFiles {
            ca: cli.control_ca.clone(),
            cert: cli.control_cert.clone(),
            key: cli.control_key.clone(),
            server_name: cli.control_server_name.clone(),
        }
        .load(endpoint)
        .map_err(anyhow::Error::msg)?;
        spawn_control_client(
            ControlClient {
                endpoint: endpoint.clone(),
                node_id: cli.node_id.clone(),
                cache: cli.snapshot_cache.clone(),
                tls,
            },
            Arc::clone(&holder),
        )?;
    }
    anyhow::ensure!(
        cli.control.is_some() || cli.snapshot_file.is_some(),
        "give --control, --snapshot-file, or both"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(cli.wait);
    while holder.version() == 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no valid snapshot within {} s",
            cli.wait
        );
        if let Ok(signal) = signals.recv_timeout(Duration::from_millis(20)) {
            tracing::info!(%signal, "stopped before serving (no snapshot yet)");
            return Ok(());
        }
    }

    let access_log = match cli.access_log.as_str() {
        "off" => AccessLog::disabled(Arc::clone(&metrics)),
        "-" => AccessLog::start(Box::new(std::io::stdout()), 8192, Arc::clone(&metrics))?,
        path => AccessLog::start_file(path.into(), 8192, Arc::clone(&metrics))
            .with_context(|| format!("opening access log {path}"))?,
    };
    let log_handle = access_log.clone();
    let _ = log_slot.set(access_log.clone());
    let mut opts = ProxyOptions {
        steering: cli.steering_pin_dir.clone(),
        ..ProxyOptions::default()
    };
    if let Some(w) = cli.workers {
        opts.workers = w;
    }
    opts.pin = !cli.no_pin;
    opts.uring_mode = cli.uring_mode;
    opts.ring_entries = cli.ring_entries;
    opts.settings.client_hot_read = Duration::from_millis(cli.client_hot_read_ms);
    let proxy = proxy::start(Arc::clone(&holder), Arc::clone(&metrics), access_log, opts)?;
    health::spawn(Arc::clone(&holder), Arc::clone(&metrics))
        .context("starting the health checker")?;
    let admin_addr = admin::spawn(
        cli.admin,
        Arc::clone(&holder),
        Arc::clone(&metrics),
        proxy.drivers.clone(),
        Arc::clone(&proxy.drain),
    )
    .with_context(|| format!("binding admin address {}", cli.admin))?;
    tracing::info!(%admin_addr, listeners = ?proxy.bound, "data plane ready");

    let Ok(signal) = signals.recv() else {
        // No signal can arrive any more: serve until the process is killed.
        proxy.join();
        return Ok(());
    };
    stop(&cli, &proxy, &signals, &metrics, signal);
    if !log_handle.close(Duration::from_secs(1)) {
        tracing::warn!("the access log writer did not finish; its last lines may be lost");
    }
    Ok(())
}

/// After the first stop `signal`: announces the drain for `--drain-delay-ms`, drains for up
/// to `--drain-timeout`, and returns when the workers have ended, at the timeout, or at a
/// second signal.
fn stop(
    cli: &Cli,
    proxy: &proxy::Proxy,
    signals: &mpsc::Receiver<Signal>,
    metrics: &Metrics,
    signal: Signal,
) {
    let second = |again: Signal| {
        tracing::warn!(signal = %again, cut = metrics.open_connections(), "second signal: stopping now");
    };
    if cli.drain_delay_ms > 0 {
        proxy.drain.announce();
        tracing::info!(%signal, delay_ms = cli.drain_delay_ms, "stopping: /healthz fails from now on, still accepting; draining after the delay");
        if let Ok(again) = signals.recv_timeout(Duration::from_millis(cli.drain_delay_ms)) {
            return second(again);
        }
    }
    tracing::info!(%signal, open = metrics.open_connections(), timeout_s = cli.drain_timeout, "draining: no new connections, idle ones closed, open requests finish (a second signal stops at once)");
    proxy.drain();
    let until = Instant::now() + Duration::from_secs(cli.drain_timeout);
    loop {
        if proxy.wait_until(until.min(Instant::now() + Duration::from_millis(50))) {
            return tracing::info!("drained: every connection closed");
        }
        if let Ok(again) = signals.try_recv() {
            return second(again);
        }
        if Instant::now() >= until {
            return tracing::warn!(
                cut = metrics.open_connections(),
                "drain timeout: stopping with connections open"
            );
        }
    }
}

/// A thread that receives the (blocked) `signals`: SIGUSR1 reopens the access log file
/// (after a rotation, as nginx does), SIGHUP is logged and ignored (the configuration
/// comes from the control plane), and the stop signals are handed over in order.
fn handle_signals(
    signals: SigSet,
    log: Arc<OnceLock<AccessLog>>,
) -> anyhow::Result<mpsc::Receiver<Signal>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = signals.wait() {
                match signal {
                    Signal::SIGUSR1 => {
                        if log.get().is_some_and(AccessLog::reopen) {
                            tracing::info!("SIGUSR1: the access log file is reopened before its next line");
                        } else {
                            tracing::info!("SIGUSR1 ignored: no access log file to reopen");
                        }
                    }
                    Signal::SIGHUP => tracing::info!(
                        "SIGHUP ignored: the data plane's configuration comes from the control plane"
                    ),
                    stop => {
                        if tx.send(stop).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}
