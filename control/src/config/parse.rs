//! Reading each section of the document into the model, recording every local problem
//! (types, ranges, formats). Cross-references are checked afterwards in `refs`.

use std::{collections::HashMap, net::SocketAddr};

use omnirelay_proto::limits;
use toml::Value;

use super::{
    model::*,
    reader::{Obj, Sink},
};

const MAX_MS: i64 = 24 * 3600 * 1000;
/// Endpoints per cluster the data plane's balancers take (`dataplane/src/lb/cluster.rs`).
const MAX_ENDPOINTS: usize = 1 << 20;

pub(super) fn document(table: &toml::Table, sink: &Sink) -> Config {
    let root = Obj::root(table, sink);
    let config = Config {
        control: control(&root),
        listeners: root.tables("listeners").into_iter().map(listener).collect(),
        routes: root.tables("routes").into_iter().map(route).collect(),
        clusters: root.tables("clusters").into_iter().map(cluster).collect(),
        budgets: root.tables("budgets").into_iter().map(budget).collect(),
        kernel: root.table("kernel").map(kernel).unwrap_or_default(),
    };
    root.finish();
    config
}

/// `[control]` alone (other sections are not looked at).
pub(super) fn control_only(table: &toml::Table, sink: &Sink) -> ControlSection {
    control(&Obj::root(table, sink))
}

fn control(root: &Obj<'_>) -> ControlSection {
    let mut control = ControlSection::default();
    if let Some(c) = root.table("control") {
        if let Some(a) = addr(&c, "grpc_listen") {
            control.grpc_listen = a;
        }
        if let Some(a) = addr(&c, "admin_listen") {
            control.admin_listen = a;
        }
        control.tls = c.table("tls").and_then(control_tls);
        c.finish();
    }
    control
}

fn control_tls(o: Obj<'_>) -> Option<ControlTls> {
    let cert = o.str("cert");
    let key = o.str("key");
    let client_ca = o.opt_str("client_ca");
    if client_ca.as_deref() == Some("") {
        o.error(
            "client_ca",
            "empty: give a file path, or leave the field out",
        );
    }
    o.finish();
    Some(ControlTls {
        cert: cert?.into(),
        key: key?.into(),
        client_ca: client_ca.filter(|p| !p.is_empty()).map(Into::into),
    })
}

fn addr(o: &Obj<'_>, key: &str) -> Option<SocketAddr> {
    let s = o.opt_str(key)?;
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            o.error(key, format!("{s:?} is not an ip:port address"));
            None
        }
    }
}

