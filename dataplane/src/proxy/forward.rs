//! One request through the proxy: route, pick an endpoint, send the head and stream the
//! body upstream, read the response head, stream the response back. Retries (connect
//! failures before the body was read, the statuses the route names and timeouts for
//! idempotent requests whose body, if any, was kept whole) within the route's retry
//! budget; outcomes feed outlier detection.

use std::{
    borrow::Cow,
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant, SystemTime},
};

use bytes::BytesMut;
use monoio::net::TcpStream;

use super::{
    answer,
    body::{self, BodyError},
    deadline::{self, Timer, within},
    downstream::{self, Downstream},
    duplex, io,
    worker::{PooledBuf, WorkerCtx},
};
use crate::{
    http1::{self, Framing, LocalReply, ParseStatus, RequestHead, ResponseHead},
    lb::{EndpointId, FailureKind, Outcome, hash_ip, hash_key},
    router::{self, RequestView},
    snapshot::{
        Answer, ClusterRt, Dispatch, HashKey, HeaderEdits, RetryRt, RouteRt, RuntimeConfig,
    },
    telemetry::{AccessRecord, ClusterStats},
};

/// A request as the router and the hash policies see it: its path as normalized, and its
/// `x-request-id` as it goes upstream (a client's kept, or the one generated).
struct View<'a> {
    head: &'a RequestHead,
    path: &'a str,
    request_id: &'a [u8],
}

impl RequestView for View<'_> {
    fn host(&self) -> Option<&[u8]> {
        self.head.host()
    }
    fn path(&self) -> &[u8] {
        self.path.as_bytes()
    }
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let id = name
            .eq_ignore_ascii_case("x-request-id")
            .then_some(self.request_id);
        let fields = id.is_none().then(|| self.head.headers().get_all(name));
        id.into_iter().chain(fields.into_iter().flatten())
    }
}

/// What the client was told, for logs and metrics.
struct Summary {
    status: u16,
    endpoint: Option<SocketAddr>,
    upstream_time: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
    attempts: u32,
    keep_alive: bool,
    /// When the response was sent, where it was read already.
    finished: Option<Instant>,
    /// The response went out before the request body was read whole: the client may
    /// still be sending it.
    body_unread: bool,
}

impl Summary {
    fn local(status: u16) -> Self {
        Summary {
            status,
            endpoint: None,
            upstream_time: None,
            bytes_in: 0,
            bytes_out: 0,
            attempts: 0,
            keep_alive: false,
            finished: None,
            body_unread: false,
        }
    }
}

/// Where a request is served: the worker, the snapshot it is served on, and the listener
/// it came in on.
pub(crate) struct Scope<'a> {
    pub ctx: &'a Rc<WorkerCtx>,
    pub cfg: &'a Arc<RuntimeConfig>,
    /// Index of the listener in `cfg`.
    pub listener: usize,
    /// The listener's head and body limits.
    pub limits: &'a http1::Limits,
}

/// What the stages of one request share: its scope and what is fixed once its head is
/// parsed.
struct Request<'a> {
    scope: &'a Scope<'a>,
    head: &'a RequestHead,
    /// The request's `x-request-id` (the client's, or generated).
    request_id: &'a [u8],
    /// The path with its dot segments removed, when it had any: routed by, and sent
    /// upstream instead of the client's.
    normalized: Option<&'a str>,
    /// The route's fields set and removed on the response.
    response_headers: Option<&'a HeaderEdits>,
    /// When the head was parsed.
    started: Instant,
    /// The request's hash by the route's `hash_on`, when a split by hash took it.
    hash: Option<u64>,
}

/// One upstream attempt: where it goes and when it must be done.
struct Target<'a> {
    cluster: &'a ClusterRt,
    addr: SocketAddr,
    stats: &'a Option<Arc<ClusterStats>>,
    /// The attempt's start: upstream time is measured from here.
    t0: Instant,
    /// The request's deadline.
    deadline: Instant,
    /// How long the attempt waits for the response head once the request is sent.
    per_try: Option<Duration>,
    /// The route's retry policy: which statuses may be retried.
    retry: &'a RetryRt,
    /// Whether another attempt may follow this one (an idempotent request with attempts
    /// left): only then is a response the policy retries held back.
    may_retry: bool,
}

fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Handles one request; when the client connection may serve another, returns when the
/// response went out.
pub(crate) async fn handle(
    scope: &Scope<'_>,
    ds: &mut Downstream,
    head: RequestHead,
    started: Instant,
    timer: &mut Timer<'_>,
) -> Option<Instant> {
    let &Scope {
        ctx,
        cfg,
        listener,
        limits,
    } = scope;
    // Wall-clock time is only for the access log; the hot path skips it when logging is off.
    let wall = ctx.access_log.enabled().then(SystemTime::now);
    let mut made = [0u8; 32];
    // The client's id, unless the listener does not trust clients to name requests.
    let given = (!cfg.listeners[listener].replace_request_id)
        .then(|| head.headers().get("x-request-id"))
        .flatten();
    let request_id: &[u8] = match given {
        Some(v) if !v.is_empty() && v.len() <= 128 => v,
        _ => {
            let id = (u128::from(ctx.random()) << 64) | u128::from(ctx.random());
            // 16 bytes into 32 hex digits: the lengths match, so this cannot fail.
            let _ = hex::encode_to_slice(id.to_be_bytes(), &mut made);
            &made
        }
    };
    // Routed by the path as the upstream will resolve it: `/public/../admin` is `/admin`.
    let normalized = http1::normalize_path(head.path(), cfg.listeners[listener].merge_slashes);
    let view = View {
        head: &head,
        path: normalized.as_deref().unwrap_or(head.path()),
        request_id,
    };
    // A dot segment behind an escaped slash or a path parameter: the upstream may resolve
    // it where the router cannot see it, so no route is chosen for it.
    let ambiguous = http1::ambiguous_path(head.path());
    let route_idx = (!ambiguous)
        .then(|| {
            router::select(
                &cfg.routes,
                &cfg.listeners[listener].routes,
                |r| &r.matcher,
                &view,
            )
        })
        .flatten();
    // The cluster it went to (a split's drawn once, for every attempt), if it went on.
    let mut upstream = None;
    // Its hash, if a split by hash took it (the balancer's picks use it again).
    let mut hash = None;
    let summary = match route_idx {
        None if ambiguous => {
            ctx.stats.bad_requests.fetch_add(1, Relaxed);
            let why = "ambiguous path: a dot segment behind an escaped slash or a path parameter";
            refuse(scope, ds, 400, why, &head, timer).await
        }
        None => {
            ctx.stats.unrouted.fetch_add(1, Relaxed);
            let why = "no route matches this request";
            refuse(scope, ds, 404, why, &head, timer).await
        }
        Some(idx) => match head.framing(limits) {
            Err(e) => {
                ctx.stats.bad_requests.fetch_add(1, Relaxed);
                refuse(scope, ds, e.status(), e.reason(), &head, timer).await
            }
            Ok(_) if !admitted(&cfg.routes[idx], started) => {
                let why = "rate limited: the route's requests per second are taken";
                refuse(scope, ds, 429, why, &head, timer).await
            }
            Ok(framing) => match cfg.routes[idx].dispatch(
                || ctx.random(),
                || *hash.insert(request_hash(&cfg.routes[idx], &view, ds.peer)),
            ) {
                Dispatch::Upstream { choice, cluster } => {
                    upstream = Some((choice, cluster));
                    let req = Request {
                        hash,
                        scope,
                        head: &head,
                        request_id,
                        normalized: normalized.as_deref(),
                        response_headers: cfg.routes[idx].response_headers.as_ref(),
                        started,
                    };
                    proxy(&req, idx, cluster, framing, ds, timer).await
                }
                Dispatch::Answer(answer) => {
                    let own = Own {
                        route: &cfg.routes[idx],
                        answer,
                        path: view.path,
                        left: Left::of(&head, framing),
                    };
                    answer_itself(scope, ds, &head, &own, timer).await
                }
            },
        },
    };
    let finished = summary.finished.unwrap_or_else(Instant::now);
    let duration = finished.saturating_duration_since(started);
    if let Some(i) = route_idx {
        // Synced first: a request refused before reaching an upstream (a bad body framing)
        // may be the first of this version on this worker.
        let mut b = ctx.balancers.borrow_mut();
        b.sync(cfg, &ctx.stats, finished);
        if let Some(stats) = b.route_stats_for(cfg, i, upstream) {
            stats.record(summary.status, duration);
        }
    }
    if let Some(start) = wall {
        let (route, cluster): (Arc<str>, Arc<str>) = match route_idx {
            Some(i) => {
                let cluster = match upstream {
                    Some((_, c)) => Arc::clone(&cfg.clusters[c].name),
                    None => "".into(),
                };
                (Arc::clone(&cfg.routes[i].name), cluster)
            }
            None => ("".into(), "".into()),
        };
        ctx.access_log.log(AccessRecord {
            start,
            listener: Arc::clone(&cfg.listeners[listener].name),
            route,
            cluster,
            endpoint: summary.endpoint,
            client: ds.peer,
            method: head.method().to_owned(),
            path: head.path().to_owned(),
            status: summary.status,
            bytes_in: summary.bytes_in,
            bytes_out: summary.bytes_out,
            duration,
            upstream_time: summary.upstream_time,
            attempts: summary.attempts,
            request_id: String::from_utf8_lossy(request_id).into_owned(),
        });
    }
    if summary.body_unread && !summary.keep_alive {
        downstream::linger(ctx, ds, timer).await;
    }
    (summary.keep_alive && head.keep_alive()).then_some(finished)
}

/// Answers `status` with `reason` for a request that never went upstream (its body, if
/// any, unread).
async fn refuse(
    scope: &Scope<'_>,
    ds: &mut Downstream,
    status: u16,
    reason: &str,
    head: &RequestHead,
    timer: &mut Timer<'_>,
) -> Summary {
    let left = head
        .framing(scope.limits)
        .map_or(Left::Unread, |f| Left::of(head, f));
    local_error(scope.ctx, ds, status, reason, head, left, timer).await
}

/// Whether route `route`'s rate limit, if it has one, admits a request at `now`.
fn admitted(route: &RouteRt, now: Instant) -> bool {
    route.rate_limit.as_ref().is_none_or(|l| l.admit(now))
}

