//! Compiles a validated [`Config`] into the wire [`Snapshot`](v1::Snapshot): names become indices, defaults
//! are resolved, so the data plane only does lookups.

use omnirelay_proto::{capability, v1};

use crate::config::{self, Config, HashOn, HeaderCondition, LbPolicy, PathMatch};

/// Capabilities a data plane needs to apply the snapshot compiled from `config`.
pub fn required_capabilities(config: &Config) -> Vec<String> {
    let mut caps = vec![capability::HTTP1.to_owned()];
    for c in &config.clusters {
        let cap = match c.lb {
            LbPolicy::RoundRobin => capability::LB_ROUND_ROBIN,
            LbPolicy::LeastRequest => capability::LB_LEAST_REQUEST,
            LbPolicy::RingHash => capability::LB_RING_HASH,
            LbPolicy::Rendezvous => capability::LB_RENDEZVOUS,
        };
        if !caps.iter().any(|x| x == cap) {
            caps.push(cap.to_owned());
        }
    }
    // A data plane that would keep the clients' ids must not take such a snapshot.
    if config.listeners.iter().any(|l| !l.preserve_request_id) {
        caps.push(capability::LISTENER_REPLACE_REQUEST_ID.to_owned());
    }
    // One that would not limit them would let a cluster be flooded.
    if config.clusters.iter().any(|c| c.max_requests > 0) {
        caps.push(capability::CLUSTER_MAX_REQUESTS.to_owned());
    }
    // One that would not edit them would pass on fields meant to be removed.
    if config
        .routes
        .iter()
        .any(|r| !r.request_headers.is_empty() || !r.response_headers.is_empty())
    {
        caps.push(capability::ROUTE_HEADER_EDITS.to_owned());
    }
    // One that would not rewrite would send requests where they were not meant to go.
    if config
        .routes
        .iter()
        .any(|r| r.rewrite != config::Rewrite::default())
    {
        caps.push(capability::ROUTE_REWRITE.to_owned());
    }
    // One that does not know it would not limit the route.
    if config.routes.iter().any(|r| r.rate_limit.is_some()) {
        caps.push(capability::ROUTE_RATE_LIMIT.to_owned());
    }
    // One that does not know them would never take an endpoint out.
    if config.clusters.iter().any(|c| c.health_check.is_some()) {
        caps.push(capability::CLUSTER_HEALTH_CHECK.to_owned());
    }
    let checks = || {
        config
            .clusters
            .iter()
            .filter_map(|c| c.health_check.as_ref())
    };
    // One that does not know them would send GETs with an empty path (and refuse the
    // snapshot), or take out endpoints that answer an expected status.
    if checks().any(|h| h.protocol == config::HealthCheckProtocol::Tcp) {
        caps.push(capability::CLUSTER_HEALTH_CHECK_TCP.to_owned());
    }
    if checks().any(|h| !h.expected_statuses.is_empty()) {
        caps.push(capability::CLUSTER_HEALTH_CHECK_STATUSES.to_owned());
    }
    // One that does not know them would send the route to cluster 0.
    if config
        .routes
        .iter()
        .any(|r| !r.weighted_clusters.is_empty())
    {
        caps.push(capability::ROUTE_WEIGHTED_CLUSTERS.to_owned());
    }
    // One that does not know them would forward those answers without a retry.
    if config
        .routes
        .iter()
        .any(|r| r.retry.on_gateway_error || !r.retry.statuses.is_empty())
    {
        caps.push(capability::ROUTE_RETRY_STATUSES.to_owned());
    }
    // One that does not know it would draw at random.
    if config.routes.iter().any(|r| r.split_by_hash) {
        caps.push(capability::ROUTE_SPLIT_BY_HASH.to_owned());
    }
    if config
        .routes
        .iter()
        .any(|r| matches!(r.answer, Some(config::Answer::Direct(_))))
    {
        caps.push(capability::ROUTE_DIRECT_RESPONSE.to_owned());
    }
    if config
        .routes
        .iter()
        .any(|r| matches!(r.answer, Some(config::Answer::Redirect(_))))
    {
        caps.push(capability::ROUTE_REDIRECT.to_owned());
    }
    // One that would not merge them would route `//admin` apart from `/admin`.
    if config.listeners.iter().any(|l| l.merge_slashes) {
        caps.push(capability::LISTENER_MERGE_SLASHES.to_owned());
    }
    caps
}