fn required_addr(o: &Obj<'_>, key: &str) -> SocketAddr {
    if o.str(key).is_some() {
        // Re-read to validate the format (the first read only checked presence).
        if let Some(a) = addr(o, key) {
            return a;
        }
    }
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn name(o: &Obj<'_>) -> String {
    let n = o.str("name").unwrap_or_default();
    if n.is_empty() {
        return n;
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        o.error(
            "name",
            format!("{n:?} may only contain letters, digits, '-', '_' and '.'"),
        );
    }
    n
}

fn ms(o: &Obj<'_>, key: &str) -> u32 {
    o.int_or(key, 0, 1, MAX_MS) as u32
}

fn timeouts(o: Option<Obj<'_>>) -> Timeouts {
    let Some(o) = o else {
        return Timeouts::default();
    };
    let t = Timeouts {
        connect_ms: ms(&o, "connect_ms"),
        request_ms: ms(&o, "request_ms"),
        idle_ms: ms(&o, "idle_ms"),
    };
    o.finish();
    t
}

fn listener(o: Obj<'_>) -> Listener {
    let limits = match o.table("limits") {
        None => Limits::default(),
        Some(l) => {
            let d = Limits::default();
            let limits = Limits {
                max_header_bytes: l.int_or(
                    "max_header_bytes",
                    d.max_header_bytes.into(),
                    1024,
                    1 << 20,
                ) as u32,
                max_headers: l.int_or("max_headers", d.max_headers.into(), 8, 1000) as u32,
                max_body_bytes: l.int_or("max_body_bytes", d.max_body_bytes as i64, 1, i64::MAX)
                    as u64,
            };
            l.finish();
            limits
        }
    };
    let timeouts = match o.table("timeouts") {
        None => ClientTimeouts::default(),
        Some(t) => {
            let timeouts = ClientTimeouts {
                idle_ms: ms(&t, "idle_ms"),
                head_ms: ms(&t, "head_ms"),
            };
            t.finish();
            timeouts
        }
    };
    let routes = o.str_list("routes");
    if routes.is_empty() && o.table_has("routes") {
        o.error(
            "routes",
            "empty: list the routes this listener serves, or leave the field out for all of them",
        );
    }
    let address = required_addr(&o, "address");
    let parsed = o
        .opt_str("address")
        .is_some_and(|s| s.parse::<SocketAddr>().is_ok());
    if parsed && address.port() == 0 {
        o.error(
            "address",
            "port 0: each worker would listen on a different port; name the port",
        );
    }
    let listener = Listener {
        name: name(&o),
        address,
        routes,
        limits,
        timeouts,
        preserve_request_id: o.bool_or("preserve_request_id", true),
        merge_slashes: o.bool_or("merge_slashes", false),
    };
    o.finish();
    listener
}

fn path_match(o: &Obj<'_>) -> PathMatch {
    let prefix = o.opt_str("path_prefix");
    let exact = o.opt_str("path_exact");
    let m = match (prefix, exact) {
        (Some(_), Some(_)) => {
            o.error(
                "path_exact",
                "set either path_prefix or path_exact, not both",
            );
            PathMatch::Prefix("/".into())
        }
        (Some(p), None) => PathMatch::Prefix(p),
        (None, Some(e)) => PathMatch::Exact(e),
        (None, None) => PathMatch::Prefix("/".into()),
    };
    let (key, p) = match &m {
        PathMatch::Prefix(p) => ("path_prefix", p),
        PathMatch::Exact(p) => ("path_exact", p),
    };
    if !p.starts_with('/') {
        o.error(key, format!("{p:?} must start with '/'"));
    }
    m
}

pub(super) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn header_match(o: &Obj<'_>, path: String, v: &Value) -> Option<HeaderMatch> {
    let Some(t) = v.as_table() else {
        o.error_at(
            path,
            "expected a table like { name = \"x-canary\", exact = \"1\" }",
        );
        return None;
    };
    let h = o.child(path, t);
    let name = h.str("name").unwrap_or_default().to_ascii_lowercase();
    if !name.is_empty() && !is_header_name(&name) {
        h.error("name", format!("{name:?} is not a valid header name"));
    }
    let exact = h.opt_str("exact");
    let prefix = h.opt_str("prefix");
    let present = h.bool_or("present", false);
    let condition = match (exact, prefix, present) {
        (Some(e), None, false) => HeaderCondition::Exact(e),
        (None, Some(p), false) => HeaderCondition::Prefix(p),
        (None, None, true) => HeaderCondition::Present,
        _ => {
            h.error("name", "set exactly one of exact, prefix or present = true");
            HeaderCondition::Present
        }
    };
    h.finish();
    Some(HeaderMatch { name, condition })
}

fn retry(o: Option<Obj<'_>>) -> Retry {
    let d = Retry::default();
    let Some(o) = o else { return d };
    let mut r = Retry {
        max_retries: o.int_or("max_retries", d.max_retries.into(), 0, 10) as u32,
        budget_percent: o.int_or("budget_percent", d.budget_percent.into(), 0, 100) as u32,
        min_retries_per_second: o.int_or(
            "min_retries_per_second",
            d.min_retries_per_second.into(),
            0,
            100_000,
        ) as u32,
        base_backoff_ms: o.int_or("base_backoff_ms", d.base_backoff_ms.into(), 0, MAX_MS) as u32,
        max_backoff_ms: o.int_or("max_backoff_ms", d.max_backoff_ms.into(), 0, MAX_MS) as u32,
        per_try_timeout_ms: o.int_or("per_try_timeout_ms", 0, 1, MAX_MS) as u32,
        ..d
    };
    let statuses = retriable_statuses(&o);
    let mut on_statuses = false;
    if o.table_has("on") {
        r.on_connect_failure = false;
        for (path, v) in o.array("on") {
            match v.as_str() {
                Some("connect-failure") => r.on_connect_failure = true,
                Some("5xx") => r.on_5xx = true,
                Some("gateway-error") => r.on_gateway_error = true,
                Some("retriable-status-codes") => {
                    on_statuses = true;
                    if !o.table_has("statuses") {
                        o.error_at(path, "\"retriable-status-codes\" needs statuses (e.g. [409])");
                    }
                }
                Some("timeout") => {
                    r.on_timeout = true;
                    if !o.table_has("per_try_timeout_ms") {
                        o.error_at(
                            path,
                            "\"timeout\" needs per_try_timeout_ms: without it an attempt waits until the request's own deadline and leaves no time to retry",
                        );
                    }
                }
                _ => o.error_at(path, format!("unknown retry condition {v}; expected \"connect-failure\", \"5xx\", \"gateway-error\", \"retriable-status-codes\" or \"timeout\"")),
            }
        }
    }
    if on_statuses {
        r.statuses = statuses;
    } else if o.table_has("statuses") {
        o.error(
            "statuses",
            "only with \"retriable-status-codes\" in on (as Envoy's retriable_status_codes)",
        );
    }
    if r.max_backoff_ms < r.base_backoff_ms {
        o.error("max_backoff_ms", "must not be smaller than base_backoff_ms");
    }
    o.finish();
    r
}

/// `retry.statuses`: the statuses `retriable-status-codes` retries on.
fn retriable_statuses(o: &Obj<'_>) -> Vec<u16> {
    let items = o.array("statuses");
    let max = limits::MAX_RETRIABLE_STATUSES;
    o.check_list_len(
        "statuses",
        items.len(),
        max,
        "statuses",
        "name the statuses to retry on",
    );
    let ok = &limits::RETRIABLE_STATUSES;
    let mut seen: Vec<u16> = Vec::new();
    items
        .into_iter()
        .filter_map(|(path, v)| {
            let status = v.as_integer().and_then(|n| u16::try_from(n).ok());
            match status.filter(|s| ok.contains(s)) {
                Some(s) if seen.contains(&s) => {
                    o.error_at(path, format!("{s} is named twice"));
                    None
                }
                Some(s) => {
                    seen.push(s);
                    Some(s)
                }
                None => {
                    o.error_at(
                        path,
                        format!(
                            "{v} is not a status of a failure ({}-{})",
                            ok.start(),
                            ok.end()
                        ),
                    );
                    None
                }
            }
        })
        .collect()
}

fn hash_on(o: Option<Obj<'_>>) -> HashOn {
    let Some(o) = o else { return HashOn::ClientIp };
    let header = o.opt_str("header");
    let client_ip = o.bool_or("client_ip", false);
    let h = match (header, client_ip) {
        (Some(h), false) => {
            let h = h.to_ascii_lowercase();
            if !is_header_name(&h) {
                o.error("header", format!("{h:?} is not a valid header name"));
            }
            HashOn::Header(h)
        }
        (None, true) => HashOn::ClientIp,
        _ => {
            o.error(
                "header",
                "set exactly one of header = \"name\" or client_ip = true",
            );
            HashOn::ClientIp
        }
    };
    o.finish();
    h
}

/// Fields set or removed per message, each way.
const MAX_HEADER_EDITS: usize = 32;

fn header_edits(o: Obj<'_>, request: bool) -> HeaderEdits {
    let name_ok = |at: String, name: &str| match omnirelay_http1::uneditable_field(name, request) {
        Some(why) => {
            o.error_at(at, format!("{name:?} {why}"));
            false
        }
        None => true,
    };
    let mut set = Vec::new();
    for (at, name, value) in o.string_map("set") {
        let name = name.to_ascii_lowercase();
        if !omnirelay_http1::valid_field_value(value.as_bytes()) {
            o.error_at(
                at,
                "the value has a line break, a control character or leading or trailing \
                 whitespace",
            );
        } else if name_ok(at, &name) {
            set.push((name, value));
        }
    }
    let mut remove = Vec::new();
    for (i, name) in o.str_list("remove").into_iter().enumerate() {
        let name = name.to_ascii_lowercase();
        if name_ok(format!("{}[{i}]", o.path_of("remove")), &name) {
            remove.push(name);
        }
    }
    for (key, n) in [("set", set.len()), ("remove", remove.len())] {
        if n > MAX_HEADER_EDITS {
            o.error(key, format!("{n} fields; at most {MAX_HEADER_EDITS}"));
        }
    }
    if let Some((name, _)) = set.iter().find(|(n, _)| remove.contains(n)) {
        o.error(
            "remove",
            format!("{name:?} is also set: set replaces it already"),
        );
    }
    let mut names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        o.error(
            "set",
            format!("{:?} is set twice (names are case-insensitive)", twice[0]),
        );
    }
    o.finish();
    HeaderEdits { set, remove }
}