/// What is left of a request's body when the proxy answers it itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    /// Nothing: it had none, or it was read whole.
    Nothing,
    /// A body so framed, none of it read, to read and drop after the answer (when it
    /// takes at most [`downstream::DISCARD_MAX`] bytes), so the connection can carry the
    /// next request (as nginx does).
    Discardable(Framing),
    /// A body not read whole: the connection closes after the answer.
    Unread,
}

impl Left {
    /// What is left of `head`'s body framed as `framing`, none of it read yet. Not
    /// discardable: a Content-Length larger than [`downstream::DISCARD_MAX`], or a body
    /// the client waits for a `100 Continue` to send (it may never come). A chunked body
    /// is, until it turns out larger.
    fn of(head: &RequestHead, framing: Framing) -> Left {
        match framing {
            f if !f.has_body() => Left::Nothing,
            _ if head.expects_continue() => Left::Unread,
            Framing::ContentLength(n) if n <= downstream::DISCARD_MAX => Left::Discardable(framing),
            Framing::Chunked => Left::Discardable(framing),
            _ => Left::Unread,
        }
    }

    /// What is left of the body of `head` (framed as `framing`) after an upstream attempt:
    /// nothing unless `unread`; all of it, maybe discardable, when none of it was read
    /// (`body`); else the rest, unread.
    fn after(body: &body::RequestBody, unread: bool, head: &RequestHead, framing: Framing) -> Left {
        match (unread, body.started()) {
            (false, _) => Left::Nothing,
            (true, false) => Left::of(head, framing),
            (true, true) => Left::Unread,
        }
    }
}

/// Answers `head` with the proxy's own error `status` and `reason`, keeping the client
/// connection when it may carry on (see [`local_reply`]) with what is `left` of the body
/// dropped. The connection is kept only after statuses that say nothing against it: a
/// route not found (404), a route's rate limit (429) or an upstream that failed (502,
/// 503, 504). After any other (a 400, 408 or 413 about the request itself) it closes, as
/// nginx's do.
async fn local_error(
    ctx: &WorkerCtx,
    ds: &mut Downstream,
    status: u16,
    reason: &str,
    head: &RequestHead,
    left: Left,
    timer: &mut Timer<'_>,
) -> Summary {
    let keeps = matches!(status, 404 | 429 | 502 | 503 | 504);
    let to = local_reply(head, ctx, keeps && left != Left::Unread);
    let sent = ds.send_local(status, reason, to, timer).await;
    settle(ds, status, sent && to.keep_alive, left, timer).await
}

/// The summary of the proxy's own answer with `status`, after which the connection was
/// to be `kept`: a discardable body is read and dropped first (not all of it in time:
/// the connection closes after all). The request ends when the answer went out.
async fn settle(
    ds: &mut Downstream,
    status: u16,
    kept: bool,
    left: Left,
    timer: &mut Timer<'_>,
) -> Summary {
    let answered = Instant::now();
    let (keep_alive, body_unread) = match left {
        Left::Nothing => (kept, false),
        Left::Discardable(framing) if kept => {
            let dropped = downstream::discard_body(ds, framing, timer).await;
            (dropped, !dropped)
        }
        Left::Discardable(_) | Left::Unread => (false, true),
    };
    Summary {
        keep_alive,
        body_unread,
        finished: Some(answered),
        ..Summary::local(status)
    }
}

/// How a response of the proxy's own answers `head`: the connection stays open, as for a
/// relayed response, when the client keeps it and no drain is announced, and when
/// `may_keep` (the request was read whole and the response says nothing against it).
fn local_reply(head: &RequestHead, ctx: &WorkerCtx, may_keep: bool) -> LocalReply {
    let reply = body::Reply::to(head, ctx, None);
    LocalReply {
        version: reply.version,
        keep_alive: reply.keep_alive && may_keep,
        head_request: reply.head_request,
    }
}

/// A route that answers a request itself.
struct Own<'a> {
    route: &'a RouteRt,
    answer: &'a Answer,
    /// The request's path as routed.
    path: &'a str,
    /// What is left of the request's body (none of it is read).
    left: Left,
}

/// Answers `head` with a route's own answer `own`: its fixed response, or a redirect made
/// from the request's authority, path and query. The route's response fields are applied.
async fn answer_itself(
    scope: &Scope<'_>,
    ds: &mut Downstream,
    head: &RequestHead,
    own: &Own<'_>,
    timer: &mut Timer<'_>,
) -> Summary {
    let location;
    let (status, body, ours) = match own.answer {
        Answer::Direct(d) => {
            let typed = d
                .content_type
                .as_deref()
                .map(|t| ("content-type", t.as_bytes()));
            (d.status, &*d.body, typed)
        }
        Answer::Redirect(r) => {
            let authority = match head.host().and_then(|h| std::str::from_utf8(h).ok()) {
                Some(h) if !h.is_empty() => Cow::Borrowed(h),
                _ => Cow::Owned(reached_authority(
                    ds,
                    scope.cfg.listeners[scope.listener].address,
                )),
            };
            let query = head.query();
            location = answer::location(r, &authority, own.path, own.route.matched_len(), query);
            (r.code, &b""[..], Some(("location", location.as_bytes())))
        }
    };
    let fields = answer::fields(ours, own.route.response_headers.as_ref());
    let to = local_reply(head, scope.ctx, own.left != Left::Unread);
    let sent = ds.send_own(status, &fields, body, to, timer).await;
    Summary {
        bytes_out: if to.head_request {
            0
        } else {
            body.len() as u64
        },
        ..settle(ds, status, sent && to.keep_alive, own.left, timer).await
    }
}

