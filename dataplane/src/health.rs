//! Active health checks (Envoy's HTTP and TCP health checkers): every endpoint of a
//! cluster that sets `health_check` gets an HTTP/1.1 GET (or, for TCP, a connection) each
//! interval from one thread of the data plane, and its verdict goes into the running
//! snapshot's [`Health`] of that cluster, which every worker's picks read.
//!
//! An endpoint new to the checks (at start, added by a config change, or when its cluster
//! gains its check) is out until its first check, which comes at once: one pass brings it
//! in, as in Envoy. After that, a response with a status not expected takes it out at
//! once; connect failures and timeouts count toward `unhealthy_threshold` in a row;
//! `healthy_threshold` passes in a row bring it back. The checker follows the snapshot: a
//! new version starts checks for new endpoints and stops those of endpoints gone; one
//! whose check changed starts over from what the checks before found. At each swap, what
//! every task found last goes into the new snapshot.
//!
//! A checked cluster whose endpoints are all new to the checks in the version that brings
//! them (a new cluster, one that gained its check or whose endpoints were all replaced,
//! every checked one at start) is warmed first, as Envoy warms a new cluster: [`warm`]
//! runs the first checks of its endpoints before that version is swapped in,
//! so the cluster starts with its dead endpoints out rather than with all of them pending
//! (which would send requests to all, as in panic mode, and then all to the first that
//! passes).

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};

use crate::{
    http1::{self, ParseStatus, ResponseHead},
    lb::{Checked, Health, SplitMix64},
    snapshot::{AfterSwap, HealthCheckRt, Probe, RuntimeConfig, SnapshotHolder, Warmer},
    telemetry::Metrics,
};

/// One endpoint's checks: its cluster, its address, how it is checked, and the snapshot
/// version from which it has been checked (a new one when it comes back after a break).
type Key = (Arc<str>, SocketAddr, HealthCheckRt, u64);

/// A running task of one endpoint's checks, and what its last check found (`NONE` before
/// the first).
struct Task {
    handle: JoinHandle<()>,
    last: Arc<AtomicU8>,
}

/// [`Task::last`] before any check.
const NONE: u8 = u8::MAX;

/// The longest a snapshot waits for the warming checks of its new clusters; endpoints
/// whose first check has not ended by then stay pending, and the checker goes on with
/// them.
pub const WARM_LIMIT: Duration = Duration::from_secs(5);

/// The warmer of the data plane's [`SnapshotHolder`]:
/// [`warm`], its checks counted in `metrics` once the snapshot is current (the counts of
/// clusters not running are dropped at each scrape).
pub fn warmer(metrics: Arc<Metrics>) -> Warmer {
    Warmer::new(move |cfg| {
        let counts = warm(cfg);
        if counts.is_empty() {
            return None;
        }
        let metrics = Arc::clone(&metrics);
        let count = move || {
            for (cluster, passed) in counts {
                metrics.health_checked(&cluster, passed);
            }
        };
        Some(Box::new(count) as AfterSwap)
    })
}

/// The endpoints [`warm`] checks: those of each checked cluster of `cfg` whose endpoints
/// are all new to the checks in this very version (a new cluster, one that gained its
/// check or whose endpoints were all replaced, every checked one at start). A cluster
/// still waiting for first checks that began in an earlier version is the checker's.
fn to_warm(cfg: &RuntimeConfig) -> Vec<(usize, usize, SocketAddr, HealthCheckRt)> {
    let new = |h: &Health| {
        !h.is_empty() && (0..h.len()).all(|i| h.is_pending(i) && h.since(i) == cfg.version)
    };
    cfg.clusters
        .iter()
        .enumerate()
        .filter_map(|(at, c)| Some((at, c, c.health_check.as_ref()?, c.lb.health()?)))
        .filter(|(.., h)| new(h))
        .flat_map(|(at, c, how, _)| {
            c.lb.ids()
                .filter_map(move |id| Some((at, id.index(), c.lb.addr(id)?, how.clone())))
        })
        .collect()
}

