//! One worker: a thread pinned to a core, running its own monoio runtime (io_uring, or
//! epoll where io_uring is unavailable, which is logged), with its own SO_REUSEPORT
//! listener socket per listener, its own upstream pool and balancer state. Nothing mutable
//! is shared with other workers.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    os::fd::{AsRawFd as _, BorrowedFd},
    rc::Rc,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use monoio::{
    io::{AsyncReadRent as _, CancelHandle, Canceller},
    net::{ListenerOpts, TcpListener},
};

use bytes::BytesMut;

use super::{
    Drain, ProxyOptions, ProxySettings, downstream, idle::IdleSet, io, pool::UpstreamPool,
};
use crate::{
    lb::{LbState, RetryBudget, SplitMix64},
    snapshot::{DEFAULT_CLIENT_IDLE_TIMEOUT, RuntimeConfig, SnapshotHolder},
    steering::SharedSteering,
    telemetry::{AccessLog, ClusterStats, RouteStats, WorkerStats},
};

/// Per-snapshot caches of a worker: balancer state and metric cells, indexed like the
/// snapshot's clusters and routes (a request finds its cluster's state by index, not by
/// hashing the name). Rebuilt, keeping state by name, when a newer version arrives; a
/// request of an older snapshot still in flight finds its cluster's and route's state by
/// name instead (the `*_for` accessors), never turning the caches back.
pub(crate) struct Balancers {
    version: u64,
    /// Per cluster of the snapshot: its name and balancer state.
    lbs: Vec<(Arc<str>, LbState)>,
    /// Per route of the snapshot: its name and retry budget.
    budgets: Vec<(Arc<str>, RetryBudget)>,
    /// Per route of the snapshot: the cells of each cluster it sends to, with that
    /// cluster's name (one cell named "" for a route that answers itself).
    route_stats: Vec<Vec<(Arc<str>, Arc<RouteStats>)>>,
    cluster_stats: Vec<Arc<ClusterStats>>,
    /// Balancer state for requests of an older snapshot whose cluster now balances other
    /// endpoints, by (version, cluster index): shared by those requests, apart from the
    /// current state. Emptied when a newer version arrives.
    detached: HashMap<(u64, usize), LbState>,
}

impl Balancers {
    fn new() -> Self {
        Balancers {
            version: 0,
            lbs: Vec::new(),
            budgets: Vec::new(),
            route_stats: Vec::new(),
            cluster_stats: Vec::new(),
            detached: HashMap::new(),
        }
    }

    /// Brings the caches to `cfg`'s version if it is newer.
    pub fn sync(&mut self, cfg: &RuntimeConfig, stats: &WorkerStats, now: Instant) {
        if cfg.version <= self.version {
            return;
        }
        self.version = cfg.version;
        self.detached.clear();
        self.lbs = carry_over(
            std::mem::take(&mut self.lbs),
            cfg.clusters.iter().map(|c| (&c.name, c)),
            |c, old| match old {
                Some(mut lb) => {
                    lb.set_outlier_config(&c.outlier);
                    lb
                }
                None => LbState::new(&c.lb, c.outlier.clone()),
            },
        );
        self.budgets = carry_over(
            std::mem::take(&mut self.budgets),
            cfg.routes.iter().map(|r| (&r.name, r)),
            |r, old| {
                old.filter(|b| *b.config() == r.retry.budget)
                    .unwrap_or_else(|| RetryBudget::new(r.retry.budget.clone(), now))
            },
        );
        let names: Vec<Vec<&str>> = cfg.routes.iter().map(|r| cfg.cluster_names_of(r)).collect();
        let keys = cfg.routes.iter().zip(&names);
        let keys = keys.flat_map(|(r, cs)| cs.iter().map(|c| (&*r.name, *c)));
        let mut cells = stats.routes_for(keys).into_iter();
        self.route_stats = names
            .into_iter()
            .map(|cs| cs.into_iter().map(Arc::from).zip(cells.by_ref()).collect())
            .collect();
        self.cluster_stats = stats.clusters_for(cfg.clusters.iter().map(|c| &*c.name));
    }

    /// Where item `idx` of `cfg` is in caches ordered by [`Self::version`]: the same place
    /// when `cfg` is that version, else found by `name`.
    fn place<T>(
        &self,
        cfg: &RuntimeConfig,
        idx: usize,
        items: &[(Arc<str>, T)],
        name: &str,
    ) -> Option<usize> {
        if cfg.version == self.version {
            Some(idx).filter(|&i| i < items.len())
        } else {
            items.iter().position(|(n, _)| &**n == name)
        }
    }