/// The authority a client without a Host field reached: the connection's local address,
/// which for a wildcard listener is not its `configured` address (RFC 9112 §3.3).
fn reached_authority(ds: &Downstream, configured: SocketAddr) -> String {
    match ds.stream.local_addr() {
        // An IPv4 client of a dual-stack listener as IPv4, and no IPv6 scope (not part of
        // a uri-host).
        Ok(local) if configured.ip().is_unspecified() => {
            SocketAddr::new(local.ip().to_canonical(), local.port()).to_string()
        }
        _ => configured.to_string(),
    }
}

/// Why an attempt failed.
enum AttemptError {
    Connect(std::io::Error),
    ConnectTimeout,
    /// The upstream closed or reset before a complete response head.
    UpstreamClosed {
        /// The connection came from the pool (the upstream may have closed it idle).
        reused: bool,
    },
    /// The upstream did not take the request or answer it with a head in time.
    Timeout,
    BadResponse(http1::Http1Error),
    /// The client side failed (bad body, closed): the request is over.
    Client(BodyError),
}

/// Proxies a routed request (route `route_idx` of the snapshot) whose body is framed as
/// `framing`: picks endpoints, retries within the budget, and answers the client.
async fn proxy(
    req: &Request<'_>,
    route_idx: usize,
    cluster_idx: usize,
    framing: Framing,
    ds: &mut Downstream,
    timer: &mut Timer<'_>,
) -> Summary {
    let &Request {
        scope:
            &Scope {
                ctx,
                cfg,
                listener,
                limits,
            },
        head,
        request_id,
        normalized,
        response_headers,
        started,
        hash,
    } = req;
    let route = &cfg.routes[route_idx];
    let cluster = &cfg.clusters[cluster_idx];
    // The head was parsed a moment ago: its time serves the balancer bookkeeping and the
    // first pick (each clock read costs about as much as a few hundred instructions).
    let now = started;
    let cluster_stats = {
        let mut b = ctx.balancers.borrow_mut();
        b.sync(cfg, &ctx.stats, now);
        if let Some(budget) = b.budget_for(cfg, route_idx) {
            budget.record_request(now);
        }
        b.cluster_stats_for(cfg, cluster_idx)
    };
    let view = View {
        head,
        path: normalized.unwrap_or(head.path()),
        request_id,
    };
    let key = hash.unwrap_or_else(|| request_hash(route, &view, ds.peer));
    // The path as the upstream gets it: on a route that rewrites it, the routed path with
    // its matched prefix replaced. A rewrite that makes a dot segment (`/pub../x` on a
    // route on `/pub` rewritten to `/in/` is `/in/../x`) is refused: the upstream would
    // resolve it past the rewrite.
    let rewritten = match &route.prefix_rewrite {
        None => None,
        Some(with) => {
            let path = normalized.unwrap_or(head.path());
            let path = http1::replace_prefix(path, route.matched_len(), with);
            if http1::normalize_path(&path, false).is_some() || http1::ambiguous_path(&path) {
                ctx.stats.bad_requests.fetch_add(1, Relaxed);
                let why = "ambiguous path: the rewritten path has a dot segment";
                return refuse(req.scope, ds, 400, why, head, timer).await;
            }
            Some(path)
        }
    };
    // The cluster's circuit breaker: a place among its `max_requests`, held to the end.
    let _in_flight = match &cluster.max_requests {
        None => None,
        Some(limit) => match limit.enter() {
            Some(place) => Some(place),
            None => {
                if let Some(s) = &cluster_stats {
                    s.overflows.add(1);
                }
                let why = "upstream overloaded: the cluster's max_requests are in flight";
                return refuse(req.scope, ds, 503, why, head, timer).await;
            }
        },
    };
    let deadline = started + route.request_timeout;
    let idempotent = idempotent(head.method());
    let max_attempts = 1 + route.retry.max_retries;
    let mut tried: Vec<EndpointId> = Vec::new();
    let mut attempts = 0u32;

    // The upstream head, with the fields this hop adds, built once per request. The added
    // values are written into the worker's scratch buffer (nothing awaits while it is
    // borrowed) and the head into a pooled buffer that goes back when the request ends:
    // no allocation either way.
    let mut up_head = PooledBuf::new(ctx);
    {
        let mut scratch = ctx.scratch.borrow_mut();
        scratch.clear();
        let fields = head.headers();
        http1::x_forwarded_for_into(fields.get_all("x-forwarded-for"), ds.peer, &mut scratch);
        let xff = scratch.len();
        let host = head.host();
        http1::forwarded_into(
            fields.get_all("forwarded"),
            ds.peer,
            "http",
            host,
            &mut scratch,
        );
        let fwd = scratch.len();
        http1::via_into(fields.get_all("via"), head.version(), &mut scratch);
        // HTTP/1.0 clients may omit Host; the upstream gets HTTP/1.1, which requires one:
        // the authority the client reached, the connection's local address (RFC 9112
        // §3.3), which for a wildcard listener is not its configured address.
        // An absolute-form target's authority replaces the client's Host field (the
        // target goes upstream in origin-form).
        // A route's host rewrite replaces either.
        let listener_host: Cow<'_, str> = if let Some(rewrite) = &route.host_rewrite {
            Cow::Borrowed(rewrite)
        } else if let Some(authority) = head.authority() {
            Cow::Borrowed(authority)
        } else if host.is_none() {
            Cow::Owned(reached_authority(ds, cfg.listeners[listener].address))
        } else {
            Cow::Borrowed("")
        };
        let extras: [(&str, &[u8]); 6] = [
            ("x-forwarded-for", &scratch[..xff]),
            ("forwarded", &scratch[xff..fwd]),
            ("via", &scratch[fwd..]),
            ("x-forwarded-proto", b"http"),
            ("x-request-id", request_id),
            ("host", listener_host.as_bytes()),
        ];
        let extras = if listener_host.is_empty() {
            &extras[..5]
        } else {
            &extras[..]
        };
        let target = rewritten
            .as_deref()
            .or(normalized)
            .map(|path| match head.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            });
        // A route's own fields: one list with the proxy's (built only for such routes).
        let (with_route, remove) = match &route.request_headers {
            Some(e) => (Some(e.with_set(extras)), &e.remove[..]),
            None => (None, &[][..]),
        };
        let extras = with_route.as_deref().unwrap_or(extras);
        http1::write_request_head(
            head,
            target.as_deref(),
            framing,
            extras,
            remove,
            &mut up_head,
        );
    }

    // A body that fits is kept while retries may send it again.
    let keep = idempotent && route.retry.max_retries > 0;
    let mut body_state = body::RequestBody::new(framing, limits, head.expects_continue(), keep);
    loop {
        attempts += 1;
        let now = if attempts == 1 {
            started
        } else {
            Instant::now()
        };
        let picked = {
            let mut b = ctx.balancers.borrow_mut();
            // A request of an older snapshot whose cluster now balances other endpoints
            // picks from state kept for that version, leaving the current state alone.
            b.lb_or_detached(cfg, cluster_idx).and_then(|lb| {
                let mut rng = || ctx.random();
                lb.pick_excluding(&cluster.lb, Some(key), now, &mut rng, &tried)
                    .or_else(|| lb.pick(&cluster.lb, Some(key), now, &mut rng))
            })
        };
        let Some((id, addr)) = picked.and_then(|id| Some((id, cluster.lb.addr(id)?))) else {
            let why = "no healthy upstream endpoint";
            let left = Left::after(&body_state, body_state.unread(), head, framing);
            return local_error(ctx, ds, 503, why, head, left, timer).await;
        };
        tried.push(id);
        if let Some(s) = &cluster_stats {
            s.attempts.add(1);
            if attempts > 1 {
                s.retries.add(1);
            }
        }
        let in_flight = {
            let mut b = ctx.balancers.borrow_mut();
            b.lb_or_detached(cfg, cluster_idx)
                .map(|lb| lb.start_request(id))
        };
        let target = Target {
            cluster,
            addr,
            stats: &cluster_stats,
            t0: now,
            deadline,
            per_try: route.retry.per_try_timeout,
            retry: &route.retry,
            may_retry: idempotent && attempts < max_attempts,
        };
        let result = attempt(req, &target, &mut up_head, &mut body_state, ds, timer).await;
        drop(in_flight);
        let done = match &result {
            Ok(r) => r.finished,
            Err(_) => Instant::now(),
        };
        let outcome = match &result {
            Ok(r) if r.status >= 500 && r.status != 501 => Outcome::Failure(FailureKind::Status5xx),
            Ok(_) => Outcome::Success,
            Err(AttemptError::Connect(_) | AttemptError::ConnectTimeout) => {
                Outcome::Failure(FailureKind::ConnectFailure)
            }
            Err(AttemptError::Timeout) => Outcome::Failure(FailureKind::Timeout),
            Err(AttemptError::UpstreamClosed { .. } | AttemptError::BadResponse(_)) => {
                Outcome::Failure(FailureKind::ConnectFailure)
            }
            Err(AttemptError::Client(_)) => Outcome::Success,
        };
        {
            let mut b = ctx.balancers.borrow_mut();
            if let Some(lb) = b.lb_or_detached(cfg, cluster_idx)
                && lb.report(id, outcome, done)
                && let Some(s) = &cluster_stats
            {
                s.ejections.add(1);
                tracing::warn!(cluster = %cluster.name, endpoint = %addr, "endpoint ejected by outlier detection");
            }
        }
        // Decide whether to retry: within the deadline after the backoff too.
        let replayable = idempotent && body_state.replayable();
        let wanted = attempts < max_attempts
            && done < deadline
            && match &result {
                Err(AttemptError::Connect(_) | AttemptError::ConnectTimeout) => {
                    route.retry.on_connect_failure && (!body_state.started() || replayable)
                }
                Err(AttemptError::UpstreamClosed { reused }) => {
                    // A stale pooled connection: safe to replay if nothing unrepeatable
                    // went out (a body counts as repeatable when kept whole).
                    (*reused || route.retry.on_connect_failure) && replayable
                }
                Err(AttemptError::Timeout) => route.retry.on_timeout && replayable,
                Ok(r) => r.held && route.retry.retries(r.status) && replayable,
                _ => false,
            };
        let delay = match wanted {
            true => crate::lb::backoff(
                attempts - 1,
                route.retry.base_backoff,
                route.retry.max_backoff,
                &mut || ctx.random(),
            ),
            false => Duration::ZERO,
        };
        if wanted && done + delay < deadline {
            let granted = {
                let mut b = ctx.balancers.borrow_mut();
                b.budget_for(cfg, route_idx)
                    .is_some_and(|bud| bud.try_acquire_retry(done))
            };
            if granted {
                // The held-back response is dropped for the retry: its read buffer goes back
                // to the pool (the head that points into it first), its connection closes.
                if let Ok(AttemptResult {
                    pending:
                        Some(Pending {
                            head: resp,
                            up,
                            buf,
                            ..
                        }),
                    ..
                }) = result
                {
                    drop((resp, up));
                    ctx.give_buf(buf);
                }
                if !delay.is_zero() {
                    deadline::sleep_until(timer, Instant::now() + delay).await;
                }
                continue;
            }
        }
        return match result {
            Ok(mut r) => {
                if r.held {
                    // A held-back response whose retry was not allowed: forward it now; its
                    // connection goes back to the pool as any other's would.
                    let reply = reply_for(head, ctx, &body_state, response_headers);
                    let reusable;
                    (r, reusable) = forward_pending(ctx, ds, r, reply, deadline, timer).await;
                    if let Some(up) = reusable.filter(|_| !body_state.unread()) {
                        ctx.pool.borrow_mut().put(
                            addr,
                            up,
                            cluster.max_idle_per_endpoint,
                            r.finished,
                        );
                    }
                }
                Summary {
                    status: r.status,
                    endpoint: Some(addr),
                    upstream_time: Some(r.upstream_time),
                    bytes_in: body_state.bytes(),
                    bytes_out: r.bytes_out,
                    attempts,
                    keep_alive: r.client_keep_alive,
                    finished: Some(r.finished),
                    body_unread: body_state.unread(),
                }
            }
            Err(e) => {
                let (status, reason) = match &e {
                    AttemptError::Connect(_) | AttemptError::ConnectTimeout => {
                        (503, "upstream connect failed")
                    }
                    AttemptError::UpstreamClosed { .. } => (502, "upstream closed the connection"),
                    AttemptError::Timeout => (504, "upstream timed out"),
                    AttemptError::BadResponse(_) => (502, "invalid response from upstream"),
                    AttemptError::Client(BodyError::Http(e)) => (e.status(), e.reason()),
                    AttemptError::Client(BodyError::Io) => return Summary::local(0),
                    AttemptError::Client(BodyError::Timeout) => {
                        (408, "request body not received in time")
                    }
                };
                match &e {
                    AttemptError::Connect(err) => {
                        tracing::debug!(endpoint = %addr, "connect failed: {err}")
                    }
                    AttemptError::BadResponse(err) => {
                        tracing::debug!(endpoint = %addr, "invalid upstream response: {err}")
                    }
                    _ => {}
                }
                if matches!(e, AttemptError::Client(BodyError::Http(_))) {
                    ctx.stats.bad_requests.fetch_add(1, Relaxed);
                }
                // A client that failed mid-body is gone or silent: nothing to wait for.
                let unread = matches!(e, AttemptError::Client(BodyError::Http(_)))
                    || !matches!(e, AttemptError::Client(_)) && body_state.unread();
                Summary {
                    endpoint: Some(addr),
                    attempts,
                    bytes_in: body_state.bytes(),
                    ..local_error(
                        ctx,
                        ds,
                        status,
                        reason,
                        head,
                        Left::after(&body_state, unread, head, framing),
                        timer,
                    )
                    .await
                }
            }
        };
    }
}