fn rewrite(o: Obj<'_>) -> Rewrite {
    let prefix = o.opt_str("prefix");
    if let Some(p) = &prefix
        && !omnirelay_http1::valid_path_rewrite(p)
    {
        o.error(
            "prefix",
            format!(
                "{p:?} is not a path start: it must begin with '/' and hold only visible ASCII, \
                 without '?' or '#'"
            ),
        );
    }
    let host = o.opt_str("host");
    if let Some(h) = &host
        && (h.is_empty() || !omnirelay_http1::valid_host(h.as_bytes()))
    {
        o.error(
            "host",
            format!("{h:?} is not a Host value (a name or address, with an optional :port)"),
        );
    }
    if prefix.is_none() && host.is_none() {
        o.error_at(o.path(), "set prefix, host or both (or leave rewrite out)");
    }
    o.finish();
    Rewrite { prefix, host }
}

fn direct_response(o: Obj<'_>) -> DirectResponse {
    let status = o.opt_int("status", 200, 599);
    if !o.table_has("status") {
        o.error_at(o.path_of("status"), "missing (required)");
    }
    let status = status.unwrap_or(200) as u16;
    let body = o.opt_str("body").unwrap_or_default();
    let max = limits::MAX_DIRECT_RESPONSE_BODY;
    if body.len() > max {
        o.error("body", format!("{} bytes; at most {max}", body.len()));
    }
    if omnirelay_http1::forbids_body(status) && !body.is_empty() {
        o.error("body", format!("a {status} response has no body"));
    }
    let content_type = match o.opt_str("content_type") {
        Some(t) if !omnirelay_http1::valid_field_value(t.as_bytes()) => {
            o.error(
                "content_type",
                "the value has a line break, a control character or leading or trailing \
                 whitespace",
            );
            String::new()
        }
        Some(t) => t,
        None if body.is_empty() => String::new(),
        None => "text/plain".to_owned(),
    };
    o.finish();
    DirectResponse {
        status,
        body,
        content_type,
    }
}

