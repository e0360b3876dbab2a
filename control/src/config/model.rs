//! The validated config: what `omnirelay.toml` means once every check has passed.

use std::net::SocketAddr;

/// The whole config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the control daemon listens.
    pub control: ControlSection,
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Routes, in file order (match order within a listener).
    pub routes: Vec<Route>,
    /// Upstream clusters.
    pub clusters: Vec<Cluster>,
    /// Kernel rate-limit budgets.
    pub budgets: Vec<Budget>,
    /// `[kernel]`: XDP attachment, prefix lists and worker steering.
    pub kernel: KernelSection,
}

/// `[kernel]`: what the control daemon loads into the kernel and where.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSection {
    /// Interfaces the XDP limiter attaches to. Empty: the limiter is not loaded.
    pub interfaces: Vec<String>,
    /// XDP attach mode; an interface that cannot do it is an error, never a fallback.
    pub attach_mode: XdpAttach,
    /// bpffs folder of the pinned maps, links and programs.
    pub pin_dir: std::path::PathBuf,
    /// Load the `SO_REUSEPORT` steering program for the data planes on this host.
    pub steering: bool,
    /// Steering weight per worker index (missing workers weigh 1; 0 drains a worker).
    pub worker_weights: Vec<u32>,
    /// Sources that bypass every budget.
    pub allow: Vec<Prefix>,
    /// Sources always dropped (checked first).
    pub deny: Vec<Prefix>,
    /// Drop packets with truncated or impossible headers instead of passing them.
    pub drop_malformed: bool,
}

impl Default for KernelSection {
    fn default() -> Self {
        KernelSection {
            interfaces: Vec::new(),
            attach_mode: XdpAttach::Native,
            pin_dir: std::path::PathBuf::from(DEFAULT_PIN_DIR),
            steering: false,
            worker_weights: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            drop_malformed: false,
        }
    }
}

/// Where kernel objects are pinned unless `[kernel].pin_dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/omnirelay";

/// `[kernel].attach_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// In the driver (veth and most NICs support it).
    Native,
    /// On the skb, after the driver: works everywhere, slower.
    Generic,
}

/// An address prefix such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    /// Parses `addr/len` (or a bare address, a host prefix). Host bits must be zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address prefix (like 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = if l.is_empty() {
            max
        } else {
            l.parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        let bits: u128 = match addr {
            std::net::IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            std::net::IpAddr::V6(v) => u128::from(v),
        };
        // IPv4 sits in the top 32 bits here, so the host part is below `len` for both.
        let host = if len >= 128 { 0 } else { u128::MAX >> len };
        if bits & host != 0 {
            return Err(format!(
                "{s:?} has host bits set (did you mean the network address?)"
            ));
        }
        Ok(Prefix { addr, len })
    }
}

/// `[control]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlSection {
    /// gRPC control API (Watch/Get).
    pub grpc_listen: SocketAddr,
    /// Admin HTTP: /healthz, /metrics, /control/*, and the HTTP pull of snapshots.
    pub admin_listen: SocketAddr,
    /// `[control.tls]`: TLS (and optionally client certificates) on the gRPC API.
    pub tls: Option<ControlTls>,
}

/// `[control.tls]`: the gRPC control API over TLS. Paths as written in the file; the
/// daemon resolves relative ones against the config file's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlTls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// CA certificates (PEM) that data planes' client certificates must chain to. Set:
    /// a data plane without such a certificate is refused at the handshake (mutual TLS).
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for ControlSection {
    /// Loopback: gRPC on 7800, admin on 7801.
    fn default() -> Self {
        ControlSection {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7801)),
            tls: None,
        }
    }
}

/// `[[listeners]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Bound by every worker with SO_REUSEPORT.
    pub address: SocketAddr,
    /// Route names served, in match order (default: every route, in file order).
    pub routes: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// Client connection timeouts.
    pub timeouts: ClientTimeouts,
    /// Keep a client's `x-request-id` (default), or replace it with a generated one.
    pub preserve_request_id: bool,
    /// Make runs of slashes in request paths one before routing and forwarding.
    pub merge_slashes: bool,
}

/// `[listeners.timeouts]`, in milliseconds; 0 means the data plane's default (idle 60 s,
/// head 30 s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_ms: u32,
    /// A request head not complete this long after its first byte gets 408 and a close.
    pub head_ms: u32,
}

