//! A verified snapshot compiled for the hot path: addresses parsed, durations resolved,
//! route matchers and load-balancer tables built. Workers read it through an `Arc` and
//! never parse anything per request.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use omnirelay_proto::{limits, v1};

use super::RejectReason;
use crate::{
    lb::{Checked, ClusterLb, Health, OutlierConfig, Policy, RetryBudgetConfig, Strategies},
    limit::RateLimiter,
    router::{HeaderCondition, HostMatch, PathMatch, RouteMatcher},
};

/// Defaults applied where the snapshot says 0.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request default (Envoy's route default too).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Idle upstream connection default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle keep-alive client connection default.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request head default (from its first byte to its end).
pub const DEFAULT_CLIENT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Request limits of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Maximum request head bytes.
    pub max_header_bytes: usize,
    /// Maximum header count.
    pub max_headers: usize,
    /// Maximum body bytes.
    pub max_body_bytes: u64,
}

/// A listener.
#[derive(Clone, Debug)]
pub struct ListenerRt {
    /// Name (metrics, logs).
    pub name: Arc<str>,
    /// Bound address.
    pub address: SocketAddr,
    /// Limits.
    pub limits: ListenerLimits,
    /// Route indices in match order.
    pub routes: Vec<usize>,
    /// An idle keep-alive client connection is closed after this.
    pub idle_timeout: Duration,
    /// A request head must be complete within this once its first byte arrived.
    pub head_timeout: Duration,
    /// A client's `x-request-id` is replaced by a generated one.
    pub replace_request_id: bool,
    /// Runs of slashes in request paths are made one before routing and forwarding.
    pub merge_slashes: bool,
}

/// What to hash for hash-based balancing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// A header value.
    Header(String),
    /// The client IP.
    ClientIp,
}

/// A route's retry policy.
#[derive(Clone, Debug)]
pub struct RetryRt {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Budget for this route's cluster.
    pub budget: RetryBudgetConfig,
    /// Backoff base.
    pub base_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Retry on connect failure.
    pub on_connect_failure: bool,
    /// Retry on 5xx (but 501).
    pub on_5xx: bool,
    /// Retry on 502, 503 and 504.
    pub on_gateway_error: bool,
    /// Retry on these statuses.
    pub statuses: Box<[u16]>,
    /// Retry on timeout.
    pub on_timeout: bool,
    /// How long one attempt waits for the response head once the request is sent (None:
    /// until the request's deadline).
    pub per_try_timeout: Option<Duration>,
}

impl RetryRt {
    /// Whether a response with `status` is retried (budget, body and deadline allowing):
    /// `on_5xx` takes every 5xx but 501 (not implemented: another endpoint would say the
    /// same).
    pub fn retries(&self, status: u16) -> bool {
        (self.on_5xx && status >= 500 && status != 501)
            || (self.on_gateway_error && (502..=504).contains(&status))
            || self.statuses.contains(&status)
    }
}

/// A route.
#[derive(Clone, Debug)]
pub struct RouteRt {
    /// Name (metrics, access log).
    pub name: Arc<str>,
    /// Conditions.
    pub matcher: RouteMatcher,
    /// Where its requests go.
    pub action: RouteAction,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retry: RetryRt,
    /// Hash key source.
    pub hash_on: HashKey,
    /// Replaces the matched part of the path upstream.
    pub prefix_rewrite: Option<Box<str>>,
    /// The Host field sent upstream.
    pub host_rewrite: Option<Box<str>>,
    /// Fields set and removed on the request sent upstream.
    pub request_headers: Option<HeaderEdits>,
    /// Fields set and removed on the response sent to the client.
    pub response_headers: Option<HeaderEdits>,
    /// Its request rate limit, shared by the workers (and carried to the next snapshot
    /// while the route keeps its name and limit).
    pub rate_limit: Option<Arc<RateLimiter>>,
}

/// Where a route's requests go.
#[derive(Clone, Debug)]
pub enum RouteAction {
    /// Upstream, to the cluster at this index.
    Cluster(usize),
    /// Upstream, to clusters picked by weight.
    Split(Box<Split>),
    /// Nowhere: the route answers them itself.
    Answer(Box<Answer>),
}

/// Clusters sharing a route's requests by weight.
#[derive(Clone, Debug)]
pub struct Split {
    /// Each cluster's index and the sum of the weights up to and including its own.
    clusters: Box<[(usize, u64)]>,
    /// Picked by the request's hash (the route's `hash_on`) instead of at random.
    pub by_hash: bool,
}

impl Split {
    /// A split over `(cluster index, weight)`s, `None` when no weight is above 0.
    pub fn new(weighted: impl IntoIterator<Item = (usize, u32)>) -> Option<Split> {
        let mut sum = 0u64;
        let clusters: Box<[(usize, u64)]> = weighted
            .into_iter()
            .map(|(c, w)| {
                sum += u64::from(w);
                (c, sum)
            })
            .collect();
        (sum > 0).then_some(Split {
            clusters,
            by_hash: false,
        })
    }

    /// The position in the split and the cluster index that `random` picks: each
    /// cluster with its weight's share of random values. The weights are laid end to end
    /// in their order over the range of `random` (by multiplication, not a remainder): a
    /// value keeps its cluster while the weights keep their proportions.
    pub fn pick(&self, random: u64) -> (usize, usize) {
        let total = self.clusters.last().map_or(1, |&(_, sum)| sum);
        // Below `total`, since `random` is below 2^64.
        let x = ((u128::from(random) * u128::from(total)) >> 64) as u64;
        // The first cluster whose running sum passes `x` (one of weight 0 never does).
        let at = self.clusters.partition_point(|&(_, upto)| upto <= x);
        (at, self.clusters[at].0)
    }
}

/// Where one request of a route goes.
#[derive(Clone, Copy, Debug)]
pub enum Dispatch<'a> {
    /// Upstream: to cluster `cluster`, the route's `choice`-th (0 for a single cluster).
    Upstream {
        /// Position among the route's clusters.
        choice: usize,
        /// Index in the snapshot's clusters.
        cluster: usize,
    },
    /// The route's own answer.
    Answer(&'a Answer),
}

/// A route's own answer.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A fixed response.
    Direct(DirectRt),
    /// A redirect.
    Redirect(RedirectRt),
}

/// A fixed response (`direct_response`).
#[derive(Clone, Debug)]
pub struct DirectRt {
    /// 200-599.
    pub status: u16,
    /// The `content-type` field, if any.
    pub content_type: Option<Box<str>>,
    /// The body (empty for 204 and 304).
    pub body: Box<[u8]>,
}

/// A redirect: each part set replaces the request's in the `location`.
#[derive(Clone, Debug)]
pub struct RedirectRt {
    /// `https` (else `http`, the scheme the listener serves).
    pub https: bool,
    /// A host without a port.
    pub host: Option<Box<str>>,
    /// The port.
    pub port: Option<u16>,
    /// The path, or what replaces the matched part of it.
    pub path: Option<RedirectPath>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
    /// The request's query is dropped.
    pub strip_query: bool,
}

/// What a redirect does to the path.
#[derive(Clone, Debug)]
pub enum RedirectPath {
    /// Replaces it whole.
    Whole(Box<str>),
    /// Replaces the part the route matched.
    Prefix(Box<str>),
}

/// Fields a route sets (each replacing the message's fields of its name) and removes.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    /// Lowercase name and value.
    pub set: Vec<(Box<str>, Box<[u8]>)>,
    /// Lowercase names.
    pub remove: Vec<Box<str>>,
}

impl HeaderEdits {
    /// `base` and then the fields this sets, as one list of extra fields for the head.
    pub fn with_set<'a>(&'a self, base: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
        let mut all = Vec::with_capacity(base.len() + self.set.len());
        all.extend_from_slice(base);
        all.extend(self.set.iter().map(|(n, v)| (&**n, &**v)));
        all
    }
}