fn redirect(o: Obj<'_>) -> Redirect {
    let scheme = o.opt_str("scheme").map(|s| s.to_ascii_lowercase());
    if let Some(s) = &scheme
        && s != "http"
        && s != "https"
    {
        o.error("scheme", format!("{s:?}: \"http\" or \"https\""));
    }
    let host = o.opt_str("host");
    if let Some(h) = &host
        && !omnirelay_http1::valid_host_without_port(h)
    {
        o.error(
            "host",
            format!("{h:?} is not a host name or address (give a port in `port`)"),
        );
    }
    let port = o.opt_int("port", 1, 65535).map(|p| p as u16);
    let path_start = |key: &str| {
        let p = o.opt_str(key)?;
        if !omnirelay_http1::valid_path_rewrite(&p) {
            o.error(
                key,
                format!(
                    "{p:?} is not a path start: it must begin with '/' and hold only visible \
                     ASCII, without '?' or '#'"
                ),
            );
        }
        Some(p)
    };
    let path = path_start("path");
    let prefix = path_start("prefix");
    if path.is_some() && prefix.is_some() {
        o.error("prefix", "set path or prefix, not both");
    }
    let code = o.int_or("code", 301, 0, 999) as u16;
    if !limits::REDIRECT_CODES.contains(&code) {
        o.error("code", format!("{code}: 301, 302, 303, 307 or 308"));
    }
    let strip_query = o.bool_or("strip_query", false);
    // `http` is the scheme the listeners serve: naming it changes nothing.
    let https = scheme.as_deref() == Some("https");
    if !https && host.is_none() && port.is_none() && path.is_none() && prefix.is_none() {
        o.error_at(
            o.path(),
            "set scheme = \"https\", host, port, path or prefix (a redirect to the same URL \
             would loop)",
        );
    }
    o.finish();
    Redirect {
        scheme,
        host,
        port,
        path,
        prefix,
        code,
        strip_query,
    }
}