/// Runs the first checks of the endpoints `to_warm` names, all at once, and writes what
/// they find into `cfg` (not yet swapped in); returns each check's cluster and whether it
/// passed. Each check is bounded by its own timeout, all of them by [`WARM_LIMIT`].
/// Blocks the calling thread meanwhile (the checks run on a thread and runtime of their
/// own, so any thread may call it).
pub fn warm(cfg: &RuntimeConfig) -> Vec<(Arc<str>, bool)> {
    let firsts = to_warm(cfg);
    if firsts.is_empty() {
        return Vec::new();
    }
    let started = Instant::now();
    let checks: Vec<(SocketAddr, HealthCheckRt)> = firsts
        .iter()
        .map(|(.., addr, how)| (*addr, how.clone()))
        .collect();
    let verdicts = std::thread::scope(|s| {
        let run = std::thread::Builder::new()
            .name("health-warm".into())
            .spawn_scoped(s, || first_checks(checks));
        match run {
            Ok(run) => run.join().unwrap_or_default(),
            Err(e) => {
                tracing::warn!("new clusters not warmed (no thread for their checks): {e}");
                Vec::new()
            }
        }
    });
    let mut counts = Vec::new();
    for ((at, i, addr, how), verdict) in firsts.iter().zip(verdicts) {
        let (Some(verdict), Some(health)) = (verdict, cfg.clusters[*at].lb.health()) else {
            continue;
        };
        let cluster = &cfg.clusters[*at].name;
        counts.push((Arc::clone(cluster), matches!(verdict, Verdict::Passed)));
        let mut state = State {
            down: true,
            pending: true,
            streak: 0,
        };
        state.step(&verdict, how);
        log_first(cluster, *addr, &verdict, &state);
        health.put(*i, state.checked());
    }
    tracing::info!(
        version = cfg.version,
        endpoints = firsts.len(),
        checked = counts.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "new health-checked clusters warmed before the snapshot is swapped in"
    );
    counts
}

/// One check of each of `checks`, all at once, on a runtime of this thread's own; what
/// each found by [`WARM_LIMIT`] (`None`: no verdict by then).
fn first_checks(checks: Vec<(SocketAddr, HealthCheckRt)>) -> Vec<Option<Verdict>> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!("new clusters not warmed (no runtime for their checks): {e}");
            return Vec::new();
        }
    };
    let n = checks.len();
    runtime.block_on(async move {
        let mut found: Vec<Option<Verdict>> = std::iter::repeat_with(|| None).take(n).collect();
        let mut running = tokio::task::JoinSet::new();
        for (at, (addr, how)) in checks.into_iter().enumerate() {
            running.spawn(async move { (at, probe(addr, &how).await) });
        }
        let by = tokio::time::Instant::now() + WARM_LIMIT;
        loop {
            match tokio::time::timeout_at(by, running.join_next()).await {
                Ok(Some(Ok((at, verdict)))) => found[at] = Some(verdict),
                // A check that panicked leaves its endpoint pending.
                Ok(Some(Err(_))) => {}
                // All done, or out of time (the rest are dropped with the runtime).
                Ok(None) | Err(_) => return found,
            }
        }
    })
}

/// Logs what an endpoint's first check found (`state`: after it).
fn log_first(cluster: &str, addr: SocketAddr, verdict: &Verdict, state: &State) {
    if state.down {
        tracing::warn!(%cluster, endpoint = %addr, ?verdict, "endpoint failed its first health check: stays out");
    } else {
        tracing::info!(%cluster, endpoint = %addr, "endpoint passed its first health check: in");
    }
}

/// Starts the checker's thread, which runs for the life of the process.
pub fn spawn(holder: Arc<SnapshotHolder>, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let swaps = holder.subscribe()?;
    std::thread::Builder::new()
        .name("health-checks".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::UnixStream::from_std(swaps) {
                    Ok(swaps) => follow(holder, metrics, swaps).await,
                    Err(e) => tracing::error!("health checks stopped: {e}"),
                }
            });
        })?;
    Ok(())
}