fn answer(a: &config::Answer) -> v1::route::Answer {
    match a {
        config::Answer::Direct(d) => v1::route::Answer::DirectResponse(v1::DirectResponse {
            status: u32::from(d.status),
            body: d.body.clone().into_bytes(),
            content_type: d.content_type.clone(),
        }),
        config::Answer::Redirect(r) => v1::route::Answer::Redirect(v1::Redirect {
            scheme: r.scheme.clone().unwrap_or_default(),
            host: r.host.clone().unwrap_or_default(),
            port: r.port.map_or(0, u32::from),
            path: r
                .path
                .clone()
                .map(v1::redirect::Path::PathRedirect)
                .or_else(|| r.prefix.clone().map(v1::redirect::Path::PrefixRewrite)),
            code: u32::from(r.code),
            strip_query: r.strip_query,
        }),
    }
}

fn timeouts(t: &config::Timeouts) -> v1::Timeouts {
    v1::Timeouts {
        connect_ms: t.connect_ms,
        request_ms: t.request_ms,
        idle_ms: t.idle_ms,
    }
}

fn route(r: &config::Route, config: &Config) -> v1::Route {
    let cluster_index = index_of(config, &r.cluster);
    v1::Route {
        name: r.name.clone(),
        hosts: r.hosts.clone(),
        path: Some(match &r.path {
            PathMatch::Prefix(p) => v1::route::Path::Prefix(p.clone()),
            PathMatch::Exact(p) => v1::route::Path::Exact(p.clone()),
        }),
        headers: r
            .headers
            .iter()
            .map(|h| v1::HeaderMatch {
                name: h.name.clone(),
                r#match: Some(match &h.condition {
                    HeaderCondition::Exact(v) => v1::header_match::Match::Exact(v.clone()),
                    HeaderCondition::Prefix(v) => v1::header_match::Match::Prefix(v.clone()),
                    HeaderCondition::Present => v1::header_match::Match::Present(true),
                }),
            })
            .collect(),
        cluster_index,
        timeouts: Some(timeouts(&r.timeouts)),
        retry: Some(v1::RetryPolicy {
            max_retries: r.retry.max_retries,
            budget_percent: r.retry.budget_percent,
            min_retries_per_second: r.retry.min_retries_per_second,
            base_backoff_ms: r.retry.base_backoff_ms,
            max_backoff_ms: r.retry.max_backoff_ms,
            on_connect_failure: r.retry.on_connect_failure,
            on_5xx: r.retry.on_5xx,
            on_gateway_error: r.retry.on_gateway_error,
            retriable_statuses: r.retry.statuses.iter().map(|&s| s.into()).collect(),
            on_timeout: r.retry.on_timeout,
            per_try_timeout_ms: r.retry.per_try_timeout_ms,
        }),
        hash_on: Some(v1::HashOn {
            key: Some(match &r.hash_on {
                HashOn::Header(h) => v1::hash_on::Key::Header(h.clone()),
                HashOn::ClientIp => v1::hash_on::Key::ClientIp(true),
            }),
        }),
        prefix_rewrite: r.rewrite.prefix.clone().unwrap_or_default(),
        host_rewrite: r.rewrite.host.clone().unwrap_or_default(),
        request_headers: header_edits(&r.request_headers),
        response_headers: header_edits(&r.response_headers),
        answer: r.answer.as_ref().map(answer),
        rate_limit: r.rate_limit.map(|l| v1::RouteRateLimit {
            requests_per_second: l.requests_per_second,
            burst: l.burst,
        }),
        weighted_clusters: r
            .weighted_clusters
            .iter()
            .map(|w| v1::WeightedCluster {
                cluster_index: index_of(config, &w.name),
                weight: w.weight,
            })
            .collect(),
        split_by_hash: r.split_by_hash,
    }
}

/// The index of cluster `name` in the snapshot (checked to exist by validation).
fn index_of(config: &Config, name: &str) -> u32 {
    config
        .clusters
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_default() as u32
}