fn weighted_clusters(o: &Obj<'_>) -> Vec<WeightedCluster> {
    let items = o.tables("weighted_clusters");
    let max = limits::MAX_WEIGHTED_CLUSTERS;
    o.check_list_len(
        "weighted_clusters",
        items.len(),
        max,
        "clusters",
        "name at least one cluster",
    );
    let mut split: Vec<WeightedCluster> = Vec::new();
    for w in items {
        let name = w.str("name").unwrap_or_default();
        let weight = w.int_or("weight", 1, 0, limits::MAX_SPLIT_WEIGHT.into()) as u32;
        if let Some(j) = split
            .iter()
            .position(|c| !name.is_empty() && c.name == name)
        {
            w.error("name", format!("{name:?} is also weighted_clusters[{j}]"));
        }
        w.finish();
        split.push(WeightedCluster { name, weight });
    }
    if !split.is_empty() && split.iter().all(|c| c.weight == 0) {
        o.error(
            "weighted_clusters",
            "every weight is 0: at least one cluster must take requests",
        );
    }
    split
}

/// The keys of a route that only a route to a cluster uses.
const CLUSTER_ONLY: [&str; 5] = ["timeouts", "retry", "hash_on", "rewrite", "request_headers"];

fn route(o: Obj<'_>) -> Route {
    let hosts = o
        .str_list("hosts")
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect::<Vec<_>>();
    for (i, h) in hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        // Labels of letters, digits and '-', one trailing dot allowed (`example.com.`):
        // no empty label (`.`, `a..b`), which would match nothing or an empty Host.
        let labels = bare.strip_suffix('.').unwrap_or(bare);
        if labels.is_empty()
            || labels
                .split('.')
                .any(|l| l.is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            o.error_at(
                format!("{}[{i}]", o.path_of("hosts")),
                format!("{h:?} is not a host name"),
            );
        }
    }
    let headers = o
        .array("headers")
        .into_iter()
        .filter_map(|(p, v)| header_match(&o, p, v))
        .collect();
    let route = Route {
        name: name(&o),
        hosts,
        path: path_match(&o),
        headers,
        // Required unless the route answers itself (checked below), and then not empty.
        cluster: if o.table_has("cluster") {
            o.str("cluster").unwrap_or_default()
        } else {
            String::new()
        },
        weighted_clusters: weighted_clusters(&o),
        split_by_hash: o.bool_or("split_by_hash", false),
        answer: None,
        timeouts: timeouts(o.table("timeouts")),
        retry: retry(o.table("retry")),
        hash_on: hash_on(o.table("hash_on")),
        rewrite: o.table("rewrite").map(rewrite).unwrap_or_default(),
        request_headers: o
            .table("request_headers")
            .map(|t| header_edits(t, true))
            .unwrap_or_default(),
        response_headers: o
            .table("response_headers")
            .map(|t| header_edits(t, false))
            .unwrap_or_default(),
        rate_limit: None,
    };
    let rate_limit = o.table("rate_limit").map(route_rate_limit);
    let direct = o.table("direct_response").map(direct_response);
    let redirect = o.table("redirect").map(redirect);
    let actions = [
        o.table_has("cluster"),
        o.table_has("weighted_clusters"),
        direct.is_some(),
        redirect.is_some(),
    ];
    match actions.iter().filter(|&&set| set).count() {
        0 => o.error_at(
            o.path_of("cluster"),
            "missing: set cluster, weighted_clusters, direct_response or redirect",
        ),
        1 => {}
        _ => o.error_at(
            o.path_of("cluster"),
            "set one of cluster, weighted_clusters, direct_response or redirect, not several",
        ),
    }
    if route.split_by_hash && !o.table_has("weighted_clusters") {
        o.error(
            "split_by_hash",
            "only a route with weighted_clusters has a split to pick by hash",
        );
    }
    let answer = direct
        .map(Answer::Direct)
        .or(redirect.map(Answer::Redirect));
    if answer.is_some() {
        for key in CLUSTER_ONLY.into_iter().filter(|k| o.table_has(k)) {
            o.error(key, "only a route to clusters uses this");
        }
    }
    o.finish();
    Route {
        answer,
        rate_limit,
        ..route
    }
}