/// A finished (or, for `held`, held back) upstream response.
struct AttemptResult {
    status: u16,
    upstream_time: Duration,
    bytes_out: u64,
    client_keep_alive: bool,
    /// A response (a 5xx, or a status the route retries on) whose head was read but not
    /// yet forwarded, so it can still be retried.
    held: bool,
    /// When the response was relayed (for a held-back one: when its head arrived).
    finished: Instant,
    pending: Option<Pending>,
}

/// A held-back response: its head, its connection, what was read after the head.
struct Pending {
    head: ResponseHead,
    up: TcpStream,
    buf: BytesMut,
    /// Whether the connection can carry another request once the response is read (the
    /// request went up whole).
    reusable: bool,
}

/// One attempt of `req` at `target`: sends the upstream head `up_head` and the body
/// (`body_state` remembers what of it went out), reads the response head and, unless it is
/// one that may be retried (held back: the policy retries its status and another attempt
/// may follow), relays the response.
async fn attempt(
    req: &Request<'_>,
    target: &Target<'_>,
    up_head: &mut BytesMut,
    body_state: &mut body::RequestBody,
    ds: &mut Downstream,
    timer: &mut Timer<'_>,
) -> Result<AttemptResult, AttemptError> {
    let &Target {
        cluster,
        addr,
        stats,
        t0,
        deadline,
        per_try,
        retry,
        may_retry,
    } = target;
    let ctx = req.scope.ctx;
    let pooled = ctx.pool.borrow_mut().take(addr, cluster.idle_timeout, t0);
    let reused = pooled.is_some();
    let mut up = match pooled {
        Some(s) => {
            if let Some(st) = stats {
                st.connections_reused.add(1);
            }
            s
        }
        None => {
            let connect = within(
                timer,
                deadline.min(t0 + cluster.connect_timeout),
                TcpStream::connect_addr(addr),
            )
            .await;
            let s = match connect {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    if let Some(st) = stats {
                        st.connect_failures.add(1);
                    }
                    return Err(AttemptError::Connect(e));
                }
                Err(_) => {
                    if let Some(st) = stats {
                        st.connect_failures.add(1);
                    }
                    return Err(AttemptError::ConnectTimeout);
                }
            };
            let _ = s.set_nodelay(true);
            if let Some(st) = stats {
                st.connections_opened.add(1);
            }
            s
        }
    };

    // Request head and body. A body goes up with the upstream watched for an early answer.
    // Whether the connection can carry another request once the response is read: not
    // when the request's end failed to go up (its write half is shut).
    let (mut up_buf, head_by, reusable_up) = if body_state.has_body() {
        let sent = duplex::send_body(
            ctx,
            req.head,
            &up,
            up_head,
            body_state,
            ds,
            (deadline, per_try),
            req.response_headers,
            timer,
        )
        .await;
        let closed = AttemptError::UpstreamClosed { reused };
        match sent {
            duplex::Sent::Response {
                buf,
                head_by,
                body_up,
            } => (buf, head_by, body_up),
            duplex::Sent::Answered {
                status,
                head_at,
                bytes_out,
            } => {
                let upstream_time = head_at.saturating_duration_since(t0);
                if let Some(st) = stats {
                    st.upstream_latency.observe(upstream_time);
                }
                return Ok(AttemptResult {
                    status,
                    upstream_time,
                    bytes_out,
                    client_keep_alive: false,
                    held: false,
                    finished: Instant::now(),
                    pending: None,
                });
            }
            duplex::Sent::Failed(e) => return Err(send_error(e, closed)),
            duplex::Sent::Closed => return Err(closed),
            duplex::Sent::BadResponse(e) => return Err(AttemptError::BadResponse(e)),
            duplex::Sent::TimedOut => {
                if let Some(st) = stats {
                    st.timeouts.add(1);
                }
                return Err(AttemptError::Timeout);
            }
        }
    } else {
        let sent = body_state
            .send_head(&mut up, up_head, deadline, timer)
            .await;
        if let Err(e) = sent {
            return Err(send_error(e, AttemptError::UpstreamClosed { reused }));
        }
        // The response head is due within the attempt's own timeout.
        let head_by = per_try.map_or(deadline, |p| deadline.min(Instant::now() + p));
        (ctx.take_buf(), head_by, true)
    };

    // Response head (skipping interim 1xx responses).
    let resp = loop {
        match ResponseHead::parse(&mut up_buf, &http1::Limits::default()) {
            // 100 Continue was answered by this hop (or not asked for); 101 is a switch.
            Ok(ParseStatus::Complete { head, .. })
                if head.is_informational() && head.status() != 101 =>
            {
                // A client that cannot take a few bytes by the deadline is gone: the
                // connection closes without another write (a 408 could not reach it).
                if head.status() != 100
                    && body::relay_interim(
                        &head,
                        req.head.version(),
                        ds.client_side(),
                        deadline,
                        timer,
                    )
                    .await
                    .is_err()
                {
                    return Err(AttemptError::Client(BodyError::Io));
                }
                continue;
            }
            Ok(ParseStatus::Complete { head, .. }) => break head,
            Ok(ParseStatus::Partial) => {}
            Err(e) => return Err(AttemptError::BadResponse(e)),
        }
        let read = within(timer, head_by, io::read_more(&mut up, up_buf)).await;
        match read {
            Ok((Ok(0), _)) | Ok((Err(_), _)) => {
                return Err(AttemptError::UpstreamClosed { reused });
            }
            Ok((Ok(_), b)) => up_buf = b,
            Err(_) => {
                if let Some(st) = stats {
                    st.timeouts.add(1);
                }
                return Err(AttemptError::Timeout);
            }
        }
    };
    let head_at = Instant::now();
    let upstream_time = head_at.saturating_duration_since(t0);
    if let Some(st) = stats {
        st.upstream_latency.observe(upstream_time);
    }
    let status = resp.status();
    if may_retry && retry.retries(status) && body_state.replayable() {
        // Held back so the caller may retry instead of forwarding it.
        return Ok(AttemptResult {
            status,
            upstream_time,
            bytes_out: 0,
            client_keep_alive: false,
            held: true,
            finished: head_at,
            pending: Some(Pending {
                head: resp,
                up,
                buf: up_buf,
                reusable: reusable_up,
            }),
        });
    }
    let reply = reply_for(req.head, ctx, body_state, req.response_headers);
    let (bytes_out, client_keep_alive, reusable) = body::relay_response(
        ctx,
        resp,
        reply,
        &mut up,
        up_buf,
        ds.client_side(),
        deadline,
        timer,
    )
    .await;
    let finished = Instant::now();
    // Not after a body the upstream stopped taking: the request on it never ended.
    if reusable && reusable_up && !body_state.unread() {
        ctx.pool
            .borrow_mut()
            .put(addr, up, cluster.max_idle_per_endpoint, finished);
    }
    Ok(AttemptResult {
        status,
        upstream_time,
        bytes_out,
        client_keep_alive,
        held: false,
        finished,
        pending: None,
    })
}

