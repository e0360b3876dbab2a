//! Checks across sections: unique names, references that resolve, addresses not shared.

use std::collections::{HashMap, HashSet};

use super::{model::Config, reader::Sink};

fn unique<'a>(sink: &Sink, section: &str, names: impl Iterator<Item = &'a str>) {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.enumerate() {
        if n.is_empty() {
            continue;
        }
        if let Some(j) = first.get(n) {
            sink.push(
                format!("{section}[{i}].name"),
                format!("duplicate name {n:?} (also {section}[{j}])"),
            );
        } else {
            first.insert(n, i);
        }
    }
}

pub(super) fn check(c: &Config, sink: &Sink) {
    unique(
        sink,
        "listeners",
        c.listeners.iter().map(|l| l.name.as_str()),
    );
    unique(sink, "routes", c.routes.iter().map(|r| r.name.as_str()));
    unique(sink, "clusters", c.clusters.iter().map(|x| x.name.as_str()));
    unique(sink, "budgets", c.budgets.iter().map(|b| b.name.as_str()));

    if c.listeners.is_empty() {
        sink.push("listeners", "at least one [[listeners]] entry is required");
    }
    let clusters: HashSet<&str> = c.clusters.iter().map(|x| x.name.as_str()).collect();
    let routes: HashSet<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    let listeners: HashSet<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();

    for (i, r) in c.routes.iter().enumerate() {
        if !r.cluster.is_empty() && !clusters.contains(r.cluster.as_str()) {
            sink.push(
                format!("routes[{i}].cluster"),
                format!("unknown cluster {:?}", r.cluster),
            );
        }
        for (j, w) in r.weighted_clusters.iter().enumerate() {
            if !w.name.is_empty() && !clusters.contains(w.name.as_str()) {
                sink.push(
                    format!("routes[{i}].weighted_clusters[{j}].name"),
                    format!("unknown cluster {:?}", w.name),
                );
            }
        }
    }
    let mut addresses = HashMap::new();
    for (i, l) in c.listeners.iter().enumerate() {
        for (j, name) in l.routes.iter().enumerate() {
            if !routes.contains(name.as_str()) {
                sink.push(
                    format!("listeners[{i}].routes[{j}]"),
                    format!("unknown route {name:?}"),
                );
            }
        }
        // Port 0 is refused where the address is parsed (and stands in for an invalid one).
        if l.address.port() != 0
            && let Some(prev) = addresses.insert(l.address, i)
        {
            sink.push(
                format!("listeners[{i}].address"),
                format!("{} is already used by listeners[{prev}]", l.address),
            );
        }
        for addr in [c.control.grpc_listen, c.control.admin_listen] {
            if overlaps(l.address, addr) {
                sink.push(
                    format!("listeners[{i}].address"),
                    format!(
                        "{} takes the control daemon's own address {addr}",
                        l.address
                    ),
                );
            }
        }
    }
    if c.control.grpc_listen == c.control.admin_listen {
        sink.push(
            "control.admin_listen",
            "must differ from control.grpc_listen",
        );
    }
    let mut budgeted: HashMap<&str, usize> = HashMap::new();
    for (i, b) in c.budgets.iter().enumerate() {
        if !b.listener.is_empty() && !listeners.contains(b.listener.as_str()) {
            sink.push(
                format!("budgets[{i}].listener"),
                format!("unknown listener {:?}", b.listener),
            );
        }
        if let Some(j) = budgeted.insert(b.listener.as_str(), i) {
            sink.push(
                format!("budgets[{i}].listener"),
                format!(
                    "listener {:?} already has a budget (budgets[{j}])",
                    b.listener
                ),
            );
        }
    }
    let max = omnirelay_ebpf_common::limiter::MAX_LISTENERS as usize;
    if c.budgets.len() > max {
        sink.push(
            "budgets",
            format!("at most {max} budgets (one per listener)"),
        );
    }
    // Each kernel map holds two generations (the one in force and the next), so a list
    // may fill half of it; past that, the first start would load and every update fail.
    let per_list = omnirelay_ebpf_common::limiter::MAX_CONFIG_ENTRIES as usize / 2;
    for (path, n) in [
        ("kernel.allow", c.kernel.allow.len()),
        ("kernel.deny", c.kernel.deny.len()),
    ] {
        if n > per_list {
            sink.push(path, format!("{n} prefixes; at most {per_list}"));
        }
    }
    let overrides: usize = c.budgets.iter().map(|b| b.overrides.len()).sum();
    if overrides > per_list {
        sink.push(
            "budgets",
            format!("{overrides} overrides in all; at most {per_list}"),
        );
    }
}

/// Whether binding both would collide: the same port, and the same address or a wildcard
/// on either side (of the same family, or an IPv6 wildcard, which takes IPv4 too).
fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    x == y
        || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
        || (y.is_unspecified() && (y.is_ipv6() || x.is_ipv4()))
}