impl RouteRt {
    /// Where a request goes: for a split only, `random` is drawn, or `hash` taken (the
    /// request's hash of the route's `hash_on`) when the split is by hash.
    pub fn dispatch(
        &self,
        random: impl FnOnce() -> u64,
        hash: impl FnOnce() -> u64,
    ) -> Dispatch<'_> {
        match &self.action {
            RouteAction::Cluster(c) => Dispatch::Upstream {
                choice: 0,
                cluster: *c,
            },
            RouteAction::Split(s) => {
                // Mixed first: ring-hash and rendezvous balancers in the chosen cluster use
                // the same hash, and the split must not take only some of its values.
                let draw = match s.by_hash {
                    true => omnirelay_abstractions::topology::hash::mix64(hash()),
                    false => random(),
                };
                let (choice, cluster) = s.pick(draw);
                Dispatch::Upstream { choice, cluster }
            }
            RouteAction::Answer(a) => Dispatch::Answer(a),
        }
    }

    /// The clusters its requests may go to, in their order (none for a route that
    /// answers them itself).
    pub fn clusters(&self) -> impl Iterator<Item = usize> + '_ {
        let (one, split) = match &self.action {
            RouteAction::Cluster(c) => (Some(*c), &[][..]),
            RouteAction::Split(s) => (None, &s.clusters[..]),
            RouteAction::Answer(_) => (None, &[][..]),
        };
        one.into_iter().chain(split.iter().map(|&(c, _)| c))
    }

    /// How many leading bytes of a path this route matched: its prefix, or the whole
    /// exact path.
    pub fn matched_len(&self) -> usize {
        match &self.matcher.path {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p.len(),
        }
    }
}

/// A cluster.
#[derive(Debug)]
pub struct ClusterRt {
    /// Name (metrics, access log).
    pub name: Arc<str>,
    /// Endpoints and balancing tables.
    pub lb: ClusterLb,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle pooled connection timeout.
    pub idle_timeout: Duration,
    /// Passive health.
    pub outlier: OutlierConfig,
    /// Idle connections kept per endpoint and worker.
    pub max_idle_per_endpoint: usize,
    /// `max_requests`: the requests in flight to this cluster over all workers, and their
    /// limit.
    pub max_requests: Option<InFlight>,
    /// Active health checking of its endpoints (their state is in `lb`'s health).
    pub health_check: Option<HealthCheckRt>,
}

/// How a cluster's endpoints are checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheckRt {
    /// What one check does.
    pub probe: Probe,
    /// Between checks of one endpoint.
    pub interval: Duration,
    /// For one check, connect to response head (or to the connection, for TCP).
    pub timeout: Duration,
    /// Failed checks in a row (connect failures, timeouts) that take an endpoint out; a
    /// response with a status not expected takes it out at once.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    pub healthy_threshold: u32,
}

/// What one health check of an endpoint does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// An HTTP/1.1 GET of `path` with `host`; a status within one of `expected` (inclusive
    /// ranges) passes.
    Http {
        /// The request target.
        path: Box<str>,
        /// The Host field (the cluster's name unless configured).
        host: Box<str>,
        /// The statuses that pass (200-299 unless configured).
        expected: Box<[(u16, u16)]>,
    },
    /// A TCP connection, nothing sent: one made within the timeout passes.
    Tcp,
}

impl Probe {
    /// Whether an HTTP check's response `status` passes.
    pub fn expects(&self, status: u16) -> bool {
        match self {
            Probe::Http { expected, .. } => {
                expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
            }
            Probe::Tcp => false,
        }
    }
}

/// Requests in flight to a cluster, counted over all workers against a limit (Envoy's
/// `max_requests` circuit breaker). The count is one atomic shared by the workers and
/// carried from a snapshot to the next under the cluster's name, so that requests still
/// running on the older snapshot keep counting.
#[derive(Debug)]
pub struct InFlight {
    limit: u64,
    count: Arc<AtomicU64>,
}

impl InFlight {
    /// A place for one more request, held until the guard drops; `None` when the cluster
    /// has `limit` requests in flight already.
    pub fn enter(&self) -> Option<InFlightGuard<'_>> {
        // Counted only when there is room: a refused request never shows in the count
        // (an add-then-undo would make a concurrent one see the cluster full).
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        Some(InFlightGuard(&self.count))
    }

    /// Requests in flight now.
    pub fn current(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One request's place in a cluster's [`InFlight`] count.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a AtomicU64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The compiled snapshot.
#[derive(Debug)]
pub struct RuntimeConfig {
    /// Snapshot version.
    pub version: u64,
    /// Listeners.
    pub listeners: Vec<ListenerRt>,
    /// Routes.
    pub routes: Vec<RouteRt>,
    /// Clusters.
    pub clusters: Vec<Arc<ClusterRt>>,
}

/// The most retries a route may ask for (the control plane allows 0 to 10).
const MAX_RETRIES: u32 = 10;

fn ms(v: u32, default: Duration) -> Duration {
    if v == 0 {
        default
    } else {
        Duration::from_millis(u64::from(v))
    }
}

fn invalid(msg: String) -> RejectReason {
    RejectReason::Invalid(msg)
}

/// Refuses a snapshot whose `section` names an item twice.
fn unique<'a>(section: &str, names: impl Iterator<Item = &'a str>) -> Result<(), RejectReason> {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(invalid(format!("{section}[{i}] repeats the name {name:?}")));
        }
    }
    Ok(())
}

fn addr(text: &str, what: &str) -> Result<SocketAddr, RejectReason> {
    text.parse()
        .map_err(|_| invalid(format!("{what}: {text:?} is not an ip:port address")))
}

impl RuntimeConfig {
    /// The names of the clusters `route` sends to, in its order; one empty name for a
    /// route that answers itself (metrics name no cluster then).
    pub fn cluster_names_of<'a>(&'a self, route: &'a RouteRt) -> Vec<&'a str> {
        let names: Vec<&str> = route.clusters().map(|c| &*self.clusters[c].name).collect();
        if names.is_empty() { vec![""] } else { names }
    }

