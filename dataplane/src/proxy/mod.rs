//! The I/O shell: one worker thread per core, each a pinned monoio runtime on io_uring
//! (epoll only where io_uring is unavailable, and logged), each with its own SO_REUSEPORT
//! listener socket per listener. Workers share nothing mutable on the request path; they
//! read the current snapshot through the [`SnapshotHolder`].

mod answer;
mod body;
mod deadline;
mod downstream;
mod drain;
mod duplex;
mod forward;
mod idle;
mod io;
mod pool;
mod slot;
mod worker;

use std::{
    net::SocketAddr,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use drain::Drain;

use crate::{
    snapshot::SnapshotHolder,
    steering::{SharedSteering, Steering},
    telemetry::{AccessLog, Metrics},
};

/// Tuning of the client side and pool housekeeping (the client timeouts are per listener,
/// in the snapshot).
#[derive(Clone, Copy, Debug)]
pub struct ProxySettings {
    /// After a response on a connection already reused (its second request or later), the
    /// connection keeps its buffers and reads the next request directly for this long, one operation per request instead of a readiness wait and
    /// then a read. A connection quiet for longer gives its buffers back and waits for
    /// readability holding none. Zero waits for readability after every response.
    ///
    /// The default, 20 ms, is longer than a scheduler tick (4 ms at HZ=250, 10 ms at
    /// HZ=100) on purpose: the worker sleeps in `io_uring_enter` with a timeout at its
    /// nearest timer, and a window shorter than a tick puts that timer before the next
    /// tick at almost every sleep, so the kernel reprograms the CPU's timer on the way to
    /// sleep and back (a VM exit each in a guest); see docs/status.md.
    pub client_hot_read: Duration,
    /// Pooled upstream connections are closed after this, whatever the cluster says.
    pub upstream_idle_max: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            client_hot_read: Duration::from_millis(20),
            upstream_idle_max: Duration::from_secs(300),
        }
    }
}

/// io_uring completion delivery. Completions of a worker's socket operations are produced
/// on whichever CPU processed the packet; by default the kernel interrupts the worker's CPU
/// for each, `CoopTaskrun` lets it finish what it is doing first, and `DeferTaskrun` runs
/// that work only when the worker asks for completions (kernel 6.1+, one thread per ring,
/// which is how workers run anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UringMode {
    /// The kernel's default.
    Default,
    /// IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG: measured here at about 25%
    /// less CPU per request than the default (bench/, http1-keepalive).
    #[default]
    CoopTaskrun,
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: as cheap as `CoopTaskrun`
    /// on average, but with occasional latency spikes under monoio's polling pattern.
    DeferTaskrun,
}

impl std::str::FromStr for UringMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(UringMode::Default),
            "coop" => Ok(UringMode::CoopTaskrun),
            "defer" => Ok(UringMode::DeferTaskrun),
            other => Err(format!(
                "unknown io_uring mode {other:?} (default, coop, defer)"
            )),
        }
    }
}

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Worker threads (one per core by default).
    pub workers: usize,
    /// Pin worker `i` to CPU `i % cores`.
    pub pin: bool,
    /// Listen backlog per worker socket.
    pub backlog: i32,
    /// io_uring submission queue entries per worker.
    pub ring_entries: u32,
    /// How completions are delivered to the worker (see [`UringMode`]).
    pub uring_mode: UringMode,
    /// Timeouts.
    pub settings: ProxySettings,
    /// Register the worker sockets with the kernel steering program pinned here (see
    /// [`crate::steering`]); start-up fails if it cannot.
    pub steering: Option<std::path::PathBuf>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: true,
            backlog: 1024,
            ring_entries: 1024,
            uring_mode: UringMode::CoopTaskrun,
            settings: ProxySettings::default(),
            steering: None,
        }
    }
}

/// The running workers.
#[derive(Debug)]
pub struct Proxy {
    threads: Vec<JoinHandle<()>>,
    /// Started by [`Proxy::drain`]; the admin API reports it.
    pub drain: Arc<Drain>,
    /// The addresses bound, in snapshot listener order.
    pub bound: Vec<SocketAddr>,
    /// Which I/O driver each worker runs ("io_uring" or "epoll").
    pub drivers: Vec<&'static str>,
}