    /// Balancer state of cluster `idx` of `cfg` (after [`Self::sync`]). `None` for a
    /// request of an older snapshot whose cluster is gone or now balances other endpoints:
    /// its picks must not reset the state the current version built.
    pub fn lb_for(&mut self, cfg: &RuntimeConfig, idx: usize) -> Option<&mut LbState> {
        let cluster = cfg.clusters.get(idx)?;
        let at = self.place(cfg, idx, &self.lbs, &cluster.name)?;
        let lb = &mut self.lbs[at].1;
        (cfg.version == self.version || lb.balances(&cluster.lb)).then_some(lb)
    }

    /// Balancer state for cluster `idx` of `cfg`: the current one ([`Self::lb_for`]) or,
    /// for a request of an older snapshot whose cluster now balances other endpoints, one
    /// kept for that version's cluster (so such requests do not all start over at the
    /// first endpoint).
    pub fn lb_or_detached(&mut self, cfg: &RuntimeConfig, idx: usize) -> Option<&mut LbState> {
        let cluster = cfg.clusters.get(idx)?;
        if self.lb_for(cfg, idx).is_none() {
            let state = self
                .detached
                .entry((cfg.version, idx))
                .or_insert_with(|| LbState::new(&cluster.lb, cluster.outlier.clone()));
            return Some(state);
        }
        self.lb_for(cfg, idx)
    }

    /// Retry budget of route `idx` of `cfg`.
    pub fn budget_for(&mut self, cfg: &RuntimeConfig, idx: usize) -> Option<&mut RetryBudget> {
        let route = cfg.routes.get(idx)?;
        let at = self.place(cfg, idx, &self.budgets, &route.name)?;
        Some(&mut self.budgets[at].1)
    }

    /// Metric cells of route `idx` of `cfg` for its requests to `cluster` (its
    /// `choice`-th; `None` for requests that went to none: the route's first cells, those
    /// of its own answers or of its one cluster). When `cfg` is older than the caches,
    /// those of the route and cluster of those names.
    pub fn route_stats_for(
        &self,
        cfg: &RuntimeConfig,
        idx: usize,
        cluster: Option<(usize, usize)>,
    ) -> Option<&Arc<RouteStats>> {
        let route = cfg.routes.get(idx)?;
        // Routes are in the same order in `budgets` and `route_stats`.
        let at = self.place(cfg, idx, &self.budgets, &route.name)?;
        let cells = self.route_stats.get(at)?;
        if cfg.version == self.version {
            return cells
                .get(cluster.map_or(0, |(choice, _)| choice))
                .map(|(_, c)| c);
        }
        match cluster {
            Some((_, c)) => {
                let name = &*cfg.clusters[c].name;
                cells.iter().find(|(n, _)| **n == *name).map(|(_, c)| c)
            }
            None => cells.first().map(|(_, c)| c),
        }
    }

    /// Metric cells of cluster `idx` of `cfg`.
    pub fn cluster_stats_for(&self, cfg: &RuntimeConfig, idx: usize) -> Option<Arc<ClusterStats>> {
        let cluster = cfg.clusters.get(idx)?;
        let at = self.place(cfg, idx, &self.lbs, &cluster.name)?;
        self.cluster_stats.get(at).cloned()
    }
}

/// Per-item state for a new snapshot's `items` (name, item), in their order: `make` gets
/// each item and the state `old` held under its name, if any.
fn carry_over<'a, I: 'a, T>(
    old: Vec<(Arc<str>, T)>,
    items: impl Iterator<Item = (&'a Arc<str>, &'a I)>,
    mut make: impl FnMut(&I, Option<T>) -> T,
) -> Vec<(Arc<str>, T)> {
    let mut old: HashMap<Arc<str>, T> = old.into_iter().collect();
    items
        .map(|(name, item)| (Arc::clone(name), make(item, old.remove(name))))
        .collect()
}

/// Everything a worker's tasks share (single-threaded: `Rc` + `RefCell`, borrowed briefly
/// and never across an await).
pub(crate) struct WorkerCtx {
    pub id: usize,
    pub holder: Arc<SnapshotHolder>,
    pub stats: Arc<WorkerStats>,
    pub access_log: AccessLog,
    pub settings: ProxySettings,
    pub pool: RefCell<UpstreamPool>,
    pub balancers: RefCell<Balancers>,
    pub rng: RefCell<SplitMix64>,
    /// Free I/O buffers, reused across requests instead of a malloc/free pair each time.
    buffers: RefCell<Vec<BytesMut>>,
    /// Scratch space for values built and consumed without an await in between (the
    /// forwarding fields of an upstream head).
    pub scratch: RefCell<Vec<u8>>,
    /// Idle keep-alive client connections and their deadlines (see [`super::idle`]).
    pub idle: RefCell<IdleSet>,
    /// The addresses this worker has listened on, in the order it bound them (only ever
    /// appended to: a connection keeps the index of its own, also after its listener is
    /// removed).
    listen_addrs: RefCell<Vec<SocketAddr>>,
    /// Listen backlog of the sockets bound for new listeners.
    backlog: i32,
    /// Kernel steering, when the data plane registers its sockets with it: listeners
    /// added or removed at run time are registered or released here too.
    steering: Option<SharedSteering>,
    /// When the worker started: a time to create request timers with, before each wait
    /// sets its deadline (a clock read saved per request).
    pub started: Instant,
    /// The process's graceful shutdown (see [`Drain`]).
    pub drain: Arc<Drain>,
}