/// Keeps one task per checked endpoint of the running snapshot, looking again at each
/// swap the holder announces on `swaps` (see [`SnapshotHolder::subscribe`]).
async fn follow(holder: Arc<SnapshotHolder>, metrics: Arc<Metrics>, swaps: tokio::net::UnixStream) {
    let mut tasks: HashMap<Key, Task> = HashMap::new();
    let mut seen = 0;
    loop {
        let version = holder.version();
        if version != seen {
            seen = version;
            let wanted: HashSet<Key> = holder.peek(|cfg| cfg.map(checked).unwrap_or_default());
            // What each task found last, by endpoint and the version it is checked since.
            let found: HashMap<(Arc<str>, SocketAddr, u64), Checked> = tasks
                .iter()
                .filter_map(|((cluster, addr, _, since), task)| {
                    let found = Checked::decode(task.last.load(Relaxed))?;
                    Some(((Arc::clone(cluster), *addr, *since), found))
                })
                .collect();
            tasks.retain(|key, task| {
                let keep = wanted.contains(key);
                if !keep {
                    task.handle.abort();
                }
                keep
            });
            // That goes into the new snapshot at once (for a task whose check changed too,
            // before the next one starts from it): it was built from the one before, which
            // a check that ended meanwhile may have missed.
            for (cluster, addr, _, since) in &wanted {
                if let Some(&found) = found.get(&(Arc::clone(cluster), *addr, *since)) {
                    with_health(&holder, cluster, *addr, &mut None, |h, i| h.put(i, found));
                }
            }
            for key in wanted {
                if let std::collections::hash_map::Entry::Vacant(place) = tasks.entry(key) {
                    let key = place.key().clone();
                    let last = Arc::new(AtomicU8::new(NONE));
                    let handle = tokio::spawn(check(
                        key,
                        Arc::clone(&last),
                        Arc::clone(&holder),
                        Arc::clone(&metrics),
                    ));
                    place.insert(Task { handle, last });
                }
            }
        }
        // The next swap: a byte for each (several may be read at once).
        if swaps.readable().await.is_err() {
            return tracing::error!("health checks stopped: the snapshot subscription failed");
        }
        let mut bytes = [0u8; 64];
        if let Ok(0) = swaps.try_read(&mut bytes) {
            return tracing::error!("health checks stopped: the snapshot subscription closed");
        }
    }
}

/// Every checked endpoint of `cfg`.
fn checked(cfg: &RuntimeConfig) -> HashSet<Key> {
    cfg.clusters
        .iter()
        .filter_map(|c| Some((c, c.health_check.as_ref()?)))
        .flat_map(|(c, check)| {
            let since =
                move |id: crate::lb::EndpointId| c.lb.health().map_or(0, |h| h.since(id.index()));
            c.lb.ids().filter_map(move |id| {
                let addr = c.lb.addr(id)?;
                Some((Arc::clone(&c.name), addr, check.clone(), since(id)))
            })
        })
        .collect()
}

/// Where one endpoint's health is in a snapshot version: found by name and address once
/// per version, by index after that.
#[derive(Clone, Copy, Debug)]
struct Place {
    version: u64,
    cluster: usize,
    endpoint: usize,
}

/// `f` of the health of `addr` in cluster `name` of the running snapshot, if it is there
/// and checked; `place` remembers where it was.
fn with_health<R>(
    holder: &SnapshotHolder,
    name: &str,
    addr: SocketAddr,
    place: &mut Option<Place>,
    f: impl FnOnce(&Health, usize) -> R,
) -> Option<R> {
    holder.peek(|cfg| {
        let cfg = cfg?;
        let at = match *place {
            Some(p) if p.version == cfg.version => p,
            _ => {
                let cluster = cfg.clusters.iter().position(|c| &*c.name == name)?;
                let endpoint = cfg.clusters[cluster].lb.id_of(addr)?.index();
                let p = Place {
                    version: cfg.version,
                    cluster,
                    endpoint,
                };
                *place = Some(p);
                p
            }
        };
        Some(f(cfg.clusters[at.cluster].lb.health()?, at.endpoint))
    })
}

/// What one check found.
#[derive(Debug)]
enum Verdict {
    /// An expected response status, or for TCP a connection.
    Passed,
    /// A response with another status: out at once.
    Refused(u16),
    /// No response (connect failure, timeout, a broken response): counted.
    Failed(String),
}

/// An endpoint's health as its checks go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    down: bool,
    /// Out until its first check: one pass brings it in.
    pending: bool,
    /// In a row: failures while in, passes while out.
    streak: u32,
}

impl State {
    /// What the endpoint is in the snapshot's terms.
    fn checked(&self) -> Checked {
        match (self.pending, self.down) {
            (true, _) => Checked::Pending,
            (false, true) => Checked::Out,
            (false, false) => Checked::In,
        }
    }