    /// Each (route, cluster) pair its requests are counted by, route by route in order
    /// (see [`Self::cluster_names_of`]).
    pub fn route_keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.iter().flat_map(|r| {
            self.cluster_names_of(r)
                .into_iter()
                .map(move |c| (&*r.name, c))
        })
    }

    /// Compiles a verified snapshot, building hash-based clusters' tables with
    /// `strategies`; any inconsistency rejects the whole snapshot.
    pub fn build(s: &v1::Snapshot, strategies: &Strategies) -> Result<Self, RejectReason> {
        Self::build_after(s, strategies, None)
    }

    /// [`RuntimeConfig::build`] for the snapshot that follows `prev`: a cluster that keeps
    /// its name keeps its count of requests in flight.
    pub fn build_after(
        s: &v1::Snapshot,
        strategies: &Strategies,
        prev: Option<&RuntimeConfig>,
    ) -> Result<Self, RejectReason> {
        // State is carried and metrics are kept by name: two of one name would share it.
        unique("clusters", s.clusters.iter().map(|c| c.name.as_str()))?;
        unique("routes", s.routes.iter().map(|r| r.name.as_str()))?;
        let before: HashMap<&str, &ClusterRt> = prev
            .into_iter()
            .flat_map(|p| &p.clusters)
            .map(|c| (&*c.name, &**c))
            .collect();
        let clusters = s
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let was = before.get(c.name.as_str());
                let carried = Carried {
                    count: was
                        .and_then(|w| w.max_requests.as_ref())
                        .map(|m| Arc::clone(&m.count)),
                    health: was.map(|w| &w.lb).filter(|lb| lb.health().is_some()),
                    version: s.version,
                };
                cluster(i, c, strategies, carried).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limiters: HashMap<&str, &Arc<RateLimiter>> = prev
            .into_iter()
            .flat_map(|p| &p.routes)
            .filter_map(|r| Some((&*r.name, r.rate_limit.as_ref()?)))
            .collect();
        let routes = s
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut route = route(i, r, clusters.len())?;
                // A route that keeps its name and limit keeps its bucket (and count); a new
                // limit goes on from the old bucket.
                route.rate_limit = r.rate_limit.map(|l| {
                    let (rate, burst) = (l.requests_per_second, l.burst);
                    match limiters.get(r.name.as_str()) {
                        Some(&kept) if kept.config() == (rate, burst) => Arc::clone(kept),
                        Some(&old) => Arc::new(RateLimiter::following(rate, burst, old)),
                        None => Arc::new(RateLimiter::new(rate, burst, Instant::now())),
                    }
                });
                Ok(route)
            })
            .collect::<Result<Vec<_>, RejectReason>>()?;
        let listeners = s
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let limits = l.limits.unwrap_or_default();
                let timeouts = l.client_timeouts.unwrap_or_default();
                let route_indices = l
                    .route_indices
                    .iter()
                    .map(|&r| {
                        let r = r as usize;
                        if r < routes.len() {
                            Ok(r)
                        } else {
                            Err(invalid(format!(
                                "listeners[{i}] names route {r}, out of range"
                            )))
                        }
                    })
                    .collect::<Result<_, _>>()?;
                Ok(ListenerRt {
                    name: l.name.as_str().into(),
                    address: addr(&l.address, &format!("listeners[{i}].address"))?,
                    limits: ListenerLimits {
                        max_header_bytes: nonzero(limits.max_header_bytes, 64 * 1024),
                        max_headers: nonzero(limits.max_headers, 100),
                        max_body_bytes: if limits.max_body_bytes == 0 {
                            u64::MAX
                        } else {
                            limits.max_body_bytes
                        },
                    },
                    routes: route_indices,
                    idle_timeout: ms(timeouts.idle_ms, DEFAULT_CLIENT_IDLE_TIMEOUT),
                    head_timeout: ms(timeouts.head_ms, DEFAULT_CLIENT_HEAD_TIMEOUT),
                    replace_request_id: l.replace_request_id,
                    merge_slashes: l.merge_slashes,
                })
            })
            .collect::<Result<Vec<_>, RejectReason>>()?;
        if listeners.is_empty() {
            return Err(invalid("no listeners".into()));
        }
        Ok(RuntimeConfig {
            version: s.version,
            listeners,
            routes,
            clusters,
        })
    }

    /// The listener bound to `address`, if any.
    pub fn listener_by_addr(&self, address: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| l.address == address)
    }

    /// The shortest client idle timeout of any listener (the default without listeners).
    pub fn min_client_idle_timeout(&self) -> Duration {
        self.listeners
            .iter()
            .map(|l| l.idle_timeout)
            .min()
            .unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT)
    }
}

fn nonzero(v: u32, default: usize) -> usize {
    if v == 0 { default } else { v as usize }
}

/// What a cluster carries over from the snapshot before under its name.
struct Carried<'a> {
    /// Its requests in flight (`max_requests`).
    count: Option<Arc<AtomicU64>>,
    /// Its endpoints and their active health, when it was health-checked.
    health: Option<&'a ClusterLb>,
    /// The version of the snapshot being built (an endpoint new to the checks is checked
    /// from it).
    version: u64,
}

/// A cluster's active health, each endpoint's taken from `before` (the same cluster in the
/// snapshot before, when it was checked) by address: an endpoint out stays out until its
/// checks bring it back; one new to the checks starts out, pending its first check.
fn carried_health(lb: &ClusterLb, before: Option<&ClusterLb>, version: u64) -> Health {
    // (state, checked since) by address.
    let was: HashMap<SocketAddr, (Checked, u64)> = match before {
        Some(old) => old.health().map_or_else(HashMap::new, |h| {
            old.ids()
                .filter_map(|id| Some((old.addr(id)?, (h.get(id.index()), h.since(id.index())))))
                .collect()
        }),
        None => HashMap::new(),
    };
    // An endpoint new to the checks waits out for its first one, as in Envoy.
    Health::with(lb.ids().map(|id| {
        lb.addr(id)
            .and_then(|a| was.get(&a).copied())
            .unwrap_or((Checked::Pending, version))
    }))
}

/// A cluster's health check, checked as the control daemon checks its config (its path
/// and host go into requests).
fn health_check(
    i: usize,
    c: &v1::Cluster,
    h: &v1::HealthCheck,
) -> Result<HealthCheckRt, RejectReason> {
    let bad = |what: String| invalid(format!("clusters[{i}] ({}) health_check {what}", c.name));
    let probe = match v1::HealthCheckProtocol::try_from(h.protocol) {
        Ok(v1::HealthCheckProtocol::Http) => http_probe(&c.name, h).map_err(bad)?,
        Ok(v1::HealthCheckProtocol::Tcp) => {
            if !h.path.is_empty() || !h.host.is_empty() || !h.expected_statuses.is_empty() {
                return Err(bad(
                    "of protocol TCP has a path, host or expected statuses".into()
                ));
            }
            Probe::Tcp
        }
        Err(_) => return Err(bad(format!("protocol {} is unknown", h.protocol))),
    };
    if h.interval_ms < limits::MIN_HEALTH_CHECK_INTERVAL_MS
        || h.timeout_ms < limits::MIN_HEALTH_CHECK_TIMEOUT_MS
        || h.timeout_ms > h.interval_ms
    {
        return Err(bad(format!(
            "interval_ms {} and timeout_ms {}: at least {} and {} ms, the timeout within the \
             interval",
            h.interval_ms,
            h.timeout_ms,
            limits::MIN_HEALTH_CHECK_INTERVAL_MS,
            limits::MIN_HEALTH_CHECK_TIMEOUT_MS
        )));
    }
    let max = limits::MAX_HEALTH_CHECK_THRESHOLD;
    if !(1..=max).contains(&h.unhealthy_threshold) || !(1..=max).contains(&h.healthy_threshold) {
        return Err(bad(format!("thresholds must be 1-{max}")));
    }
    Ok(HealthCheckRt {
        probe,
        interval: Duration::from_millis(u64::from(h.interval_ms)),
        timeout: Duration::from_millis(u64::from(h.timeout_ms)),
        unhealthy_threshold: h.unhealthy_threshold,
        healthy_threshold: h.healthy_threshold,
    })
}