/// Buffers kept for reuse per worker; beyond this, released buffers are freed. Every
/// request in flight holds one (its upstream response), so a pool smaller than the
/// concurrency churns: measured at 64 connections, a pool of 32 freed one buffer in six
/// and allocated as many again. 128 × 64 KiB = 8 MiB per worker at most.
const POOLED_BUFFERS: usize = 128;

/// A buffer from the worker's pool, given back when dropped (on every path out of the code
/// that holds it).
pub(crate) struct PooledBuf<'a> {
    ctx: &'a WorkerCtx,
    buf: BytesMut,
}

impl<'a> PooledBuf<'a> {
    pub(crate) fn new(ctx: &'a WorkerCtx) -> Self {
        PooledBuf {
            ctx,
            buf: ctx.take_buf(),
        }
    }
}

impl std::ops::Deref for PooledBuf<'_> {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        self.ctx.give_buf(std::mem::take(&mut self.buf));
    }
}

impl WorkerCtx {
    /// A buffer of at least [`io::READ_CHUNK`] bytes of capacity, empty.
    pub fn take_buf(&self) -> BytesMut {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(io::READ_CHUNK))
    }

    /// Returns a buffer for reuse (dropped if the pool is full or it is too small). A
    /// buffer whose front was split off (a parsed head) gets its whole allocation back
    /// when nothing else still points into it.
    pub fn give_buf(&self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() < io::READ_CHUNK && !buf.try_reclaim(io::READ_CHUNK) {
            return;
        }
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }

    /// The client idle timeout of the listener at `listen_index` of `listen_addrs`, in the
    /// current snapshot (the default when the snapshot has no such listener).
    pub fn client_idle_timeout(&self, listen_index: u32) -> Duration {
        let addr = self.listen_addr(listen_index);
        self.holder.peek(|cfg| {
            cfg.zip(addr)
                .and_then(|(c, a)| Some(c.listeners[c.listener_by_addr(a)?].idle_timeout))
                .unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT)
        })
    }

    /// The address of the worker's listener `listen_index`.
    pub fn listen_addr(&self, listen_index: u32) -> Option<SocketAddr> {
        self.listen_addrs
            .borrow()
            .get(listen_index as usize)
            .copied()
    }

    /// A uniformly random `u64` from the worker's generator.
    pub fn random(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }
}

/// Binds a listener socket with SO_REUSEPORT so every worker has its own accept queue.
pub(crate) fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(backlog);
    TcpListener::bind_with_config(addr, &opts)
}

/// How often a worker retries a listener it could not bind or register (and compares its
/// listeners with the snapshot's, when it cannot be told of new snapshots).
const LISTENER_CHECK: Duration = Duration::from_millis(200);

/// Wakes a worker's listener follower when the snapshot holder swaps in a new snapshot
/// or a drain starts (a socket from [`SnapshotHolder::subscribe`] read on the worker's own
/// runtime).
struct SnapshotChanges {
    socket: Option<monoio::net::UnixStream>,
    buf: Vec<u8>,
}

impl SnapshotChanges {
    fn new(ctx: &WorkerCtx) -> Self {
        let socket = ctx
            .holder
            .subscribe()
            .and_then(monoio::net::UnixStream::from_std);
        let socket = match socket {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(worker = ctx.id, error = %e, check_ms = LISTENER_CHECK.as_millis(), "no snapshot notifications; checking the listeners periodically");
                None
            }
        };
        SnapshotChanges {
            socket,
            buf: Vec::with_capacity(64),
        }
    }

    /// Returns after the next snapshot swap or drain start, or after [`LISTENER_CHECK`]
    /// when `retrying` (or when there are no notifications).
    async fn next(&mut self, retrying: bool) {
        let Some(socket) = self.socket.as_mut().filter(|_| !retrying) else {
            monoio::time::sleep(LISTENER_CHECK).await;
            return;
        };
        // A read dropped before it completed (were this ever raced) keeps the buffer.
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 {
            buf.reserve(64);
        }
        let (read, mut buf) = socket.read(buf).await;
        buf.clear();
        self.buf = buf;
        if !matches!(read, Ok(n) if n > 0) {
            // The holder keeps its end open for the process's life; should it fail anyway,
            // periodic checks take over.
            tracing::warn!(error = ?read.err(), check_ms = LISTENER_CHECK.as_millis(), "snapshot notifications ended; checking the listeners periodically");
            self.socket = None;
        }
    }
}