    /// Takes one check's `verdict` by `how`'s thresholds; true when the endpoint went
    /// out or came back.
    fn step(&mut self, verdict: &Verdict, how: &HealthCheckRt) -> bool {
        if std::mem::take(&mut self.pending) {
            // The first check decides alone: a pass brings the endpoint in; otherwise it
            // stays out, to come back as any endpoint out does.
            self.streak = 0;
            let passed = matches!(verdict, Verdict::Passed);
            self.down = !passed;
            return passed;
        }
        let (goes, threshold) = match verdict {
            Verdict::Passed => (self.down, how.healthy_threshold),
            Verdict::Refused(_) => (!self.down, 1),
            Verdict::Failed(_) => (!self.down, how.unhealthy_threshold),
        };
        if !goes {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        if self.streak < threshold {
            return false;
        }
        *self = State {
            down: !self.down,
            pending: false,
            streak: 0,
        };
        true
    }
}

/// Checks one endpoint every interval for as long as the task runs, writing its state into
/// each snapshot that holds it, and into `last` for the snapshots to come. A task starts
/// from the state the snapshot holds, into which [`follow`] put what the previous task of
/// the endpoint (one of an older check) found last.
async fn check(key: Key, last: Arc<AtomicU8>, holder: Arc<SnapshotHolder>, metrics: Arc<Metrics>) {
    let (cluster, addr, how, _) = key;
    let mut place = None;
    let now = with_health(&holder, &cluster, addr, &mut place, |h, i| h.get(i));
    let pending = now == Some(Checked::Pending);
    let mut state = State {
        down: now.is_some_and(|c| c != Checked::In),
        pending,
        streak: 0,
    };
    // The first check of an endpoint waiting for it at once; of others at a random point
    // of the first interval, so a cluster's endpoints (and data planes) are not all
    // checked at once.
    if !pending {
        let mut rng = SplitMix64::new(RandomState::new().hash_one(addr));
        let first = how
            .interval
            .mul_f64((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64);
        tokio::time::sleep(first).await;
    }
    loop {
        let verdict = probe(addr, &how).await;
        metrics.health_checked(&cluster, matches!(verdict, Verdict::Passed));
        let first = state.pending;
        let changed = state.step(&verdict, &how);
        if first {
            log_first(&cluster, addr, &verdict, &state);
        } else if changed {
            match &verdict {
                Verdict::Passed => {
                    tracing::info!(%cluster, endpoint = %addr, "endpoint passed its health checks: back in");
                }
                Verdict::Refused(status) => {
                    tracing::warn!(%cluster, endpoint = %addr, status, "endpoint failed its health check: taken out");
                }
                Verdict::Failed(why) => {
                    tracing::warn!(%cluster, endpoint = %addr, reason = %why, checks = how.unhealthy_threshold, "endpoint failed its health checks: taken out");
                }
            }
        }
        // Written each time, not only on a change; a snapshot swapped in meanwhile gets it
        // from `follow`, through `last`.
        let found = state.checked();
        last.store(found as u8, Relaxed);
        with_health(&holder, &cluster, addr, &mut place, |h, i| h.put(i, found));
        tokio::time::sleep(how.interval).await;
    }
}

/// One check of `addr`.
async fn probe(addr: SocketAddr, how: &HealthCheckRt) -> Verdict {
    match &how.probe {
        Probe::Http { path, host, .. } => {
            match tokio::time::timeout(how.timeout, status_of(addr, path, host)).await {
                Err(_) => Verdict::Failed(format!("no response within {:?}", how.timeout)),
                Ok(Err(e)) => Verdict::Failed(e.to_string()),
                Ok(Ok(status)) if how.probe.expects(status) => Verdict::Passed,
                Ok(Ok(status)) => Verdict::Refused(status),
            }
        }
        // The connection is closed at once; nothing is sent.
        Probe::Tcp => match tokio::time::timeout(how.timeout, TcpStream::connect(addr)).await {
            Err(_) => Verdict::Failed(format!("no connection within {:?}", how.timeout)),
            Ok(Err(e)) => Verdict::Failed(e.to_string()),
            Ok(Ok(_)) => Verdict::Passed,
        },
    }
}

/// The status of `addr`'s response to the check's GET (interim responses skipped).
async fn status_of(addr: SocketAddr, path: &str, host: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: omnirelay-health-check\r\nconnection: close\r\n\r\n",
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let limits = http1::Limits::default();
    loop {
        match ResponseHead::parse(&mut buf, &limits) {
            Ok(ParseStatus::Complete { head, .. }) if head.is_informational() => continue,
            Ok(ParseStatus::Complete { head, .. }) => return Ok(head.status()),
            Ok(ParseStatus::Partial) => {}
            Err(e) => {
                let why = format!("invalid response: {e}");
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            let why = "closed before a response head";
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use omnirelay_proto::v1;

    use super::{State, Verdict, to_warm, warm};
    use crate::{
        lb::{Checked, test_util::strategies},
        snapshot::{HealthCheckRt, Probe, RuntimeConfig, test_util::minimal},
    };

    fn how(unhealthy_threshold: u32, healthy_threshold: u32) -> HealthCheckRt {
        HealthCheckRt {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(100),
            unhealthy_threshold,
            healthy_threshold,
        }
    }

    /// Runs `verdicts` from `start`; the states after each.
    fn run(start: State, how: &HealthCheckRt, verdicts: &[Verdict]) -> Vec<bool> {
        let mut s = start;
        verdicts
            .iter()
            .map(|v| {
                s.step(v, how);
                s.down
            })
            .collect()
    }

    #[test]
    fn failures_in_a_row_take_an_endpoint_out_and_passes_in_a_row_bring_it_back() {
        let how = how(3, 2);
        let fail = || Verdict::Failed("refused".into());
        // Two failures, a pass (the count starts over), three failures: out.
        let seen = run(
            State::default(),
            &how,
            &[fail(), fail(), Verdict::Passed, fail(), fail(), fail()],
        );
        assert_eq!(seen, [false, false, false, false, false, true]);
        // Out: a pass, a failure (starts over), two passes: back.
        let out = State {
            down: true,
            ..State::default()
        };
        let seen = run(
            out,
            &how,
            &[Verdict::Passed, fail(), Verdict::Passed, Verdict::Passed],
        );
        assert_eq!(seen, [true, true, true, false]);
    }

    /// An endpoint new to the checks is out until its first: one pass brings it in
    /// whatever `healthy_threshold` says; after a first failure it comes back as any
    /// endpoint out does.
    #[test]
    fn a_first_check_decides_alone() {
        let how = how(3, 2);
        let pending = State {
            down: true,
            pending: true,
            streak: 0,
        };
        let mut s = pending;
        assert!(s.step(&Verdict::Passed, &how), "in at the first pass");
        assert_eq!(s, State::default());
        let fail = || Verdict::Failed("refused".into());
        let seen = run(pending, &how, &[fail(), Verdict::Passed, Verdict::Passed]);
        assert_eq!(seen, [true, true, false]);
        let seen = run(pending, &how, &[Verdict::Refused(503), Verdict::Passed]);
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn a_response_other_than_2xx_takes_an_endpoint_out_at_once() {
        let how = how(3, 1);
        let mut s = State::default();
        assert!(s.step(&Verdict::Refused(503), &how));
        assert!(s.down);
        assert!(!s.step(&Verdict::Refused(503), &how), "already out");
        assert!(s.step(&Verdict::Passed, &how));
        assert!(!s.down);
    }

    /// A cluster whose endpoints are all new to the checks in this version is warmed:
    /// after [`warm`] a live endpoint is in and a dead one out. One with an endpoint
    /// checked already is not (its new endpoint stays pending, for the checker), nor is
    /// one whose endpoints still wait for first checks begun in an earlier version.
    #[test]
    fn warming_checks_the_endpoints_of_new_clusters_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap().port();
        let closed = || {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().port()
        };
        let (dead, other) = (closed(), closed());
        let snapshot = |version: u64, ports: &[u16]| {
            let mut s = minimal();
            s.version = version;
            let c = &mut s.clusters[0];
            c.endpoints = ports
                .iter()
                .map(|p| v1::Endpoint {
                    address: format!("127.0.0.1:{p}"),
                    weight: 1,
                })
                .collect();
            c.health_check = Some(v1::HealthCheck {
                protocol: v1::HealthCheckProtocol::Tcp as i32,
                interval_ms: 1000,
                timeout_ms: 500,
                unhealthy_threshold: 3,
                healthy_threshold: 2,
                ..Default::default()
            });
            s
        };
        let states = |cfg: &RuntimeConfig| {
            let h = cfg.clusters[0].lb.health().unwrap();
            (0..h.len()).map(|i| h.get(i)).collect::<Vec<_>>()
        };
        let first = RuntimeConfig::build(&snapshot(1, &[live, dead]), &strategies()).unwrap();
        assert_eq!(states(&first), [Checked::Pending, Checked::Pending]);
        let counts = warm(&first);
        assert_eq!(states(&first), [Checked::In, Checked::Out]);
        let counts: Vec<(&str, bool)> = counts.iter().map(|(c, p)| (&**c, *p)).collect();
        assert_eq!(counts, [("c", true), ("c", false)]);

        let next = snapshot(2, &[live, dead, other]);
        let next = RuntimeConfig::build_after(&next, &strategies(), Some(&first)).unwrap();
        assert!(warm(&next).is_empty());
        assert_eq!(states(&next), [Checked::In, Checked::Out, Checked::Pending]);

        // Not warmed in version 1 (as when its checks outlast the limit): in version 2
        // its endpoints are the checker's.
        let unwarmed = RuntimeConfig::build(&snapshot(1, &[live]), &strategies()).unwrap();
        let again =
            RuntimeConfig::build_after(&snapshot(2, &[live]), &strategies(), Some(&unwarmed))
                .unwrap();
        assert!(to_warm(&again).is_empty());
        assert_eq!(to_warm(&unwarmed).len(), 1);
    }
}