fn header_edits(e: &config::HeaderEdits) -> Option<v1::HeaderEdits> {
    (!e.is_empty()).then(|| v1::HeaderEdits {
        set: e
            .set
            .iter()
            .map(|(name, value)| v1::HeaderValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        remove: e.remove.clone(),
    })
}

fn cluster(c: &config::Cluster) -> v1::Cluster {
    let lb = match c.lb {
        LbPolicy::RoundRobin => v1::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => v1::LbPolicy::LeastRequest,
        LbPolicy::RingHash => v1::LbPolicy::RingHash,
        LbPolicy::Rendezvous => v1::LbPolicy::Rendezvous,
    };
    v1::Cluster {
        name: c.name.clone(),
        lb_policy: lb as i32,
        endpoints: c
            .endpoints
            .iter()
            .map(|e| v1::Endpoint {
                address: e.address.to_string(),
                weight: e.weight,
            })
            .collect(),
        timeouts: Some(timeouts(&c.timeouts)),
        outlier: Some(v1::OutlierDetection {
            consecutive_failures: c.outlier.consecutive_failures,
            base_ejection_ms: c.outlier.base_ejection_ms,
            max_ejection_ms: c.outlier.max_ejection_ms,
            max_ejection_percent: c.outlier.max_ejection_percent,
        }),
        max_idle_per_endpoint: c.max_idle_per_endpoint,
        max_requests: c.max_requests,
        health_check: c.health_check.as_ref().map(|h| v1::HealthCheck {
            protocol: match h.protocol {
                config::HealthCheckProtocol::Http => v1::HealthCheckProtocol::Http,
                config::HealthCheckProtocol::Tcp => v1::HealthCheckProtocol::Tcp,
            } as i32,
            path: h.path.clone(),
            host: h.host.clone(),
            expected_statuses: h
                .expected_statuses
                .iter()
                .map(|&(start, end)| v1::StatusRange {
                    start: start.into(),
                    end: end.into(),
                })
                .collect(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
        }),
    }
}

/// A burst of 0 (not given) means one second's worth of the rate.
fn burst_or_rate(burst: u64, rate: u64) -> u64 {
    if burst == 0 { rate } else { burst }
}

/// Compiles `config` into snapshot `version`.
pub fn compile(
    config: &Config,
    version: u64,
    created_unix_ms: i64,
    source: &str,
    config_sha256: &str,
) -> v1::Snapshot {
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let route_indices = if l.routes.is_empty() {
                (0..config.routes.len() as u32).collect()
            } else {
                l.routes
                    .iter()
                    .filter_map(|n| config.routes.iter().position(|r| &r.name == n))
                    .map(|i| i as u32)
                    .collect()
            };
            v1::Listener {
                name: l.name.clone(),
                address: l.address.to_string(),
                limits: Some(v1::HttpLimits {
                    max_header_bytes: l.limits.max_header_bytes,
                    max_headers: l.limits.max_headers,
                    max_body_bytes: l.limits.max_body_bytes,
                }),
                route_indices,
                client_timeouts: Some(v1::ClientTimeouts {
                    idle_ms: l.timeouts.idle_ms,
                    head_ms: l.timeouts.head_ms,
                }),
                replace_request_id: !l.preserve_request_id,
                merge_slashes: l.merge_slashes,
            }
        })
        .collect();
    v1::Snapshot {
        version,
        created_unix_ms,
        required_capabilities: required_capabilities(config),
        source: source.to_owned(),
        config_sha256: config_sha256.to_owned(),
        listeners,
        routes: config.routes.iter().map(|r| route(r, config)).collect(),
        clusters: config.clusters.iter().map(cluster).collect(),
        budgets: config
            .budgets
            .iter()
            .map(|b| v1::RateLimitBudget {
                name: b.name.clone(),
                listener: b.listener.clone(),
                rate_per_second: b.rate_per_second,
                burst: burst_or_rate(b.burst, b.rate_per_second),
                new_flows_only: b.new_flows_only,
                overrides: b
                    .overrides
                    .iter()
                    .map(|o| v1::BudgetOverride {
                        prefix: o.prefix.to_string(),
                        rate_per_second: o.rate_per_second,
                        burst: burst_or_rate(o.burst, o.rate_per_second),
                    })
                    .collect(),
            })
            .collect(),
        kernel: Some(v1::KernelPolicy {
            allow: config
                .kernel
                .allow
                .iter()
                .map(ToString::to_string)
                .collect(),
            deny: config.kernel.deny.iter().map(ToString::to_string).collect(),
            drop_malformed: config.kernel.drop_malformed,
            worker_weights: config.kernel.worker_weights.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[listeners]]
name = "a"
address = "127.0.0.1:1"
routes = ["second", "first"]
timeouts = { idle_ms = 7000 }

[[listeners]]
name = "b"
address = "127.0.0.1:2"

[[routes]]
name = "first"
path_exact = "/x"
cluster = "two"
headers = [{ name = "x-a", present = true }]

[[routes]]
name = "second"
cluster = "one"
hash_on = { header = "x-user" }

[[clusters]]
name = "one"
lb = "rendezvous"
endpoints = ["127.0.0.1:10"]

[[clusters]]
name = "two"
endpoints = [{ address = "[::1]:11", weight = 4 }]

[[budgets]]
name = "x"
listener = "a"
rate_per_second = 50
"#;

    #[test]
    fn names_become_indices_and_defaults_are_resolved() {
        let config = crate::config::parse(CONFIG, "t.toml").unwrap();
        let s = compile(&config, 9, 1234, "t.toml", "abc");
        assert_eq!(s.version, 9);
        assert_eq!(
            s.listeners[0].route_indices,
            vec![1, 0],
            "explicit order kept"
        );
        assert_eq!(
            s.listeners[1].route_indices,
            vec![0, 1],
            "default: all routes"
        );
        let t = |i: usize| s.listeners[i].client_timeouts.unwrap_or_default();
        assert_eq!(
            (t(0).idle_ms, t(0).head_ms),
            (7000, 0),
            "0: the data plane's default"
        );
        assert_eq!((t(1).idle_ms, t(1).head_ms), (0, 0));
        assert_eq!(s.routes[0].cluster_index, 1);
        assert_eq!(s.routes[1].cluster_index, 0);
        assert_eq!(s.routes[0].path, Some(v1::route::Path::Exact("/x".into())));
        assert_eq!(s.clusters[0].lb_policy(), v1::LbPolicy::Rendezvous);
        assert_eq!(s.clusters[1].endpoints[0].address, "[::1]:11");
        assert_eq!(s.clusters[1].endpoints[0].weight, 4);
        assert_eq!(s.budgets[0].burst, 50, "burst defaults to the rate");
        assert_eq!(
            s.required_capabilities,
            vec!["http1", "lb.rendezvous", "lb.round_robin"]
        );
        assert!(
            !s.listeners[0].replace_request_id,
            "clients' ids kept by default"
        );
    }

    /// A listener that replaces clients' request ids says so, and requires a data plane
    /// that knows how (an older one would keep the ids it was told not to trust).
    #[test]
    fn request_id_merge_slashes_and_rewrite_are_required_capabilities() {
        let text = CONFIG
            .replace(
                "name = \"b\"\n",
                "name = \"b\"\npreserve_request_id = false\nmerge_slashes = true\n",
            )
            .replace("name = \"one\"\n", "name = \"one\"\nmax_requests = 50\n")
            + "\n[[routes]]\nname = \"moved\"\ncluster = \"one\"\nrewrite = { host = \"x.internal\" }\n\
               response_headers = { remove = [\"server\"] }\n";
        let config = crate::config::parse(&text, "t.toml").unwrap();
        let s = compile(&config, 1, 0, "t.toml", "abc");
        assert!(!s.listeners[0].replace_request_id);
        assert!(s.listeners[1].replace_request_id);
        assert!(!s.listeners[0].merge_slashes);
        assert!(s.listeners[1].merge_slashes);
        let moved = s.routes.iter().find(|r| r.name == "moved").unwrap();
        assert_eq!(moved.host_rewrite, "x.internal");
        assert_eq!(moved.prefix_rewrite, "");
        assert_eq!(moved.request_headers, None);
        assert_eq!(
            moved.response_headers.as_ref().map(|e| e.remove.clone()),
            Some(vec!["server".to_owned()])
        );
        for cap in [
            "listener.replace_request_id",
            "listener.merge_slashes",
            "route.rewrite",
            "cluster.max_requests",
            "route.header_edits",
        ] {
            assert!(
                s.required_capabilities.contains(&cap.to_owned()),
                "{cap}: {:?}",
                s.required_capabilities
            );
        }
    }

    /// A route's own answer, a split and a health check go into the snapshot with their
    /// parts, and each kind is a capability (a data plane without it would send the route
    /// to cluster 0, or never take an endpoint out); without them none is required.
    #[test]
    fn answers_splits_and_health_checks_compile_and_are_required_capabilities() {
        let plain = compile(
            &crate::config::parse(CONFIG, "t.toml").unwrap(),
            1,
            0,
            "t.toml",
            "abc",
        );
        let caps = |s: &v1::Snapshot| {
            [
                "route.direct_response",
                "route.redirect",
                "route.weighted_clusters",
                "cluster.health_check",
                "route.rate_limit",
                "cluster.health_check_tcp",
                "cluster.health_check_statuses",
                "route.split_by_hash",
                "route.retry_statuses",
            ]
            .map(|c| s.required_capabilities.contains(&c.to_owned()))
        };
        assert_eq!(caps(&plain), [false; 9]);
        let text = CONFIG.to_owned()
            + "\n[[routes]]\nname = \"gone\"\ndirect_response = { status = 410, body = \"gone\" }\n\
               \n[[routes]]\nname = \"moved\"\nredirect = { scheme = \"https\", prefix = \"/v2/\", code = 308 }\n\
               \n[[routes]]\nname = \"split\"\nweighted_clusters = [{ name = \"two\", weight = 9 }, { name = \"one\" }]\n\
               rate_limit = { requests_per_second = 10 }\nsplit_by_hash = true\n\
               retry = { on = [\"gateway-error\", \"retriable-status-codes\"], statuses = [409] }\n";
        let text = text.replace(
            "name = \"one\"\n",
            "name = \"one\"\nhealth_check = { path = \"/healthz\", interval_ms = 2000, \
             expected_statuses = [204, \"300-399\"] }\n",
        );
        let text = text.replace(
            "name = \"two\"\n",
            "name = \"two\"\nhealth_check = { protocol = \"tcp\" }\n",
        );
        let s = compile(
            &crate::config::parse(&text, "t.toml").unwrap(),
            1,
            0,
            "t.toml",
            "abc",
        );
        assert_eq!(caps(&s), [true; 9]);
        let limited = s.routes.iter().find_map(|r| r.rate_limit).unwrap();
        assert_eq!((limited.requests_per_second, limited.burst), (10, 10));
        let check = |name: &str| {
            s.clusters
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.health_check.clone())
                .unwrap()
        };
        let (http, tcp) = (check("one"), check("two"));
        assert_eq!((http.path.as_str(), http.interval_ms), ("/healthz", 2000));
        assert_eq!((http.timeout_ms, http.unhealthy_threshold), (1000, 3));
        assert_eq!(http.protocol(), v1::HealthCheckProtocol::Http);
        let range = |start, end| v1::StatusRange { start, end };
        assert_eq!(http.expected_statuses, [range(204, 204), range(300, 399)]);
        assert_eq!(tcp.protocol(), v1::HealthCheckProtocol::Tcp);
        assert_eq!((tcp.path.as_str(), tcp.expected_statuses.len()), ("", 0));
        let split = s.routes.iter().find(|r| r.name == "split").unwrap();
        assert!(split.split_by_hash);
        let retry = split.retry.as_ref().unwrap();
        assert!(retry.on_gateway_error && !retry.on_5xx);
        assert_eq!(retry.retriable_statuses, [409]);
        assert_eq!(
            split.weighted_clusters,
            [
                v1::WeightedCluster {
                    cluster_index: 1,
                    weight: 9
                },
                v1::WeightedCluster {
                    cluster_index: 0,
                    weight: 1
                }
            ]
        );
        let answer = |name: &str| {
            s.routes
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.answer.clone())
                .unwrap()
        };
        assert_eq!(
            answer("gone"),
            v1::route::Answer::DirectResponse(v1::DirectResponse {
                status: 410,
                body: b"gone".to_vec(),
                content_type: "text/plain".into(),
            })
        );
        assert_eq!(
            answer("moved"),
            v1::route::Answer::Redirect(v1::Redirect {
                scheme: "https".into(),
                host: String::new(),
                port: 0,
                path: Some(v1::redirect::Path::PrefixRewrite("/v2/".into())),
                code: 308,
                strip_query: false,
            })
        );
    }
}