/// A listener a worker accepts on, and how to stop it.
struct Accepting {
    addr: SocketAddr,
    /// Shared with the accept loop: the socket closes when both let go.
    listener: Rc<TcpListener>,
    stop: Canceller,
    /// Registered with kernel steering, or nothing to register (steering off).
    steered: bool,
}

/// The listening socket of `listener`, for registration with kernel steering.
pub(crate) fn listener_fd(listener: &TcpListener) -> BorrowedFd<'_> {
    // SAFETY: the listener owns the descriptor and keeps it open at least as long as the
    // borrow of it.
    unsafe { BorrowedFd::borrow_raw(listener.as_raw_fd()) }
}

/// Starts accepting on `listener` (bound to `addr`) as the worker's next listener index.
/// `steered`: registered with kernel steering already, or steering is off.
fn accept_on(
    ctx: &Rc<WorkerCtx>,
    addr: SocketAddr,
    listener: TcpListener,
    steered: bool,
) -> Accepting {
    let index = {
        let mut addrs = ctx.listen_addrs.borrow_mut();
        addrs.push(addr);
        u32::try_from(addrs.len() - 1).unwrap_or(u32::MAX)
    };
    let listener = Rc::new(listener);
    let stop = Canceller::new();
    monoio::spawn(accept_loop(
        Rc::clone(ctx),
        index,
        Rc::clone(&listener),
        stop.handle(),
    ));
    Accepting {
        addr,
        listener,
        stop,
        steered: steered || ctx.steering.is_none(),
    }
}

/// Registers the worker's socket of `a` with kernel steering unless done; a failure is
/// logged when `log` and tried again at the next check.
fn steer(ctx: &WorkerCtx, a: &mut Accepting, log: bool) {
    let Some(steering) = &ctx.steering else {
        return;
    };
    if a.steered {
        return;
    }
    let added = crate::steering::lock(steering).add(a.addr, ctx.id, listener_fd(&a.listener));
    match added {
        Ok(_) => a.steered = true,
        Err(e) if log => {
            tracing::warn!(worker = ctx.id, address = %a.addr, error = %e, retry_ms = LISTENER_CHECK.as_millis(), "listener not registered with kernel steering (the kernel's hash spreads its connections); retrying");
        }
        Err(_) => {}
    }
}

/// Brings the worker's listeners to those of the snapshot in force: binds the new ones
/// (SO_REUSEPORT, beside the other workers) and stops accepting on removed ones (their
/// open connections are answered 503 and closed at their next request), registering or
/// releasing each with kernel steering when it is on. Returns whether every listener is
/// bound and registered; what failed is tried again at the next check, its failure logged
/// when `new_version` (once per version, not at every retry) or just bound.
fn follow_listeners(
    ctx: &Rc<WorkerCtx>,
    accepting: &mut Vec<Accepting>,
    new_version: bool,
) -> bool {
    let wanted: Vec<SocketAddr> = ctx.holder.peek(|cfg| {
        cfg.map(|c| c.listeners.iter().map(|l| l.address).collect())
            .unwrap_or_default()
    });
    if wanted.is_empty() {
        return true;
    }
    accepting.retain_mut(|a| {
        let keep = wanted.contains(&a.addr);
        if !keep {
            if let Some(steering) = &ctx.steering {
                crate::steering::lock(steering).remove(a.addr, ctx.id);
            }
            std::mem::take(&mut a.stop).cancel();
            tracing::info!(worker = ctx.id, address = %a.addr, "listener removed by the configuration; no longer accepting");
        }
        keep
    });
    let mut settled = true;
    for addr in wanted {
        if let Some(a) = accepting.iter_mut().find(|a| a.addr == addr) {
            steer(ctx, a, new_version);
            settled &= a.steered;
            continue;
        }
        match bind(addr, ctx.backlog) {
            Ok(listener) => {
                let mut a = accept_on(ctx, addr, listener, false);
                tracing::info!(worker = ctx.id, address = %addr, "listener added by the configuration; accepting");
                steer(ctx, &mut a, true);
                settled &= a.steered;
                accepting.push(a);
            }
            Err(e) => {
                settled = false;
                if new_version {
                    tracing::error!(worker = ctx.id, address = %addr, error = %e, retry_ms = LISTENER_CHECK.as_millis(), "cannot bind a listener added by the configuration; retrying");
                }
            }
        }
    }
    settled
}