fn route_rate_limit(o: Obj<'_>) -> RouteRateLimit {
    let max = i64::from(limits::MAX_ROUTE_RATE);
    let rate = o.opt_int("requests_per_second", 1, max);
    if !o.table_has("requests_per_second") {
        o.error("requests_per_second", "missing (required)");
    }
    let rate = rate.unwrap_or(1) as u32;
    let burst = o.int_or("burst", rate.into(), 1, max) as u32;
    o.finish();
    RouteRateLimit {
        requests_per_second: rate,
        burst,
    }
}

fn endpoint(o: &Obj<'_>, path: String, v: &Value) -> Option<Endpoint> {
    let parse = |s: &str, at: &str| match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            o.error_at(at.to_owned(), format!("{s:?} is not an ip:port address"));
            None
        }
    };
    match v {
        Value::String(s) => parse(s, &path).map(|address| Endpoint { address, weight: 1 }),
        Value::Table(t) => {
            let e = o.child(path, t);
            let address = e
                .str("address")
                .and_then(|s| parse(&s, &e.path_of("address")));
            let weight = e.int_or("weight", 1, 1, 10_000) as u32;
            e.finish();
            address.map(|address| Endpoint { address, weight })
        }
        _ => {
            o.error_at(
                path,
                "expected \"ip:port\" or { address = \"ip:port\", weight = N }",
            );
            None
        }
    }
}