/// `[listeners.limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum request head size (431 beyond).
    pub max_header_bytes: u32,
    /// Maximum header count (431 beyond).
    pub max_headers: u32,
    /// Maximum request body (413 beyond).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 1 << 30,
        }
    }
}

/// How a route matches the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Path starts with this.
    Prefix(String),
    /// Path equals this (query excluded).
    Exact(String),
}

/// How a route matches one header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lowercase name.
    pub name: String,
    /// The condition.
    pub condition: HeaderCondition,
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCondition {
    /// Value equals.
    Exact(String),
    /// Value starts with.
    Prefix(String),
    /// Header is present (any value).
    Present,
}

/// What hash-based balancing hashes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value.
    Header(String),
    /// The client's IP address.
    ClientIp,
}

/// `[[routes]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Hosts (lowercase; `*.` prefix for subdomains); empty matches any.
    pub hosts: Vec<String>,
    /// Path condition.
    pub path: PathMatch,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatch>,
    /// Target cluster name; empty on a route that splits its requests
    /// (`weighted_clusters`) or answers them itself (`answer`).
    pub cluster: String,
    /// Clusters sharing the route's requests by weight (Envoy's `weighted_clusters`).
    pub weighted_clusters: Vec<WeightedCluster>,
    /// The split follows the hash of `hash_on` instead of a random draw (Envoy's
    /// `use_hash_policy`).
    pub split_by_hash: bool,
    /// What the route answers itself with instead of going to a cluster.
    pub answer: Option<Answer>,
    /// Overrides of the cluster's timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retry: Retry,
    /// Hash key for ring-hash and rendezvous clusters.
    pub hash_on: HashOn,
    /// What the request is changed into on its way upstream.
    pub rewrite: Rewrite,
    /// Fields set and removed on the request sent upstream.
    pub request_headers: HeaderEdits,
    /// Fields set and removed on the response sent to the client.
    pub response_headers: HeaderEdits,
    /// Requests per second the route takes from all clients together, per data plane.
    pub rate_limit: Option<RouteRateLimit>,
}

/// `rate_limit = { requests_per_second, burst }` of a route (Envoy's local rate limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRateLimit {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Requests that may come at once above the rate.
    pub burst: u32,
}

/// One cluster of a route's `weighted_clusters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedCluster {
    /// The cluster's name.
    pub name: String,
    /// Its share of the route's requests, out of the sum of the weights.
    pub weight: u32,
}

/// A route's own answer (Envoy's `direct_response` and `redirect` route actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `direct_response`: a fixed response.
    Direct(DirectResponse),
    /// `redirect`: a response sending the client elsewhere.
    Redirect(Redirect),
}

/// `direct_response = { status, body, content_type }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// 200-599.
    pub status: u16,
    /// The body (none for 204 and 304).
    pub body: String,
    /// The `content-type` field; empty: none.
    pub content_type: String,
}

/// `redirect = { scheme, host, port, path | prefix, code, strip_query }`: each part set
/// replaces the request's in the `location`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// A host name or address, without a port.
    pub host: Option<String>,
    /// 1-65535.
    pub port: Option<u16>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the part of the path the route matched.
    pub prefix: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
    /// Drops the request's query.
    pub strip_query: bool,
}

/// `request_headers` / `response_headers` of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Fields set (lowercase name, value), each replacing the message's fields of its name.
    pub set: Vec<(String, String)>,
    /// Fields removed (lowercase names).
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `[routes.rewrite]`: the request as the upstream gets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Replaces the part of the path the route matched (Envoy's `prefix_rewrite`).
    pub prefix: Option<String>,
    /// Replaces the Host field (Envoy's `host_rewrite_literal`).
    pub host: Option<String>,
}

/// Timeouts in milliseconds; 0 means inherit / default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to an upstream.
    pub connect_ms: u32,
    /// Whole request, first byte in to last byte out.
    pub request_ms: u32,
    /// Idle keep-alive connection.
    pub idle_ms: u32,
}