/// Runs worker `id` until the process exits: accepts on `listeners` (bound to the
/// addresses of the snapshot of version `bound_version`, in its order, and registered
/// with kernel steering when it is on), then follows the snapshot's listeners.
pub(crate) async fn run(
    ctx: Rc<WorkerCtx>,
    listeners: Vec<(SocketAddr, TcpListener)>,
    bound_version: u64,
) {
    let mut accepting: Vec<Accepting> = listeners
        .into_iter()
        .map(|(addr, l)| accept_on(&ctx, addr, l, true))
        .collect();
    let ctx_listen = Rc::clone(&ctx);
    let listening = monoio::spawn(async move {
        let mut changes = SnapshotChanges::new(&ctx_listen);
        // From the version the listeners were bound for: one that arrived while the
        // worker started is followed at once.
        let mut seen = bound_version;
        let mut settled = true;
        loop {
            if ctx_listen.drain.is_draining() {
                drain(&ctx_listen, accepting).await;
                return;
            }
            let version = ctx_listen.holder.version();
            let new_version = version != seen;
            if new_version {
                // The worker's caches (and metrics cells) follow at once, not at its next
                // request: an idle worker holds no cells of removed routes, and a route
                // added back starts from zero on every worker.
                if let Some(cfg) = ctx_listen.holder.current() {
                    let mut b = ctx_listen.balancers.borrow_mut();
                    b.sync(&cfg, &ctx_listen.stats, Instant::now());
                }
            }
            if new_version || !settled {
                seen = version;
                settled = follow_listeners(&ctx_listen, &mut accepting, new_version);
            }
            changes.next(!settled).await;
        }
    });
    let ctx_idle = Rc::clone(&ctx);
    monoio::spawn(async move {
        loop {
            // Follows the snapshot: the shortest idle timeout of its listeners.
            let shortest = ctx_idle.holder.peek(|cfg| {
                cfg.map_or(
                    DEFAULT_CLIENT_IDLE_TIMEOUT,
                    RuntimeConfig::min_client_idle_timeout,
                )
            });
            monoio::time::sleep(super::idle::tick(shortest)).await;
            let expired = ctx_idle.idle.borrow_mut().expire(Instant::now());
            for fd in expired {
                super::idle::shut_down(fd);
            }
        }
    });
    let ctx_expire = Rc::clone(&ctx);
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(std::time::Duration::from_secs(5)).await;
            let max_age = ctx_expire.settings.upstream_idle_max;
            ctx_expire.pool.borrow_mut().expire(max_age, Instant::now());
        }
    });
    listening.await;
}

/// How often a draining worker closes connections that went idle and counts those left.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// How long a drain waits for the first request of a connection accepted before it (a
/// client's first request on a new connection is not one it would retry).
const DRAIN_FIRST_REQUEST: Duration = Duration::from_secs(2);

/// The worker's part of a drain: stops accepting on every listener, then closes idle
/// connections (at once, and as others go idle; a new one once [`DRAIN_FIRST_REQUEST`]
/// passes without its first request) until none is left. Busy connections end after their
/// response, which says `connection: close`.
///
/// Kernel steering is left alone: a closed socket leaves the steering socket array by
/// itself, and the listener's entry may belong to the data plane that replaced this one
/// (started first, it registered its own sockets under the same entry).
async fn drain(ctx: &Rc<WorkerCtx>, accepting: Vec<Accepting>) {
    let listeners: Vec<Rc<TcpListener>> = accepting
        .into_iter()
        .map(|a| {
            a.stop.cancel();
            a.listener
        })
        .collect();
    // Each socket closes once its accept loop has seen the cancellation complete. Waited
    // for: a worker that ends first (nothing left to serve) would tear its runtime down
    // with the accept in flight, and the socket would stay open, queueing connections
    // nobody accepts.
    let until = Instant::now() + Duration::from_secs(1);
    while listeners.iter().any(|l| Rc::strong_count(l) > 1) && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(listeners);
    let open = ctx.stats.connections_active.load(Ordering::Relaxed);
    tracing::info!(worker = ctx.id, open, "draining: no longer accepting");
    let first_by = Instant::now() + DRAIN_FIRST_REQUEST;
    loop {
        let idle = ctx
            .idle
            .borrow_mut()
            .take_for_drain(Instant::now(), first_by);
        for fd in idle {
            super::idle::shut_down(fd);
        }
        if ctx.stats.connections_active.load(Ordering::Relaxed) == 0 {
            tracing::info!(worker = ctx.id, "drained: every connection closed");
            return;
        }
        monoio::time::sleep(DRAIN_CHECK).await;
    }
}