fn cluster(o: Obj<'_>) -> Cluster {
    let lb = match o.opt_str("lb") {
        None => LbPolicy::RoundRobin,
        Some(s) => LbPolicy::parse(&s).unwrap_or_else(|| {
            o.error(
                "lb",
                format!(
                    "unknown policy {s:?}; expected one of {}",
                    LbPolicy::NAMES.join(", ")
                ),
            );
            LbPolicy::RoundRobin
        }),
    };
    let raw = o.array("endpoints");
    if !o.table_has("endpoints") {
        o.error(
            "endpoints",
            "missing (required): a cluster needs at least one endpoint",
        );
    } else if raw.is_empty() {
        o.error("endpoints", "empty: a cluster needs at least one endpoint");
    }
    if raw.len() > MAX_ENDPOINTS {
        o.error(
            "endpoints",
            format!(
                "{} endpoints; a cluster holds at most {MAX_ENDPOINTS}",
                raw.len()
            ),
        );
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(raw.len());
    let mut seen = HashMap::with_capacity(raw.len());
    for (i, (path, v)) in raw.into_iter().enumerate() {
        let Some(e) = endpoint(&o, path.clone(), v) else {
            continue;
        };
        // The data plane's balancers refuse a cluster that lists an endpoint twice.
        match seen.insert(e.address, i) {
            Some(first) => o.error_at(path, format!("{} is already endpoints[{first}]", e.address)),
            None => endpoints.push(e),
        }
    }
    let outlier = match o.table("outlier") {
        None => Outlier::default(),
        Some(t) => {
            let d = Outlier::default();
            let out = Outlier {
                consecutive_failures: t.int_or(
                    "consecutive_failures",
                    d.consecutive_failures.into(),
                    1,
                    1000,
                ) as u32,
                base_ejection_ms: t.int_or("base_ejection_ms", d.base_ejection_ms.into(), 1, MAX_MS)
                    as u32,
                max_ejection_ms: t.int_or("max_ejection_ms", d.max_ejection_ms.into(), 1, MAX_MS)
                    as u32,
                max_ejection_percent: t.int_or(
                    "max_ejection_percent",
                    d.max_ejection_percent.into(),
                    0,
                    100,
                ) as u32,
            };
            t.finish();
            out
        }
    };
    let cluster = Cluster {
        name: name(&o),
        lb,
        endpoints,
        timeouts: timeouts(o.table("timeouts")),
        outlier,
        max_idle_per_endpoint: o.int_or("max_idle_per_endpoint", 64, 0, 100_000) as u32,
        max_requests: o.int_or("max_requests", 0, 1, 10_000_000) as u32,
        health_check: o.table("health_check").map(health_check),
    };
    o.finish();
    cluster
}

const MIN_INTERVAL: i64 = limits::MIN_HEALTH_CHECK_INTERVAL_MS as i64;
const MIN_TIMEOUT: i64 = limits::MIN_HEALTH_CHECK_TIMEOUT_MS as i64;
const THRESHOLD: i64 = limits::MAX_HEALTH_CHECK_THRESHOLD as i64;

fn health_check(o: Obj<'_>) -> HealthCheck {
    let protocol = match o.opt_str("protocol").as_deref() {
        None | Some("http") => Some(HealthCheckProtocol::Http),
        Some("tcp") => Some(HealthCheckProtocol::Tcp),
        Some(other) => {
            o.error(
                "protocol",
                format!("unknown protocol {other:?}; expected \"http\" or \"tcp\""),
            );
            None
        }
    };
    let (path, host, expected_statuses) = match protocol {
        Some(HealthCheckProtocol::Http) => http_check(&o),
        // Which fields apply is not known: none is judged.
        None => {
            for key in ["path", "host", "expected_statuses"] {
                o.skip(key);
            }
            Default::default()
        }
        Some(HealthCheckProtocol::Tcp) => {
            for key in ["path", "host", "expected_statuses"] {
                o.refuse(
                    key,
                    "only for protocol = \"http\" (a TCP check connects and sends nothing)",
                );
            }
            Default::default()
        }
    };
    let interval_ms = o.int_or("interval_ms", 5000, MIN_INTERVAL, MAX_MS) as u32;
    let timeout_ms = o.int_or("timeout_ms", 1000, MIN_TIMEOUT, MAX_MS) as u32;
    if timeout_ms > interval_ms {
        o.error(
            "timeout_ms",
            format!("{timeout_ms} ms is longer than interval_ms ({interval_ms} ms)"),
        );
    }
    let check = HealthCheck {
        protocol: protocol.unwrap_or_default(),
        path,
        host,
        expected_statuses,
        interval_ms,
        timeout_ms,
        unhealthy_threshold: o.int_or("unhealthy_threshold", 3, 1, THRESHOLD) as u32,
        healthy_threshold: o.int_or("healthy_threshold", 2, 1, THRESHOLD) as u32,
    };
    o.finish();
    check
}

/// An HTTP check's path, host and expected statuses.
fn http_check(o: &Obj<'_>) -> (String, String, Vec<(u16, u16)>) {
    let path = o.str("path").unwrap_or_default();
    if !path.is_empty() && !omnirelay_http1::valid_origin_form(&path) {
        o.error(
            "path",
            format!(
                "{path:?} is not a request target: it must begin with '/' and hold only visible \
                 ASCII, without '#'"
            ),
        );
    }
    let host = o.opt_str("host").unwrap_or_default();
    if o.table_has("host") && (host.is_empty() || !omnirelay_http1::valid_host(host.as_bytes())) {
        o.error(
            "host",
            format!("{host:?} is not a Host value (a name or address, with an optional :port)"),
        );
    }
    (path, host, expected_statuses(o))
}

/// `expected_statuses`: statuses (`204`) and inclusive ranges (`"200-299"`).
fn expected_statuses(o: &Obj<'_>) -> Vec<(u16, u16)> {
    let items = o.array("expected_statuses");
    o.check_list_len(
        "expected_statuses",
        items.len(),
        limits::MAX_EXPECTED_STATUS_RANGES,
        "entries",
        "list the statuses that pass, or leave it out for 200-299",
    );
    let ok = &limits::EXPECTABLE_STATUSES;
    items
        .into_iter()
        .filter_map(|(path, v)| {
            let range = match v {
                Value::Integer(n) => u16::try_from(*n).ok().map(|n| (n, n)),
                Value::String(s) => match s.split_once('-') {
                    Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                    None => s.trim().parse().ok().map(|n| (n, n)),
                },
                _ => None,
            };
            match range {
                Some((a, b)) if ok.contains(&a) && ok.contains(&b) && a <= b => Some((a, b)),
                _ => {
                    o.error_at(
                        path,
                        format!(
                            "{v} is not a status ({}-{}) or a range of them, low to high \
                             (\"200-299\")",
                            ok.start(),
                            ok.end()
                        ),
                    );
                    None
                }
            }
        })
        .collect()
}

/// Highest rate per source the XDP limiter keeps precisely (whole-nanosecond intervals).
const MAX_RATE: i64 = omnirelay_ebpf_common::limiter::MAX_RATE_PER_SECOND as i64;
const MAX_BURST: i64 = 1 << 32;

fn rate(o: &Obj<'_>) -> u64 {
    o.opt_int("rate_per_second", 1, MAX_RATE)
        .unwrap_or_else(|| {
            if !o.table_has("rate_per_second") {
                o.error("rate_per_second", "missing (required)");
            }
            1
        }) as u64
}

fn budget(o: Obj<'_>) -> Budget {
    let overrides = o
        .array("overrides")
        .into_iter()
        .filter_map(|(path, v)| match v.as_table() {
            Some(t) => {
                let c = o.child(path, t);
                let prefix = prefix_field(&c, "prefix");
                let r = BudgetOverride {
                    prefix: prefix.unwrap_or(Prefix {
                        addr: std::net::IpAddr::from([0, 0, 0, 0]),
                        len: 0,
                    }),
                    rate_per_second: rate(&c),
                    burst: c.int_or("burst", 0, 0, MAX_BURST) as u64,
                };
                c.finish();
                Some(r)
            }
            None => {
                o.error_at(path, "expected a table { prefix, rate_per_second, burst }");
                None
            }
        })
        .collect();
    let b = Budget {
        name: name(&o),
        listener: o.str("listener").unwrap_or_default(),
        rate_per_second: rate(&o),
        burst: o.int_or("burst", 0, 0, MAX_BURST) as u64,
        new_flows_only: o.bool_or("new_flows_only", true),
        overrides,
    };
    o.finish();
    b
}

fn prefix_field(o: &Obj<'_>, key: &str) -> Option<Prefix> {
    let s = o.str(key)?;
    s.parse().map_err(|e: String| o.error(key, e)).ok()
}

fn prefix_list(o: &Obj<'_>, key: &str) -> Vec<Prefix> {
    let base = o.path_of(key);
    o.str_list(key)
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse()
                .map_err(|e: String| o.error_at(format!("{base}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn kernel(o: Obj<'_>) -> KernelSection {
    let d = KernelSection::default();
    let attach_mode = match o.opt_str("attach_mode").as_deref() {
        None | Some("native") => XdpAttach::Native,
        Some("generic") => XdpAttach::Generic,
        Some(other) => {
            o.error(
                "attach_mode",
                format!("unknown mode {other:?} (expected \"native\" or \"generic\")"),
            );
            XdpAttach::Native
        }
    };
    let pin_dir = o.opt_str("pin_dir").map_or(d.pin_dir, |p| {
        if !p.starts_with('/') {
            o.error(
                "pin_dir",
                format!("{p:?} must be an absolute path on a bpffs"),
            );
        }
        p.into()
    });
    let worker_weights = o
        .array("worker_weights")
        .into_iter()
        .filter_map(|(path, v)| match v.as_integer() {
            Some(w) if (0..=1_000_000).contains(&w) => Some(w as u32),
            _ => {
                o.error_at(path, "expected a weight in 0..=1000000");
                None
            }
        })
        .collect::<Vec<u32>>();
    let max_workers = omnirelay_ebpf_common::limiter::MAX_WORKERS as usize;
    if worker_weights.len() > max_workers {
        o.error("worker_weights", format!("at most {max_workers} workers"));
    }
    let k = KernelSection {
        interfaces: o.str_list("interfaces"),
        attach_mode,
        pin_dir,
        steering: o.bool_or("steering", false),
        worker_weights,
        allow: prefix_list(&o, "allow"),
        deny: prefix_list(&o, "deny"),
        drop_malformed: match o.opt_str("malformed").as_deref() {
            None | Some("pass") => false,
            Some("drop") => true,
            Some(other) => {
                o.error(
                    "malformed",
                    format!("unknown policy {other:?} (expected \"pass\" or \"drop\")"),
                );
                false
            }
        },
    };
    for (i, name) in k.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            o.error_at(
                format!("{}[{i}]", o.path_of("interfaces")),
                format!("{name:?} is not an interface name"),
            );
        }
    }
    o.finish();
    k
}