/// The hash of the request by the route's `hash_on`: the header's values, or the client's
/// address (also when the header is absent).
fn request_hash(route: &RouteRt, view: &View<'_>, peer: SocketAddr) -> u64 {
    match &route.hash_on {
        HashKey::ClientIp => hash_ip(peer.ip()),
        HashKey::Header(h) => header_hash(view, h).unwrap_or_else(|| hash_ip(peer.ip())),
    }
}

/// The hash key of field `name`: its value, or for a field sent more than once all its
/// values, sorted (their order does not move the request; Envoy hashes them alike).
fn header_hash(view: &impl RequestView, name: &str) -> Option<u64> {
    let mut values = view.header_values(name);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(hash_key(first));
    };
    let mut all: Vec<&[u8]> = [first, second].into_iter().chain(values).collect();
    all.sort_unstable();
    Some(hash_key(&all.join(router::list_separator(name))))
}

/// What the response to `head` owes the client. A body the upstream stopped taking is
/// still coming: the connection cannot carry another request.
fn reply_for<'r>(
    head: &RequestHead,
    ctx: &WorkerCtx,
    body_state: &body::RequestBody,
    edits: Option<&'r HeaderEdits>,
) -> body::Reply<'r> {
    let reply = body::Reply::to(head, ctx, edits);
    body::Reply {
        keep_alive: reply.keep_alive && !body_state.unread(),
        ..reply
    }
}