/// Accepts on the worker's listener `index` (into `listen_addrs`) until `stop` is
/// cancelled; the listening socket closes when it returns.
async fn accept_loop(
    ctx: Rc<WorkerCtx>,
    index: u32,
    listener: Rc<TcpListener>,
    stop: CancelHandle,
) {
    loop {
        match listener.cancelable_accept(stop.clone()).await {
            Ok((stream, peer)) => {
                ctx.stats.connections_total.fetch_add(1, Ordering::Relaxed);
                monoio::spawn(downstream::serve(Rc::clone(&ctx), stream, peer, index));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                tracing::debug!(worker = ctx.id, index, "accept loop stopped");
                return;
            }
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                tracing::warn!(worker = ctx.id, "accept failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Builds the worker's shared context (its settings and backlog from `opts`).
pub(crate) fn context(
    id: usize,
    holder: Arc<SnapshotHolder>,
    stats: Arc<WorkerStats>,
    access_log: AccessLog,
    opts: &ProxyOptions,
    steering: Option<SharedSteering>,
    drain: Arc<Drain>,
) -> Rc<WorkerCtx> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed =
        (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ std::process::id() as u64 ^ clock;
    Rc::new(WorkerCtx {
        id,
        holder,
        stats,
        access_log,
        settings: opts.settings,
        pool: RefCell::new(UpstreamPool::default()),
        balancers: RefCell::new(Balancers::new()),
        rng: RefCell::new(SplitMix64::new(seed)),
        buffers: RefCell::new(Vec::new()),
        scratch: RefCell::new(Vec::with_capacity(512)),
        idle: RefCell::new(IdleSet::default()),
        listen_addrs: RefCell::new(Vec::new()),
        backlog: opts.backlog,
        steering,
        started: Instant::now(),
        drain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lb::{EndpointId, FailureKind, Outcome, test_util::strategies},
        snapshot::SnapshotVerifier,
        telemetry::{AccessLog, Metrics},
    };

    /// The task of an idle keep-alive connection is the bulk of its memory (its socket
    /// and one pending poll are the rest). Sizes are printed with `--nocapture`.
    #[test]
    fn state_is_carried_over_by_name_into_the_new_order() {
        let old: Vec<(Arc<str>, u32)> = vec![("a".into(), 1), ("b".into(), 2)];
        let names: Vec<Arc<str>> = vec!["c".into(), "b".into(), "a".into()];
        let items: Vec<u32> = vec![30, 20, 10];
        let new = carry_over(old, names.iter().zip(&items), |&item, old| {
            old.map_or(item, |o| o + 100)
        });
        let got: Vec<(&str, u32)> = new.iter().map(|(n, v)| (&**n, *v)).collect();
        assert_eq!(got, [("c", 30), ("b", 102), ("a", 101)]);
    }

    /// The one cluster route `route` of `cfg` sends to, as [`Balancers::route_stats_for`]
    /// names it.
    fn single(cfg: &RuntimeConfig, route: usize) -> Option<(usize, usize)> {
        cfg.routes[route].clusters().next().map(|c| (0, c))
    }

    /// A snapshot with clusters `names` (one endpoint each, 127.0.0.1:`port`+i, outlier
    /// ejection after `failures` consecutive failures) and a route to each, in that order.
    fn config(version: u64, names: &[&str], failures: u32, port: usize) -> RuntimeConfig {
        use omnirelay_proto::v1;
        let s = v1::Snapshot {
            version,
            clusters: names
                .iter()
                .enumerate()
                .map(|(i, n)| v1::Cluster {
                    name: (*n).into(),
                    endpoints: vec![v1::Endpoint {
                        address: format!("127.0.0.1:{}", port + i),
                        weight: 1,
                    }],
                    outlier: Some(v1::OutlierDetection {
                        consecutive_failures: failures,
                        max_ejection_percent: 100,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            routes: names
                .iter()
                .enumerate()
                .map(|(i, n)| v1::Route {
                    name: format!("to-{n}"),
                    cluster_index: i as u32,
                    path: Some(v1::route::Path::Prefix(format!("/{n}"))),
                    ..Default::default()
                })
                .collect(),
            listeners: vec![v1::Listener {
                name: "l".into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        RuntimeConfig::build(&s, &strategies()).unwrap()
    }

    /// A request of an older snapshot in flight across a swap works on its own cluster's
    /// and route's state (found by name), does not turn the caches back to its version,
    /// and cannot reset state of the current version that balances other endpoints.
    #[test]
    fn a_request_of_an_older_snapshot_uses_its_clusters_state_by_name() {
        let metrics = Metrics::default();
        let stats = metrics.add_worker();
        let now = Instant::now();
        let v1 = config(1, &["x", "y"], 1, 1000);
        // v2 puts a new cluster first: x and y move, their endpoints stay.
        let v2 = config(2, &["z", "x", "y"], 1, 999);
        let mut b = Balancers::new();
        b.sync(&v1, &stats, now);
        b.sync(&v2, &stats, now);
        b.sync(&v1, &stats, now);
        assert_eq!(b.version, 2, "an older snapshot turned the caches back");

        // v1's cluster 0 is x: its failure ejects x's endpoint, not z's.
        let x = EndpointId::new(0);
        let lb = b.lb_for(&v1, 0).unwrap();
        assert!(lb.report(x, Outcome::Failure(FailureKind::Timeout), now));
        assert_eq!(
            b.lb_for(&v2, 1)
                .unwrap()
                .outlier()
                .stats()
                .currently_ejected,
            1
        );
        assert_eq!(
            b.lb_for(&v2, 0)
                .unwrap()
                .outlier()
                .stats()
                .currently_ejected,
            0
        );
        // Route and cluster cells by name too.
        let route = b.route_stats_for(&v1, 0, single(&v1, 0)).unwrap();
        let same = b.route_stats_for(&v2, 1, single(&v2, 1)).unwrap();
        assert!(Arc::ptr_eq(route, same));
        let cluster = b.cluster_stats_for(&v1, 1).unwrap();
        assert!(Arc::ptr_eq(&cluster, &b.cluster_stats_for(&v2, 2).unwrap()));

        // v3 gives every cluster other endpoints: once a v3 request has picked from y's
        // state, a v2 request to y gets none to share (its picks would reset it).
        let v3 = config(3, &["z", "x", "y"], 1, 2000);
        b.sync(&v3, &stats, now);
        let y3 = b.lb_for(&v3, 2).unwrap();
        assert!(y3.pick(&v3.clusters[2].lb, None, now, &mut || 7).is_some());
        assert!(b.lb_for(&v2, 2).is_none());
        assert!(b.lb_for(&v3, 2).unwrap().balances(&v3.clusters[2].lb));
        // Such requests share a state kept for v2's cluster, apart from the current one.
        let kept = b.lb_or_detached(&v2, 2).unwrap();
        assert!(kept.report(x, Outcome::Failure(FailureKind::Timeout), now));
        let kept = b.lb_or_detached(&v2, 2).unwrap();
        assert_eq!(kept.outlier().stats().currently_ejected, 1);
        let current = b.lb_for(&v3, 2).unwrap();
        assert_eq!(current.outlier().stats().currently_ejected, 0);
    }

    /// A split route counts per cluster; a request of an older snapshot finds the cells of
    /// its cluster by name after the split changed order, and a route's own answers count
    /// under no cluster.
    #[test]
    fn a_split_routes_cells_are_per_cluster_and_found_by_name_for_older_requests() {
        use omnirelay_proto::v1;
        let split = |version: u64, order: [u32; 2]| {
            let mut s = v1::Snapshot {
                version,
                ..Default::default()
            };
            for (i, name) in ["x", "y"].into_iter().enumerate() {
                s.clusters.push(v1::Cluster {
                    name: name.into(),
                    endpoints: vec![v1::Endpoint {
                        address: format!("127.0.0.1:{}", 1000 + i),
                        weight: 1,
                    }],
                    ..Default::default()
                });
            }
            s.routes = vec![
                v1::Route {
                    name: "split".into(),
                    weighted_clusters: order
                        .map(|c| v1::WeightedCluster {
                            cluster_index: c,
                            weight: 1,
                        })
                        .to_vec(),
                    ..Default::default()
                },
                v1::Route {
                    name: "own".into(),
                    answer: Some(v1::route::Answer::DirectResponse(v1::DirectResponse {
                        status: 200,
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ];
            s.listeners = vec![v1::Listener {
                name: "l".into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }];
            RuntimeConfig::build(&s, &strategies()).unwrap()
        };
        let stats = WorkerStats::default();
        let now = Instant::now();
        let (v1, v2) = (split(1, [0, 1]), split(2, [1, 0]));
        let mut b = Balancers::new();
        b.sync(&v1, &stats, now);
        let x = b.route_stats_for(&v1, 0, Some((0, 0))).unwrap();
        let y = b.route_stats_for(&v1, 0, Some((1, 1))).unwrap();
        assert!(!Arc::ptr_eq(x, y));
        let (x, y) = (Arc::clone(x), Arc::clone(y));
        assert!(b.route_stats_for(&v1, 1, None).is_some());
        b.sync(&v2, &stats, now);
        // v2 lists y first: its choice 0 is y, and a v1 request to x still finds x's.
        assert!(Arc::ptr_eq(
            &y,
            b.route_stats_for(&v2, 0, Some((0, 1))).unwrap()
        ));
        assert!(Arc::ptr_eq(
            &x,
            b.route_stats_for(&v1, 0, Some((0, 0))).unwrap()
        ));
        assert!(Arc::ptr_eq(
            &y,
            b.route_stats_for(&v1, 0, Some((1, 1))).unwrap()
        ));
    }

    /// A removed route's series leave the scrape at once, even while a worker that has
    /// served nothing since still holds its cells (a sum over the other workers only would
    /// read as a counter going back); a kept route keeps its counts.
    #[test]
    fn a_removed_route_leaves_the_scrape_and_a_kept_one_keeps_its_counts() {
        let metrics = Metrics::default();
        let (busy, idle) = (metrics.add_worker(), metrics.add_worker());
        let now = Instant::now();
        let v1 = config(1, &["x", "y"], 1, 1000);
        let v2 = Arc::new(config(2, &["y", "z"], 1, 1000));
        let (mut b, mut i) = (Balancers::new(), Balancers::new());
        b.sync(&v1, &busy, now);
        i.sync(&v1, &idle, now);
        for (bal, cfg) in [(&b, &v1), (&i, &v1)] {
            for route in 0..2 {
                let cells = bal.route_stats_for(cfg, route, single(cfg, route)).unwrap();
                cells.record(200, Duration::from_millis(1));
                bal.cluster_stats_for(cfg, route).unwrap().attempts.add(1);
            }
        }
        b.sync(&v2, &busy, now);
        b.route_stats_for(&v2, 0, single(&v2, 0))
            .unwrap()
            .record(200, Duration::from_millis(1));
        let series = |c: &str| format!("route=\"to-{c}\",cluster=\"{c}\",class=\"2xx\"}}");
        let shown = metrics.render("", || Some(Arc::clone(&v2)));
        assert!(!shown.contains(&series("x")), "{shown}");
        assert!(shown.contains(&format!("{} 3\n", series("y"))), "{shown}");
        assert!(shown.contains(&format!("{} 0\n", series("z"))), "{shown}");
        let attempts = |c: &str| format!("omnirelay_upstream_attempts_total{{cluster=\"{c}\"}}");
        assert!(!shown.contains(&attempts("x")), "{shown}");
        assert!(shown.contains(&format!("{} 2\n", attempts("y"))), "{shown}");
        // Unfiltered, the idle worker's cells of x would still show (its count only).
        let all = metrics.render("", || None);
        assert!(all.contains(&format!("{} 1\n", series("x"))), "{all}");
        assert!(all.contains(&format!("{} 1\n", attempts("x"))), "{all}");
    }

    /// New outlier settings apply to a cluster that keeps its name (its state kept).
    #[test]
    fn a_new_snapshot_s_outlier_settings_apply_to_an_existing_cluster() {
        let metrics = Metrics::default();
        let stats = metrics.add_worker();
        let now = Instant::now();
        let mut b = Balancers::new();
        b.sync(&config(1, &["x"], 5, 1000), &stats, now);
        let v2 = config(2, &["x"], 1, 1000);
        b.sync(&v2, &stats, now);
        let lb = b.lb_for(&v2, 0).unwrap();
        assert_eq!(lb.outlier().config().consecutive_failures, 1);
        assert!(lb.report(
            EndpointId::new(0),
            Outcome::Failure(FailureKind::Timeout),
            now
        ));
    }

    #[test]
    fn a_connection_task_is_small() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
            let holder = Arc::new(SnapshotHolder::new(
                SnapshotVerifier::new(key),
                strategies(),
            ));
            let metrics = Arc::new(Metrics::default());
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let ctx = context(
                0,
                Arc::clone(&holder),
                metrics.add_worker(),
                AccessLog::disabled(Arc::clone(&metrics)),
                &ProxyOptions {
                    backlog: 16,
                    ..ProxyOptions::default()
                },
                None,
                Arc::new(Drain::new(Arc::clone(&holder))),
            );
            ctx.listen_addrs.borrow_mut().push(addr);
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            let stream = monoio::net::TcpStream::from_std(accepted).unwrap();
            let readable = std::mem::size_of_val(&stream.readable(false));
            let task = downstream::serve(Rc::clone(&ctx), stream, peer, 0);
            let size = std::mem::size_of_val(&task);
            println!(
                "connection task {size} B (of which the readiness wait {readable} B, \
                 the connection {} B)",
                std::mem::size_of::<downstream::Downstream>()
            );
            // 344 B here (it was 816 B as an async fn in a wrapper task); the bound catches
            // a regression such as an unboxed request future (several KiB) or a timer in
            // the idle state.
            assert!(size <= 400, "connection task grew to {size} B");
            drop(task);
        });
    }
}