/// Retry policy of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Retry budget: percent of requests.
    pub budget_percent: u32,
    /// Retry budget: floor per second.
    pub min_retries_per_second: u32,
    /// Backoff base.
    pub base_backoff_ms: u32,
    /// Backoff cap.
    pub max_backoff_ms: u32,
    /// Retry when the connection to the upstream fails.
    pub on_connect_failure: bool,
    /// Retry on a 5xx response.
    pub on_5xx: bool,
    /// Retry on a 502, 503 or 504 response.
    pub on_gateway_error: bool,
    /// Retry on these statuses (`retriable-status-codes` with `statuses`).
    pub statuses: Vec<u16>,
    /// Retry on an upstream timeout (needs `per_try_timeout_ms`).
    pub on_timeout: bool,
    /// How long one attempt waits for the response head once the request is sent; 0:
    /// until the request's deadline.
    pub per_try_timeout_ms: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_retries: 1,
            budget_percent: 20,
            min_retries_per_second: 3,
            base_backoff_ms: 25,
            max_backoff_ms: 250,
            on_connect_failure: true,
            on_5xx: false,
            on_gateway_error: false,
            statuses: Vec::new(),
            on_timeout: false,
            per_try_timeout_ms: 0,
        }
    }
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Consistent hashing ring.
    RingHash,
    /// Highest random weight.
    Rendezvous,
}

impl LbPolicy {
    /// Config spelling.
    pub const NAMES: [&'static str; 4] =
        ["round_robin", "least_request", "ring_hash", "rendezvous"];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(LbPolicy::RoundRobin),
            "least_request" => Some(LbPolicy::LeastRequest),
            "ring_hash" => Some(LbPolicy::RingHash),
            "rendezvous" => Some(LbPolicy::Rendezvous),
            _ => None,
        }
    }
}

/// An upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address.
    pub address: SocketAddr,
    /// Relative weight, 1..=10000.
    pub weight: u32,
}

/// Passive outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive failures before ejection.
    pub consecutive_failures: u32,
    /// First ejection time; multiplied by the number of ejections.
    pub base_ejection_ms: u32,
    /// Ejection time cap.
    pub max_ejection_ms: u32,
    /// At most this percent of endpoints ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
        }
    }
}

/// `[[clusters]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Balancing policy.
    pub lb: LbPolicy,
    /// Endpoints (at least one).
    pub endpoints: Vec<Endpoint>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Outlier detection.
    pub outlier: Outlier,
    /// Idle connections kept per endpoint and worker.
    pub max_idle_per_endpoint: u32,
    /// Requests in flight to the cluster at once per data plane (0: no limit).
    pub max_requests: u32,
    /// Active health checking of each endpoint.
    pub health_check: Option<HealthCheck>,
}

/// `health_check`: an HTTP GET to (or a TCP connection with) each endpoint every
/// `interval_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// How each endpoint is checked.
    pub protocol: HealthCheckProtocol,
    /// The request target (path and query); HTTP only.
    pub path: String,
    /// The Host field; empty: the cluster's name. HTTP only.
    pub host: String,
    /// The statuses that pass an HTTP check, inclusive ranges; empty: 200-299.
    pub expected_statuses: Vec<(u16, u16)>,
    /// Between checks of one endpoint.
    pub interval_ms: u32,
    /// For one check, connect to response head.
    pub timeout_ms: u32,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    pub healthy_threshold: u32,
}

/// `health_check.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthCheckProtocol {
    /// An HTTP/1.1 GET whose response status decides.
    #[default]
    Http,
    /// A connection alone (Envoy's TCP health check with nothing sent).
    Tcp,
}

/// `[[budgets]]`: a kernel rate-limit budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Unique name.
    pub name: String,
    /// Listener it protects.
    pub listener: String,
    /// Sustained rate per source address.
    pub rate_per_second: u64,
    /// Burst per source address.
    pub burst: u64,
    /// Charge new flows only, or every packet.
    pub new_flows_only: bool,
    /// Per-source-prefix budgets that replace this one for matching sources.
    pub overrides: Vec<BudgetOverride>,
}

/// `[[budgets]].overrides[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetOverride {
    /// Sources it applies to (longest prefix wins).
    pub prefix: Prefix,
    /// Sustained rate per source address.
    pub rate_per_second: u64,
    /// Burst per source address (0: the rate).
    pub burst: u64,
}