/// The attempt's error for a failed send; `closed` when the upstream side failed.
fn send_error(e: body::SendError, closed: AttemptError) -> AttemptError {
    match e {
        body::SendError::Upstream => closed,
        body::SendError::UpstreamTimeout => AttemptError::Timeout,
        body::SendError::Client(c) => AttemptError::Client(c),
    }
}

/// Forwards a held-back response, by the request's deadline like any response; its read
/// buffer goes back to the pool, and its connection is handed back when it can carry
/// another request (the caller decides whether the request's side allows that).
async fn forward_pending(
    ctx: &WorkerCtx,
    ds: &mut Downstream,
    mut r: AttemptResult,
    reply: body::Reply<'_>,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> (AttemptResult, Option<TcpStream>) {
    let mut reusable = None;
    if let Some(Pending {
        head: resp,
        mut up,
        buf: up_buf,
        reusable: reusable_up,
    }) = r.pending.take()
    {
        let (bytes, keep, reuse) = body::relay_response(
            ctx,
            resp,
            reply,
            &mut up,
            up_buf,
            ds.client_side(),
            deadline,
            timer,
        )
        .await;
        r.bytes_out = bytes;
        r.client_keep_alive = keep;
        r.finished = Instant::now();
        reusable = (reuse && reusable_up).then_some(up);
    }
    r.held = false;
    (r, reusable)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{View, header_hash};
    use crate::{
        http1::{Limits, ParseStatus, RequestHead},
        lb::hash_key,
        router::RequestView as _,
    };

    fn head(fields: &str) -> RequestHead {
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\nhost: a\r\n{fields}\r\n").as_str());
        match RequestHead::parse(&mut buf, &Limits::default()) {
            Ok(ParseStatus::Complete { head, .. }) => head,
            _ => panic!("test head does not parse"),
        }
    }

    fn view<'a>(head: &'a RequestHead, request_id: &'a [u8]) -> View<'a> {
        View {
            head,
            path: head.path(),
            request_id,
        }
    }

    #[test]
    fn a_repeated_hash_field_hashes_all_its_values_in_any_order() {
        let one = head("x-user: a\r\n");
        assert_eq!(
            header_hash(&view(&one, b"r"), "x-user"),
            Some(hash_key(b"a"))
        );
        let ab = head("x-user: a\r\nx-user: b\r\n");
        let ba = head("X-User: b\r\nx-other: z\r\nx-user: a\r\n");
        let both = header_hash(&view(&ab, b"r"), "x-user");
        assert_eq!(both, header_hash(&view(&ba, b"r"), "x-user"));
        assert_eq!(both, Some(hash_key(b"a,b")));
        assert_eq!(header_hash(&view(&one, b"r"), "x-none"), None);
        // Cookie fields join as one Cookie field lists its pairs: two fields hash as the
        // one field that says the same.
        let split = head("cookie: b=2\r\ncookie: a=1\r\n");
        let whole = head("cookie: a=1; b=2\r\n");
        assert_eq!(
            header_hash(&view(&split, b"r"), "cookie"),
            header_hash(&view(&whole, b"r"), "cookie")
        );
    }

    /// Routing and hashing see the `x-request-id` the request goes upstream with: a
    /// replaced client id is gone, a generated one is there.
    #[test]
    fn the_request_id_seen_is_the_one_sent_upstream() {
        let given = head("x-request-id: from-client\r\nx-request-id: again\r\n");
        let v = view(&given, b"generated");
        let seen: Vec<&[u8]> = v.header_values("X-Request-Id").collect();
        assert_eq!(seen, [&b"generated"[..]]);
        assert_eq!(
            header_hash(&v, "x-request-id"),
            Some(hash_key(b"generated"))
        );
        let none = head("x-user: a\r\n");
        let v = view(&none, b"made");
        let seen: Vec<&[u8]> = v.header_values("x-request-id").collect();
        assert_eq!(seen, [&b"made"[..]]);
        let other: Vec<&[u8]> = v.header_values("x-user").collect();
        assert_eq!(other, [&b"a"[..]]);
    }
}