impl Proxy {
    /// Waits for the workers (they run until a drain ends them).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Starts a graceful shutdown (see [`Drain`]); false if one had started already.
    pub fn drain(&self) -> bool {
        self.drain.start()
    }

    /// Waits until every worker has ended or `until` passes; returns whether they ended.
    pub fn wait_until(&self, until: Instant) -> bool {
        loop {
            if self.threads.iter().all(JoinHandle::is_finished) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }
}

/// Starts the workers on the listeners of the current snapshot (there must be one).
pub fn start(
    holder: Arc<SnapshotHolder>,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    opts: ProxyOptions,
) -> std::io::Result<Proxy> {
    let Some(cfg) = holder.current() else {
        return Err(std::io::Error::other(
            "no snapshot loaded: nothing to listen on",
        ));
    };
    let addrs: Vec<SocketAddr> = cfg.listeners.iter().map(|l| l.address).collect();
    let version = cfg.version;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let steering: Option<SharedSteering> = match &opts.steering {
        Some(pin_dir) => Some(Arc::new(std::sync::Mutex::new(
            Steering::open(pin_dir, opts.workers.max(1)).map_err(std::io::Error::other)?,
        ))),
        None => None,
    };
    let drain = Arc::new(Drain::new(Arc::clone(&holder)));
    type Ready = Result<&'static str, String>;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
    let mut threads = Vec::new();
    for id in 0..opts.workers.max(1) {
        let holder = Arc::clone(&holder);
        let stats = metrics.add_worker();
        let log = access_log.clone();
        let addrs = addrs.clone();
        let opts = opts.clone();
        let ready = ready_tx.clone();
        let steering = steering.clone();
        let drain = Arc::clone(&drain);
        let t = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                if opts.pin {
                    pin_to_core(id % cores);
                }
                let mut urb = io_uring::IoUring::builder();
                match opts.uring_mode {
                    UringMode::Default => {}
                    UringMode::CoopTaskrun => {
                        urb.setup_coop_taskrun().setup_taskrun_flag();
                    }
                    UringMode::DeferTaskrun => {
                        urb.setup_single_issuer().setup_defer_taskrun();
                    }
                }
                let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .with_entries(opts.ring_entries)
                    .uring_builder(urb)
                    .build();
                let mut runtime = match built {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(format!("worker {id}: runtime: {e}")));
                        return;
                    }
                };
                let driver = match &runtime {
                    monoio::FusionRuntime::Uring(_) => "io_uring",
                    monoio::FusionRuntime::Legacy(_) => "epoll",
                };
                if driver == "epoll" {
                    tracing::warn!(
                        worker = id,
                        "io_uring unavailable: running on the epoll driver"
                    );
                }
                runtime.block_on(async move {
                    let mut listeners = Vec::new();
                    for addr in &addrs {
                        match worker::bind(*addr, opts.backlog) {
                            Ok(l) => listeners.push((*addr, l)),
                            Err(e) => {
                                let _ = ready.send(Err(format!("worker {id}: bind {addr}: {e}")));
                                return;
                            }
                        }
                    }
                    if let Some(steering) = &steering {
                        // Worker `w`'s socket goes to slot `w` of each listener's block, so
                        // `[kernel].worker_weights[w]` is its weight.
                        let mut steering = crate::steering::lock(steering);
                        for (addr, l) in &listeners {
                            if let Err(e) = steering.add(*addr, id, worker::listener_fd(l)) {
                                let _ =
                                    ready.send(Err(format!("worker {id}: kernel steering: {e}")));
                                return;
                            }
                        }
                    }
                    let _ = ready.send(Ok(driver));
                    drop(ready);
                    let ctx = worker::context(id, holder, stats, log, &opts, steering, drain);
                    worker::run(ctx, listeners, version).await;
                });
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut drivers = Vec::new();
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => return Err(std::io::Error::other(e)),
            Err(_) => return Err(std::io::Error::other("a worker died while starting")),
        }
    }
    tracing::info!(workers = threads.len(), driver = drivers.first().copied().unwrap_or("?"), listeners = ?addrs, "proxy workers running");
    Ok(Proxy {
        threads,
        drain,
        bound: addrs,
        drivers,
    })
}

fn pin_to_core(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok()
        && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
    {
        tracing::warn!(core, "could not pin worker: {e}");
    }
}