/// An HTTP health check's request and expected statuses; the error names what is wrong.
fn http_probe(cluster: &str, h: &v1::HealthCheck) -> Result<Probe, String> {
    if !crate::http1::valid_origin_form(&h.path) {
        return Err(format!("path {:?} is not a request target", h.path));
    }
    // Without a host of its own, the check names the cluster (a name no control daemon
    // would let through otherwise is refused, not sent).
    let host = if h.host.is_empty() { cluster } else { &h.host };
    if !crate::http1::valid_host(host.as_bytes()) {
        return Err(format!("host {host:?} is not a Host value"));
    }
    if h.expected_statuses.len() > limits::MAX_EXPECTED_STATUS_RANGES {
        return Err(format!(
            "expects {} status ranges, more than {}",
            h.expected_statuses.len(),
            limits::MAX_EXPECTED_STATUS_RANGES
        ));
    }
    let ok = &limits::EXPECTABLE_STATUSES;
    let expected = match &h.expected_statuses[..] {
        [] => vec![(200, 299)],
        ranges => ranges
            .iter()
            .map(|r| {
                let status = |n: u32| u16::try_from(n).ok().filter(|n| ok.contains(n));
                match (status(r.start), status(r.end)) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                    _ => Err(format!(
                        "expected statuses {}-{} are not a range within {}-{}",
                        r.start,
                        r.end,
                        ok.start(),
                        ok.end()
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Probe::Http {
        path: h.path.as_str().into(),
        host: host.into(),
        expected: expected.into(),
    })
}

fn cluster(
    i: usize,
    c: &v1::Cluster,
    strategies: &Strategies,
    carried: Carried<'_>,
) -> Result<ClusterRt, RejectReason> {
    let endpoints = c
        .endpoints
        .iter()
        .enumerate()
        .map(|(j, e)| {
            // Unset (0) weighs 1, as it always has.
            Ok((
                addr(&e.address, &format!("clusters[{i}].endpoints[{j}]"))?,
                e.weight.max(1),
            ))
        })
        .collect::<Result<Vec<_>, RejectReason>>()?;
    if endpoints.is_empty() {
        return Err(invalid(format!(
            "clusters[{i}] ({}) has no endpoints",
            c.name
        )));
    }
    let policy = match v1::LbPolicy::try_from(c.lb_policy).map_err(|_| {
        invalid(format!(
            "clusters[{i}] ({}): load-balancing policy {} is one this data plane does not know",
            c.name, c.lb_policy
        ))
    })? {
        v1::LbPolicy::Unspecified | v1::LbPolicy::RoundRobin => Policy::RoundRobin,
        v1::LbPolicy::LeastRequest => Policy::LeastRequest,
        v1::LbPolicy::RingHash => Policy::RingHash,
        v1::LbPolicy::Rendezvous => Policy::Rendezvous,
    };
    let lb = ClusterLb::new(&endpoints, policy, strategies)
        .map_err(|e| invalid(format!("clusters[{i}] ({}): {e}", c.name)))?;
    let health_check = match &c.health_check {
        Some(h) => Some(health_check(i, c, h)?),
        None => None,
    };
    let lb = match health_check {
        Some(_) => {
            let health = carried_health(&lb, carried.health, carried.version);
            lb.with_health(Arc::new(health))
        }
        None => lb,
    };
    let t = c.timeouts.unwrap_or_default();
    let o = c.outlier.unwrap_or_default();
    let d = OutlierConfig::default();
    Ok(ClusterRt {
        name: c.name.as_str().into(),
        lb,
        connect_timeout: ms(t.connect_ms, DEFAULT_CONNECT_TIMEOUT),
        idle_timeout: ms(t.idle_ms, DEFAULT_IDLE_TIMEOUT),
        outlier: OutlierConfig {
            consecutive_failures: if o.consecutive_failures == 0 {
                d.consecutive_failures
            } else {
                o.consecutive_failures
            },
            base_ejection_time: ms(o.base_ejection_ms, d.base_ejection_time),
            max_ejection_time: ms(o.max_ejection_ms, d.max_ejection_time),
            max_ejection_percent: o.max_ejection_percent.min(100) as u8,
        },
        max_idle_per_endpoint: c.max_idle_per_endpoint as usize,
        max_requests: (c.max_requests > 0).then(|| InFlight {
            limit: u64::from(c.max_requests),
            count: carried.count.unwrap_or_default(),
        }),
        health_check,
    })
}

/// A route's own answer, checked as the control daemon checks its config (its values
/// are written into response heads).
fn answer(i: usize, r: &v1::Route, a: &v1::route::Answer) -> Result<Answer, RejectReason> {
    let bad = |what: String| Err(invalid(format!("routes[{i}] ({}) {what}", r.name)));
    match a {
        v1::route::Answer::DirectResponse(d) => {
            let status = match u16::try_from(d.status) {
                Ok(s @ 200..=599) => s,
                _ => {
                    return bad(format!(
                        "direct_response status {} is not 200-599",
                        d.status
                    ));
                }
            };
            if crate::http1::forbids_body(status) && !d.body.is_empty() {
                return bad(format!("direct_response {status} has a body"));
            }
            if d.body.len() > limits::MAX_DIRECT_RESPONSE_BODY {
                return bad(format!(
                    "direct_response body of {} bytes is over {}",
                    d.body.len(),
                    limits::MAX_DIRECT_RESPONSE_BODY
                ));
            }
            if !crate::http1::valid_field_value(d.content_type.as_bytes()) {
                return bad("direct_response content_type is not a field value".into());
            }
            Ok(Answer::Direct(DirectRt {
                status,
                content_type: (!d.content_type.is_empty()).then(|| d.content_type.as_str().into()),
                body: d.body.as_slice().into(),
            }))
        }
        v1::route::Answer::Redirect(to) => {
            let https = match to.scheme.as_str() {
                "" | "http" => false,
                "https" => true,
                s => return bad(format!("redirect scheme {s:?} is not http or https")),
            };
            let host = match to.host.as_str() {
                "" => None,
                h if crate::http1::valid_host_without_port(h) => Some(h.into()),
                h => return bad(format!("redirect host {h:?} is not a host without a port")),
            };
            let port = match u16::try_from(to.port) {
                Ok(0) => None,
                Ok(p) => Some(p),
                Err(_) => return bad(format!("redirect port {} is out of range", to.port)),
            };
            let path = match &to.path {
                None => None,
                Some(
                    v1::redirect::Path::PathRedirect(p) | v1::redirect::Path::PrefixRewrite(p),
                ) if !crate::http1::valid_path_rewrite(p) => {
                    return bad(format!("redirect path {p:?} is not a path start"));
                }
                Some(v1::redirect::Path::PathRedirect(p)) => {
                    Some(RedirectPath::Whole(p.as_str().into()))
                }
                Some(v1::redirect::Path::PrefixRewrite(p)) => {
                    Some(RedirectPath::Prefix(p.as_str().into()))
                }
            };
            let code = match u16::try_from(to.code) {
                Ok(c) if limits::REDIRECT_CODES.contains(&c) => c,
                _ => {
                    return bad(format!(
                        "redirect code {} is not 301, 302, 303, 307 or 308",
                        to.code
                    ));
                }
            };
            if !https && host.is_none() && port.is_none() && path.is_none() {
                return bad("redirect changes nothing: it would loop".into());
            }
            Ok(Answer::Redirect(RedirectRt {
                https,
                host,
                port,
                path,
                code,
                strip_query: to.strip_query,
            }))
        }
    }
}

/// Route `i` of a snapshot with `clusters` clusters (its rate limiter is set by the
/// caller, which knows the snapshot before).
fn route(i: usize, r: &v1::Route, clusters: usize) -> Result<RouteRt, RejectReason> {
    if let Some(l) = &r.rate_limit {
        let max = limits::MAX_ROUTE_RATE;
        if !(1..=max).contains(&l.requests_per_second) || !(1..=max).contains(&l.burst) {
            return Err(invalid(format!(
                "routes[{i}] ({}) rate_limit {} per second, burst {}: each must be 1-{max}",
                r.name, l.requests_per_second, l.burst
            )));
        }
    }
    let in_range = |c: u32| {
        let c = c as usize;
        if c < clusters {
            Ok(c)
        } else {
            Err(invalid(format!(
                "routes[{i}] ({}) names cluster {c}, out of range",
                r.name
            )))
        }
    };
    let action = match &r.answer {
        _ if r.split_by_hash && r.weighted_clusters.is_empty() => {
            return Err(invalid(format!(
                "routes[{i}] ({}) splits by hash without weighted clusters",
                r.name
            )));
        }
        Some(_) if !r.weighted_clusters.is_empty() => {
            return Err(invalid(format!(
                "routes[{i}] ({}) has both an answer and weighted clusters",
                r.name
            )));
        }
        Some(a) => RouteAction::Answer(Box::new(answer(i, r, a)?)),
        None if !r.weighted_clusters.is_empty() => {
            let n = r.weighted_clusters.len();
            if n > limits::MAX_WEIGHTED_CLUSTERS {
                return Err(invalid(format!(
                    "routes[{i}] ({}) splits over {n} clusters, over {}",
                    r.name,
                    limits::MAX_WEIGHTED_CLUSTERS
                )));
            }
            let twice = r.weighted_clusters.iter().enumerate().find(|(j, w)| {
                r.weighted_clusters[..*j]
                    .iter()
                    .any(|v| v.cluster_index == w.cluster_index)
            });
            if let Some((_, w)) = twice {
                return Err(invalid(format!(
                    "routes[{i}] ({}) splits over cluster {} twice",
                    r.name, w.cluster_index
                )));
            }
            let heavy = r
                .weighted_clusters
                .iter()
                .find(|w| w.weight > limits::MAX_SPLIT_WEIGHT);
            if let Some(w) = heavy {
                return Err(invalid(format!(
                    "routes[{i}] ({}) weight {} is over {}",
                    r.name,
                    w.weight,
                    limits::MAX_SPLIT_WEIGHT
                )));
            }
            let weighted = r
                .weighted_clusters
                .iter()
                .map(|w| Ok((in_range(w.cluster_index)?, w.weight)))
                .collect::<Result<Vec<_>, RejectReason>>()?;
            let mut split = Split::new(weighted).ok_or_else(|| {
                invalid(format!(
                    "routes[{i}] ({}) weighted clusters all weigh 0",
                    r.name
                ))
            })?;
            split.by_hash = r.split_by_hash;
            RouteAction::Split(Box::new(split))
        }
        None => RouteAction::Cluster(in_range(r.cluster_index)?),
    };
    // Unset fields keep their proto3 meaning (no path: every path; no header condition:
    // present; no hash key: the client's address). A control plane that adds a match kind
    // announces it in `required_capabilities`, which data planes without it refuse.
    let path = match &r.path {
        Some(v1::route::Path::Exact(p)) => PathMatch::Exact(p.clone()),
        Some(v1::route::Path::Prefix(p)) => PathMatch::Prefix(p.clone()),
        None => PathMatch::Prefix("/".into()),
    };
    let headers = r
        .headers
        .iter()
        .map(|h| {
            let cond = match &h.r#match {
                Some(v1::header_match::Match::Exact(v)) => {
                    HeaderCondition::Exact(v.as_bytes().to_vec())
                }
                Some(v1::header_match::Match::Prefix(v)) => {
                    HeaderCondition::Prefix(v.as_bytes().to_vec())
                }
                Some(v1::header_match::Match::Present(_)) | None => HeaderCondition::Present,
            };
            (h.name.to_ascii_lowercase(), cond)
        })
        .collect();
    let t = r.timeouts.unwrap_or_default();
    let rp = r.retry.clone().unwrap_or_default();
    let ok = &limits::RETRIABLE_STATUSES;
    let bad_status = rp
        .retriable_statuses
        .iter()
        .find(|&&s| !u16::try_from(s).is_ok_and(|s| ok.contains(&s)));
    if let Some(s) = bad_status {
        return Err(invalid(format!(
            "routes[{i}] ({}) retries on status {s}, not one of {}-{}",
            r.name,
            ok.start(),
            ok.end()
        )));
    }
    if rp.retriable_statuses.len() > limits::MAX_RETRIABLE_STATUSES {
        return Err(invalid(format!(
            "routes[{i}] ({}) retries on {} statuses, over {}",
            r.name,
            rp.retriable_statuses.len(),
            limits::MAX_RETRIABLE_STATUSES
        )));
    }
    let hash_on = match r.hash_on.as_ref().and_then(|h| h.key.as_ref()) {
        Some(v1::hash_on::Key::Header(h)) => HashKey::Header(h.to_ascii_lowercase()),
        _ => HashKey::ClientIp,
    };
    // Written into the upstream request line and head: checked here too (a line break
    // would split the head).
    let prefix_rewrite = match r.prefix_rewrite.as_str() {
        "" => None,
        p if crate::http1::valid_path_rewrite(p) => Some(p.into()),
        p => {
            return Err(invalid(format!(
                "routes[{i}] ({}) prefix_rewrite {p:?} is not a path start",
                r.name
            )));
        }
    };
    let edits = |e: &Option<v1::HeaderEdits>, request: bool| {
        let Some(e) = e else { return Ok(None) };
        let side = if request { "request" } else { "response" };
        let check = |name: &str| match crate::http1::uneditable_field(name, request) {
            Some(why) => Err(invalid(format!(
                "routes[{i}] ({}) {side}_headers: {name:?} {why}",
                r.name
            ))),
            None => Ok(name.to_ascii_lowercase().into_boxed_str()),
        };
        let set = e
            .set
            .iter()
            .map(|f| {
                if !crate::http1::valid_field_value(f.value.as_bytes()) {
                    return Err(invalid(format!(
                        "routes[{i}] ({}) {side}_headers: the value of {:?} is not a field value",
                        r.name, f.name
                    )));
                }
                Ok((check(&f.name)?, f.value.as_bytes().into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let remove = e
            .remove
            .iter()
            .map(|n| check(n))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((name, _)) = set
            .iter()
            .enumerate()
            .find_map(|(j, f)| set[..j].iter().any(|(m, _)| *m == f.0).then_some(f))
        {
            return Err(invalid(format!(
                "routes[{i}] ({}) {side}_headers: {name:?} is set twice",
                r.name
            )));
        }
        Ok((!set.is_empty() || !remove.is_empty()).then_some(HeaderEdits { set, remove }))
    };
    let request_headers = edits(&r.request_headers, true)?;
    let response_headers = edits(&r.response_headers, false)?;
    let host_rewrite = match r.host_rewrite.as_str() {
        "" => None,
        h if crate::http1::valid_host(h.as_bytes()) => Some(h.into()),
        h => {
            return Err(invalid(format!(
                "routes[{i}] ({}) host_rewrite {h:?} is not a Host value",
                r.name
            )));
        }
    };
    Ok(RouteRt {
        name: r.name.as_str().into(),
        matcher: RouteMatcher {
            hosts: r.hosts.iter().map(|h| HostMatch::parse(h)).collect(),
            path,
            headers,
        },
        action,
        request_timeout: ms(t.request_ms, DEFAULT_REQUEST_TIMEOUT),
        retry: RetryRt {
            max_retries: rp.max_retries.min(MAX_RETRIES),
            budget: RetryBudgetConfig {
                budget_percent: rp.budget_percent,
                min_retries_per_second: rp.min_retries_per_second,
                ..RetryBudgetConfig::default()
            },
            base_backoff: Duration::from_millis(u64::from(rp.base_backoff_ms)),
            max_backoff: Duration::from_millis(u64::from(rp.max_backoff_ms)),
            on_connect_failure: rp.on_connect_failure,
            on_5xx: rp.on_5xx,
            on_gateway_error: rp.on_gateway_error,
            // Checked above: each fits.
            statuses: rp.retriable_statuses.iter().map(|&s| s as u16).collect(),
            on_timeout: rp.on_timeout,
            per_try_timeout: (rp.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(rp.per_try_timeout_ms))),
        },
        hash_on,
        prefix_rewrite,
        host_rewrite,
        request_headers,
        response_headers,
        rate_limit: None,
    })
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use omnirelay_proto::v1;

    use super::{
        DEFAULT_CLIENT_HEAD_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, Probe, RuntimeConfig, Split,
    };
    use crate::{lb::test_util::strategies, snapshot::test_util::minimal};

    /// The error `edit` of [`minimal`] is refused with.
    fn refused(edit: impl FnOnce(&mut v1::Snapshot)) -> String {
        let mut s = minimal();
        edit(&mut s);
        match RuntimeConfig::build(&s, &strategies()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// A balancing policy number this data plane does not know (a newer control plane's)
    /// is refused with the field named, not read as round robin; unset fields keep their
    /// proto3 meaning.
    #[test]
    fn an_unknown_balancing_policy_is_refused_not_guessed_at() {
        assert!(RuntimeConfig::build(&minimal(), &strategies()).is_ok());
        let e = refused(|s| s.clusters[0].lb_policy = 99);
        assert!(
            e.contains("clusters[0] (c): load-balancing policy 99"),
            "{e}"
        );
        let mut unset = minimal();
        unset.routes[0].path = None;
        unset.clusters[0].endpoints[0].weight = 0;
        assert!(RuntimeConfig::build(&unset, &strategies()).is_ok());
    }

    /// A split picks each cluster with its weight's share of random values, never one of
    /// weight 0; an index out of range, no weight above 0, or a split beside an answer is
    /// refused.
    #[test]
    fn a_split_picks_by_weight_and_is_checked() {
        let split = Split::new([(4, 1), (5, 0), (6, 3)]).unwrap();
        let mut counts = [0usize; 3];
        for r in 0..4000u64 {
            let (choice, cluster) = split.pick(r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert_eq!(cluster, 4 + choice);
            counts[choice] += 1;
        }
        assert_eq!(counts[1], 0, "weight 0 picked: {counts:?}");
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[2], 4000);
        // Values from the first quarter of the range go to the first cluster (weight 1 of
        // 4), the others to the last; scaled weights keep every value where it was.
        let quarter = 1u64 << 62;
        assert_eq!(split.pick(0), (0, 4));
        assert_eq!(split.pick(quarter - 1), (0, 4));
        assert_eq!(split.pick(quarter), (2, 6));
        assert_eq!(split.pick(u64::MAX), (2, 6));
        let scaled = Split::new([(4, 10), (5, 0), (6, 30)]).unwrap();
        for r in (0..1000u64).map(|r| r.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(scaled.pick(r), split.pick(r));
        }
        assert!(Split::new([(0, 0)]).is_none());

        let weighted = |c, w| v1::WeightedCluster {
            cluster_index: c,
            weight: w,
        };
        let mut good = minimal();
        let mut other = good.clusters[0].clone();
        other.name = "d".into();
        good.clusters.push(other);
        good.routes[0].weighted_clusters = vec![weighted(1, 2), weighted(0, 0)];
        let built = RuntimeConfig::build(&good, &strategies()).unwrap();
        assert_eq!(built.routes[0].clusters().collect::<Vec<_>>(), [1, 0]);
        assert_eq!(built.route_keys().count(), 2);
        let e = refused(|s| s.routes[0].weighted_clusters = vec![weighted(3, 1)]);
        assert!(
            e.contains("routes[0] (r) names cluster 3, out of range"),
            "{e}"
        );
        let e = refused(|s| s.routes[0].weighted_clusters = vec![weighted(0, 0)]);
        assert!(e.contains("all weigh 0"), "{e}");
        let e = refused(|s| {
            s.routes[0].weighted_clusters = vec![weighted(0, 1)];
            s.routes[0].answer = Some(v1::route::Answer::DirectResponse(v1::DirectResponse {
                status: 200,
                ..Default::default()
            }));
        });
        assert!(e.contains("both an answer and weighted clusters"), "{e}");
        let e = refused(|s| s.routes[0].weighted_clusters = vec![weighted(0, 1), weighted(0, 2)]);
        assert!(e.contains("cluster 0 twice"), "{e}");
        let e = refused(|s| s.routes[0].weighted_clusters = vec![weighted(0, 10_001)]);
        assert!(e.contains("weight 10001 is over 10000"), "{e}");
    }

    /// Each condition retries its own statuses; a status outside 400-599 is refused.
    #[test]
    fn a_retry_policy_retries_its_statuses() {
        let mut s = minimal();
        let policy = |s: &v1::Snapshot| {
            RuntimeConfig::build(s, &strategies()).unwrap().routes[0]
                .retry
                .clone()
        };
        let statuses = [409, 429, 500, 501, 502, 503, 504];
        let retries = |r: &super::RetryRt| statuses.map(|st| r.retries(st));
        assert_eq!(retries(&policy(&s)), [false; 7]);
        s.routes[0].retry = Some(v1::RetryPolicy {
            on_gateway_error: true,
            retriable_statuses: vec![409],
            ..Default::default()
        });
        let named = policy(&s);
        assert_eq!(
            retries(&named),
            [true, false, false, false, true, true, true]
        );
        s.routes[0].retry = Some(v1::RetryPolicy {
            on_5xx: true,
            ..Default::default()
        });
        assert_eq!(
            retries(&policy(&s)),
            [false, false, true, false, true, true, true]
        );
        for bad in [399, 600, 65_945] {
            let e = refused(|s| {
                s.routes[0].retry = Some(v1::RetryPolicy {
                    retriable_statuses: vec![409, bad],
                    ..Default::default()
                });
            });
            assert!(
                e.contains(&format!("retries on status {bad}, not one of 400-599")),
                "{e}"
            );
        }
        let e = refused(|s| {
            s.routes[0].retry = Some(v1::RetryPolicy {
                retriable_statuses: (400..433).collect(),
                ..Default::default()
            });
        });
        assert!(e.contains("retries on 33 statuses, over 32"), "{e}");
    }

    /// A split by hash gives one hash one cluster whatever the random draw, and the
    /// hashes still divide by weight; it needs a split.
    #[test]
    fn a_split_by_hash_keeps_a_hash_to_one_cluster() {
        let weighted = |c, w| v1::WeightedCluster {
            cluster_index: c,
            weight: w,
        };
        let mut s = minimal();
        let mut other = s.clusters[0].clone();
        other.name = "d".into();
        s.clusters.push(other);
        s.routes[0].weighted_clusters = vec![weighted(0, 1), weighted(1, 3)];
        let cluster_of = |d: super::Dispatch<'_>| match d {
            super::Dispatch::Upstream { cluster, .. } => cluster,
            super::Dispatch::Answer(_) => panic!("answered"),
        };
        // Drawn at random: the hash is not asked for.
        let random = RuntimeConfig::build(&s, &strategies()).unwrap();
        let d = random.routes[0].dispatch(|| 0, || panic!("hashed"));
        assert_eq!(cluster_of(d), 0);
        s.routes[0].split_by_hash = true;
        let hashed = RuntimeConfig::build(&s, &strategies()).unwrap();
        let route = &hashed.routes[0];
        let mut counts = [0usize; 2];
        for h in 0..4000u64 {
            let first = cluster_of(route.dispatch(|| panic!("drawn"), || h));
            assert_eq!(cluster_of(route.dispatch(|| 0, || h)), first);
            counts[first] += 1;
        }
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
        // Hashes are mixed before the pick: ones alike in their high bits (or multiples of
        // the weights' sum) still go to both.
        let mut counts = [0usize; 2];
        for h in (0..400u64).map(|k| k * 4) {
            counts[cluster_of(route.dispatch(|| 0, || h))] += 1;
        }
        assert!(counts[0] > 50 && counts[1] > 200, "{counts:?}");
        let e = refused(|s| s.routes[0].split_by_hash = true);
        assert!(
            e.contains("splits by hash without weighted clusters"),
            "{e}"
        );
    }

    /// A route's rate limiter is carried to the next snapshot while the route keeps its
    /// name and limit (a config change elsewhere does not refill it); a changed limit
    /// gets a new one that goes on from it; a limit of 0 is refused.
    #[test]
    fn a_rate_limiter_is_kept_while_its_route_and_limit_are() {
        let limit = |requests_per_second, burst| {
            Some(v1::RouteRateLimit {
                requests_per_second,
                burst,
            })
        };
        let mut s = minimal();
        s.routes[0].rate_limit = limit(10, 5);
        let v1 = RuntimeConfig::build(&s, &strategies()).unwrap();
        let first = v1.routes[0].rate_limit.clone().unwrap();
        assert_eq!(first.config(), (10, 5));
        s.version = 2;
        s.clusters[0].max_idle_per_endpoint = 3;
        let v2 = RuntimeConfig::build_after(&s, &strategies(), Some(&v1)).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            v2.routes[0].rate_limit.as_ref().unwrap()
        ));
        s.version = 3;
        s.routes[0].rate_limit = limit(20, 5);
        let v3 = RuntimeConfig::build_after(&s, &strategies(), Some(&v2)).unwrap();
        let third = v3.routes[0].rate_limit.as_ref().unwrap();
        assert!(!Arc::ptr_eq(&first, third));
        assert_eq!(third.config(), (20, 5));
        let e = refused(|s| s.routes[0].rate_limit = limit(0, 1));
        assert!(e.contains("routes[0] (r) rate_limit"), "{e}");
        let e = refused(|s| s.routes.push(s.routes[0].clone()));
        assert!(e.contains("routes[1] repeats the name \"r\""), "{e}");
        let e = refused(|s| s.clusters.push(s.clusters[0].clone()));
        assert!(e.contains("clusters[1] repeats the name \"c\""), "{e}");
    }

    /// A health-checked cluster carries each endpoint's state to the next snapshot by
    /// address (one out stays out, one new starts out, pending, checked from that version;
    /// one back after a break is new again); the check's host defaults to the
    /// cluster's name; a path or host that would break the request is refused.
    #[test]
    fn health_is_carried_by_address_and_a_bad_check_is_refused() {
        let check = v1::HealthCheck {
            path: "/healthz".into(),
            interval_ms: 1000,
            timeout_ms: 100,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            ..Default::default()
        };
        let endpoint = |port: u16| v1::Endpoint {
            address: format!("127.0.0.1:{port}"),
            weight: 1,
        };
        let mut s = minimal();
        s.clusters[0].endpoints = vec![endpoint(2), endpoint(3)];
        s.clusters[0].health_check = Some(check.clone());
        let v1 = RuntimeConfig::build(&s, &strategies()).unwrap();
        let c = &v1.clusters[0];
        let probe = &c.health_check.as_ref().unwrap().probe;
        assert!(
            matches!(probe, Probe::Http { host, .. } if host.as_ref() == "c"),
            "{probe:?}"
        );
        // Without expected statuses, 2xx passes.
        let passes = |p: &Probe| [199, 200, 204, 299, 300, 503].map(|s| p.expects(s));
        assert_eq!(passes(probe), [false, true, true, true, false, false]);
        // Both start out, pending their first checks; then port 2 passes, 3 fails.
        let health = c.lb.health().unwrap();
        let states = |h: &crate::lb::Health| {
            (0..h.len())
                .map(|i| (h.is_down(i), h.is_pending(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(states(health), [(true, true), (true, true)]);
        health.set(0, false);
        health.set(1, true);

        s.version = 2;
        s.clusters[0].endpoints = vec![endpoint(4), endpoint(3), endpoint(2)];
        let v2 = RuntimeConfig::build_after(&s, &strategies(), Some(&v1)).unwrap();
        let health = v2.clusters[0].lb.health().unwrap();
        // Port 4 is new: out, pending; 3 stays out, 2 in.
        assert_eq!(
            states(health),
            [(true, true), (true, false), (false, false)]
        );
        assert_eq!(health.down_count(), 2);
        let since = |h: &crate::lb::Health| (0..h.len()).map(|i| h.since(i)).collect::<Vec<_>>();
        assert_eq!(since(health), [2, 1, 1]);
        // Port 4, still pending, stays so; port 3 leaves and comes back: new to the checks
        // again, from the version it came back in.
        s.version = 3;
        s.clusters[0].endpoints = vec![endpoint(4), endpoint(2)];
        let v3 = RuntimeConfig::build_after(&s, &strategies(), Some(&v2)).unwrap();
        s.version = 4;
        s.clusters[0].endpoints = vec![endpoint(4), endpoint(3), endpoint(2)];
        let v4 = RuntimeConfig::build_after(&s, &strategies(), Some(&v3)).unwrap();
        let health = v4.clusters[0].lb.health().unwrap();
        assert_eq!(states(health), [(true, true), (true, true), (false, false)]);
        assert_eq!(since(health), [2, 4, 1]);
        // Without a check, no health is kept.
        assert!(
            RuntimeConfig::build(&minimal(), &strategies())
                .unwrap()
                .clusters[0]
                .lb
                .health()
                .is_none()
        );

        let e = refused(|s| {
            s.clusters[0].health_check = Some(v1::HealthCheck {
                path: "/a b".into(),
                ..check.clone()
            });
        });
        assert!(e.contains("clusters[0] (c) health_check path"), "{e}");
        let e = refused(|s| {
            s.clusters[0].health_check = Some(v1::HealthCheck {
                host: "a\r\nx: y".into(),
                ..check.clone()
            });
        });
        assert!(e.contains("health_check host"), "{e}");
        // The default host is the cluster's name: one that is not a Host value is refused.
        let e = refused(|s| {
            s.clusters[0].name = "c\r\nx: y".into();
            s.clusters[0].health_check = Some(check.clone());
        });
        assert!(e.contains("health_check host"), "{e}");
        // Expected statuses replace 2xx; each range must lie within 200-599 (a check
        // reads past 1xx), low to high.
        let range = |start, end| v1::StatusRange { start, end };
        s.clusters[0].health_check = Some(v1::HealthCheck {
            expected_statuses: vec![range(200, 200), range(500, 503)],
            ..check.clone()
        });
        let v3 = RuntimeConfig::build(&s, &strategies()).unwrap();
        let probe = &v3.clusters[0].health_check.as_ref().unwrap().probe;
        assert_eq!(passes(probe), [false, true, false, false, false, true]);
        for bad in [
            range(100, 200),
            range(300, 200),
            range(500, 600),
            range(65736, 65736),
        ] {
            let e = refused(|s| {
                s.clusters[0].health_check = Some(v1::HealthCheck {
                    expected_statuses: vec![range(200, 200), bad],
                    ..check.clone()
                });
            });
            assert!(e.contains("are not a range within 200-599"), "{e}");
        }
        // A TCP check connects alone: it takes no HTTP fields, and passes no status.
        let tcp = v1::HealthCheck {
            protocol: v1::HealthCheckProtocol::Tcp as i32,
            path: String::new(),
            ..check.clone()
        };
        s.clusters[0].health_check = Some(tcp.clone());
        let v4 = RuntimeConfig::build(&s, &strategies()).unwrap();
        let probe = &v4.clusters[0].health_check.as_ref().unwrap().probe;
        assert_eq!((probe, passes(probe)), (&Probe::Tcp, [false; 6]));
        let e = refused(|s| {
            s.clusters[0].health_check = Some(v1::HealthCheck {
                path: "/healthz".into(),
                ..tcp.clone()
            });
        });
        assert!(e.contains("of protocol TCP has a path"), "{e}");
        let e = refused(|s| {
            s.clusters[0].health_check = Some(v1::HealthCheck {
                protocol: 7,
                ..check.clone()
            });
        });
        assert!(e.contains("health_check protocol 7 is unknown"), "{e}");
        for (interval_ms, timeout_ms) in [(1, 1), (1000, 2000), (1000, 0)] {
            let e = refused(|s| {
                s.clusters[0].health_check = Some(v1::HealthCheck {
                    interval_ms,
                    timeout_ms,
                    ..check.clone()
                });
            });
            assert!(e.contains("health_check interval_ms"), "{e}");
        }
        let e = refused(|s| {
            s.clusters[0].health_check = Some(v1::HealthCheck {
                unhealthy_threshold: 0,
                ..check.clone()
            });
        });
        assert!(e.contains("thresholds must be 1-100"), "{e}");
    }

    /// A route's own answer goes into response heads: one with a status, code, scheme,
    /// host, path or content type the data plane could not send as given is refused; a
    /// good one needs no cluster, even one out of range.
    #[test]
    fn a_routes_own_answer_is_checked_like_the_config() {
        use v1::route::Answer as A;
        let direct = |status, body: &[u8], content_type: &str| {
            A::DirectResponse(v1::DirectResponse {
                status,
                body: body.to_vec(),
                content_type: content_type.into(),
            })
        };
        let redirect = |edit: &dyn Fn(&mut v1::Redirect)| {
            let mut r = v1::Redirect {
                scheme: "https".into(),
                code: 301,
                ..Default::default()
            };
            edit(&mut r);
            A::Redirect(r)
        };
        let mut good = minimal();
        good.routes[0].cluster_index = 7;
        good.routes[0].answer = Some(direct(200, b"ok", "text/plain"));
        let built = RuntimeConfig::build(&good, &strategies()).unwrap();
        assert_eq!(built.routes[0].clusters().count(), 0);
        assert_eq!(built.cluster_names_of(&built.routes[0]), [""]);
        good.routes[0].answer = Some(redirect(&|_| {}));
        assert!(RuntimeConfig::build(&good, &strategies()).is_ok());

        let big = vec![b'x'; omnirelay_proto::limits::MAX_DIRECT_RESPONSE_BODY + 1];
        let bad: [(A, &str); 12] = [
            (direct(205, b"x", ""), "205 has a body"),
            (direct(200, &big, ""), "is over"),
            (redirect(&|r| r.scheme = "http".into()), "changes nothing"),
            (redirect(&|r| r.host = "a:".into()), "host \"a:\""),
            (direct(99, b"", ""), "status 99"),
            (direct(204, b"x", ""), "204 has a body"),
            (direct(200, b"", "a\r\nx: y"), "content_type"),
            (redirect(&|r| r.code = 200), "code 200"),
            (redirect(&|r| r.scheme = "ftp".into()), "scheme \"ftp\""),
            (redirect(&|r| r.host = "a:80".into()), "host \"a:80\""),
            (redirect(&|r| r.port = 70_000), "port 70000"),
            (
                redirect(&|r| r.path = Some(v1::redirect::Path::PathRedirect("/a\r\n".into()))),
                "path",
            ),
        ];
        for (answer, why) in bad {
            let e = refused(|s| s.routes[0].answer = Some(answer.clone()));
            assert!(e.contains("routes[0] (r)") && e.contains(why), "{why}: {e}");
        }
    }

    /// Rewrites go into the upstream request line and head: one that would split them is
    /// refused, whatever signed it.
    #[test]
    fn a_rewrite_that_would_break_the_upstream_head_is_refused() {
        let e = refused(|s| s.routes[0].host_rewrite = "a\r\nx-injected: 1".into());
        assert!(e.contains("routes[0] (r) host_rewrite"), "{e}");
        let e = refused(|s| s.routes[0].prefix_rewrite = "/a b".into());
        assert!(e.contains("routes[0] (r) prefix_rewrite"), "{e}");
        let field = |name: &str, value: &str| v1::HeaderValue {
            name: name.into(),
            value: value.into(),
        };
        let e = refused(|s| {
            s.routes[0].request_headers = Some(v1::HeaderEdits {
                set: vec![field("x-a", "1\r\nx-injected: 1")],
                remove: vec![],
            })
        });
        assert!(e.contains("request_headers: the value of \"x-a\""), "{e}");
        let e = refused(|s| {
            s.routes[0].response_headers = Some(v1::HeaderEdits {
                set: vec![],
                remove: vec!["transfer-encoding".into()],
            })
        });
        assert!(e.contains("response_headers: \"transfer-encoding\""), "{e}");
        let e = refused(|s| {
            s.routes[0].response_headers = Some(v1::HeaderEdits {
                set: vec![field("x-a", "1"), field("X-A", "2")],
                remove: vec![],
            })
        });
        assert!(e.contains("\"x-a\" is set twice"), "{e}");
        let mut s = minimal();
        s.routes[0].prefix_rewrite = "/v2/".into();
        s.routes[0].host_rewrite = "api.internal:8080".into();
        let rt = RuntimeConfig::build(&s, &strategies()).unwrap();
        assert_eq!(rt.routes[0].prefix_rewrite.as_deref(), Some("/v2/"));
        assert_eq!(
            rt.routes[0].host_rewrite.as_deref(),
            Some("api.internal:8080")
        );
        assert_eq!(rt.routes[0].matched_len(), 1);
    }

    /// `max_requests` is counted over every holder of the cluster (the workers) and the
    /// count goes on under the cluster's name in the next snapshot; a cluster without the
    /// limit counts nothing.
    #[test]
    fn the_in_flight_count_is_shared_and_carried_to_the_next_snapshot() {
        let mut s = minimal();
        s.clusters[0].max_requests = 2;
        let first = RuntimeConfig::build(&s, &strategies()).unwrap();
        let limit = first.clusters[0].max_requests.as_ref().unwrap();
        let a = limit.enter().unwrap();
        let b = limit.enter().unwrap();
        assert!(limit.enter().is_none(), "a third request over a limit of 2");
        assert_eq!(limit.current(), 2);
        drop(a);
        // The next version: the request still in flight counts there too.
        let next = RuntimeConfig::build_after(&s, &strategies(), Some(&first)).unwrap();
        let carried = next.clusters[0].max_requests.as_ref().unwrap();
        assert_eq!(carried.current(), 1);
        let c = carried.enter().unwrap();
        assert!(carried.enter().is_none());
        drop((b, c));
        assert_eq!(carried.current(), 0);
        // A renamed cluster starts from zero; one without a limit has none.
        s.clusters[0].name = "other".into();
        let renamed = RuntimeConfig::build_after(&s, &strategies(), Some(&next)).unwrap();
        let _held = next.clusters[0]
            .max_requests
            .as_ref()
            .unwrap()
            .enter()
            .unwrap();
        assert_eq!(
            renamed.clusters[0].max_requests.as_ref().unwrap().current(),
            0
        );
        s.clusters[0].max_requests = 0;
        let unlimited = RuntimeConfig::build_after(&s, &strategies(), Some(&next)).unwrap();
        assert!(unlimited.clusters[0].max_requests.is_none());
    }

    #[test]
    fn retries_are_capped_at_the_control_planes_limit() {
        let mut s = minimal();
        s.routes[0].retry = Some(v1::RetryPolicy {
            max_retries: u32::MAX,
            ..Default::default()
        });
        let rt = RuntimeConfig::build(&s, &strategies()).unwrap();
        assert_eq!(rt.routes[0].retry.max_retries, 10);
    }

    #[test]
    fn client_timeouts_come_from_each_listener_with_defaults_for_zero() {
        let listener = |port: u16, timeouts: Option<v1::ClientTimeouts>| v1::Listener {
            name: format!("l{port}"),
            address: format!("127.0.0.1:{port}"),
            client_timeouts: timeouts,
            ..Default::default()
        };
        let s = v1::Snapshot {
            version: 1,
            listeners: vec![
                listener(
                    1,
                    Some(v1::ClientTimeouts {
                        idle_ms: 1500,
                        head_ms: 0,
                    }),
                ),
                listener(2, None),
                listener(
                    3,
                    Some(v1::ClientTimeouts {
                        idle_ms: 0,
                        head_ms: 250,
                    }),
                ),
            ],
            ..Default::default()
        };
        let rt = RuntimeConfig::build(&s, &strategies()).unwrap();
        let got: Vec<_> = rt
            .listeners
            .iter()
            .map(|l| (l.idle_timeout, l.head_timeout))
            .collect();
        assert_eq!(
            got,
            [
                (Duration::from_millis(1500), DEFAULT_CLIENT_HEAD_TIMEOUT),
                (DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_CLIENT_HEAD_TIMEOUT),
                (DEFAULT_CLIENT_IDLE_TIMEOUT, Duration::from_millis(250)),
            ]
        );
        assert_eq!(rt.min_client_idle_timeout(), Duration::from_millis(1500));
    }
}
