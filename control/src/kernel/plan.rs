//! What a snapshot means for the kernel maps, computed without touching the kernel: the
//! listener budgets, prefix lists, overrides and steering weights of one generation.

use std::net::{IpAddr, SocketAddr};

use omnirelay_ebpf_common::limiter::{
    Budget, CHARGE_ALL_PACKETS, ListenerPolicy, MAX_LISTENERS, MAX_WORKERS, NOT_BUDGETED,
    SteerWeights, v4_mapped,
};
use omnirelay_proto::v1;

use crate::config::Prefix;

/// The kernel's share of one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelPlan {
    /// Snapshot version: the stamp of every entry.
    pub version: u64,
    /// Budgeted listeners: (address, port, policy). The policy's id indexes `names`. Then
    /// the unbudgeted listeners on a port that has a budgeted one, flagged
    /// [`NOT_BUDGETED`] (so a budgeted wildcard does not apply to their addresses).
    pub listeners: Vec<([u8; 16], u16, ListenerPolicy)>,
    /// Listener name per id, for metric labels. [`plan`] numbers listeners by their place
    /// in the budget list; [`ListenerIds`](super::ListenerIds) renumbers them stably when
    /// the plan is applied (names are then empty where no listener holds an id).
    pub names: Vec<String>,
    /// Sources that bypass budgets: (address, prefix length over 128 bits).
    pub allow: Vec<([u8; 16], u32)>,
    /// Sources always dropped.
    pub deny: Vec<([u8; 16], u32)>,
    /// Per-source budgets: (listener id, address, prefix length over 128 bits, budget).
    pub overrides: Vec<(u32, [u8; 16], u32, Budget)>,
    /// Steering weights.
    pub weights: SteerWeights,
    /// Malformed packets are dropped rather than passed.
    pub drop_malformed: bool,
}

/// A snapshot whose kernel part cannot be written; names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    /// Field path in the snapshot, e.g. `budgets[0].overrides[1].prefix`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An address in map form (IPv4-mapped for IPv4).
pub fn map_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v) => v4_mapped(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}

/// A prefix in map form: the address and its length counted over 128 bits.
pub fn map_prefix(p: &Prefix) -> ([u8; 16], u32) {
    let extra = if p.addr.is_ipv4() { 96 } else { 0 };
    (map_addr(p.addr), u32::from(p.len) + extra)
}

fn parse_prefix(s: &str, field: String) -> Result<([u8; 16], u32), PlanError> {
    let p: Prefix = s.parse().map_err(|e: String| err(field, e))?;
    Ok(map_prefix(&p))
}

/// Computes the kernel maps' contents for a snapshot.
pub fn plan(snapshot: &v1::Snapshot) -> Result<KernelPlan, PlanError> {
    if snapshot.budgets.len() > MAX_LISTENERS as usize {
        return Err(err(
            "budgets",
            format!("at most {MAX_LISTENERS} budgets fit the kernel maps"),
        ));
    }
    let mut listeners = Vec::new();
    let mut names = Vec::new();
    let mut overrides = Vec::new();
    for (i, b) in snapshot.budgets.iter().enumerate() {
        let id = i as u32;
        let l = snapshot
            .listeners
            .iter()
            .find(|l| l.name == b.listener)
            .ok_or_else(|| {
                err(
                    format!("budgets[{i}].listener"),
                    format!("unknown listener {:?}", b.listener),
                )
            })?;
        let addr: SocketAddr = l.address.parse().map_err(|_| {
            err(
                format!("listeners[{}].address", l.name),
                format!("{:?} is not ip:port", l.address),
            )
        })?;
        let policy = ListenerPolicy {
            id,
            flags: if b.new_flows_only {
                0
            } else {
                CHARGE_ALL_PACKETS
            },
            budget: Budget::new(b.rate_per_second, b.burst),
            stamp: snapshot.version,
        };
        listeners.push((map_addr(addr.ip()), addr.port(), policy));
        names.push(l.name.clone());
        for (j, o) in b.overrides.iter().enumerate() {
            let (a, len) = parse_prefix(&o.prefix, format!("budgets[{i}].overrides[{j}].prefix"))?;
            overrides.push((id, a, len, Budget::new(o.rate_per_second, o.burst)));
        }
    }
    // Unbudgeted listeners that share a port with a budgeted one get an entry of their
    // own: the program looks an address up before the port's wildcard.
    let budgeted_ports: std::collections::HashSet<u16> =
        listeners.iter().map(|(_, port, _)| *port).collect();
    for l in &snapshot.listeners {
        if snapshot.budgets.iter().any(|b| b.listener == l.name) {
            continue;
        }
        let Ok(addr) = l.address.parse::<SocketAddr>() else {
            continue;
        };
        if budgeted_ports.contains(&addr.port()) {
            let policy = ListenerPolicy {
                flags: NOT_BUDGETED,
                stamp: snapshot.version,
                ..ListenerPolicy::default()
            };
            listeners.push((map_addr(addr.ip()), addr.port(), policy));
        }
    }
    let kernel = snapshot.kernel.clone().unwrap_or_default();
    let list = |items: &[String], name: &str| {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| parse_prefix(s, format!("kernel.{name}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut weights = SteerWeights {
        stamp: snapshot.version,
        ..SteerWeights::default()
    };
    if kernel.worker_weights.len() > MAX_WORKERS as usize {
        return Err(err(
            "kernel.worker_weights",
            format!("at most {MAX_WORKERS} workers"),
        ));
    }
    for (slot, w) in weights.weights.iter_mut().zip(&kernel.worker_weights) {
        *slot = *w;
    }
    Ok(KernelPlan {
        version: snapshot.version,
        listeners,
        names,
        allow: list(&kernel.allow, "allow")?,
        deny: list(&kernel.deny, "deny")?,
        overrides,
        weights,
        drop_malformed: kernel.drop_malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> v1::Snapshot {
        v1::Snapshot {
            version: 7,
            listeners: vec![
                v1::Listener {
                    name: "public".into(),
                    address: "0.0.0.0:8080".into(),
                    ..Default::default()
                },
                v1::Listener {
                    name: "v6".into(),
                    address: "[2001:db8::1]:443".into(),
                    ..Default::default()
                },
            ],
            budgets: vec![
                v1::RateLimitBudget {
                    name: "b6".into(),
                    listener: "v6".into(),
                    rate_per_second: 100,
                    burst: 10,
                    new_flows_only: false,
                    overrides: vec![v1::BudgetOverride {
                        prefix: "2001:db8:1::/48".into(),
                        rate_per_second: 1000,
                        burst: 1000,
                    }],
                },
                v1::RateLimitBudget {
                    name: "b4".into(),
                    listener: "public".into(),
                    rate_per_second: 1000,
                    burst: 50,
                    new_flows_only: true,
                    overrides: vec![v1::BudgetOverride {
                        prefix: "10.1.0.0/16".into(),
                        rate_per_second: 10,
                        burst: 1,
                    }],
                },
            ],
            kernel: Some(v1::KernelPolicy {
                allow: vec!["192.0.2.0/24".into()],
                deny: vec!["2001:db8:dead::/48".into(), "198.51.100.7".into()],
                drop_malformed: true,
                worker_weights: vec![3, 0],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn budgets_become_listener_policies_with_ids_in_budget_order() {
        let p = plan(&snapshot()).unwrap();
        assert_eq!(p.names, vec!["v6", "public"]);
        let (addr, port, v6) = p.listeners[0];
        assert_eq!(port, 443);
        assert_eq!(
            addr,
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(v6.id, 0);
        assert_eq!(v6.flags, CHARGE_ALL_PACKETS);
        assert_eq!(v6.budget, Budget::new(100, 10));
        assert_eq!(v6.stamp, 7);
        let (addr, port, v4) = p.listeners[1];
        assert_eq!((addr, port), (v4_mapped([0, 0, 0, 0]), 8080));
        assert_eq!((v4.id, v4.flags), (1, 0));
    }

    #[test]
    fn prefixes_are_counted_over_128_bits() {
        let p = plan(&snapshot()).unwrap();
        assert_eq!(p.allow, vec![(v4_mapped([192, 0, 2, 0]), 96 + 24)]);
        assert_eq!(p.deny[1], (v4_mapped([198, 51, 100, 7]), 128));
        assert_eq!(p.deny[0].1, 48);
        assert_eq!(p.overrides[0].0, 0, "override of budget 0 (v6)");
        assert_eq!(p.overrides[0].2, 48);
        assert_eq!(
            p.overrides[1],
            (1, v4_mapped([10, 1, 0, 0]), 112, Budget::new(10, 1))
        );
    }

    #[test]
    fn weights_default_to_one_beyond_the_configured_workers() {
        let p = plan(&snapshot()).unwrap();
        assert_eq!(&p.weights.weights[..3], &[3, 0, 1]);
        assert_eq!(p.weights.stamp, 7);
        assert!(p.drop_malformed);
    }

    #[test]
    fn a_bad_prefix_names_its_field() {
        let mut s = snapshot();
        s.kernel.as_mut().unwrap().deny[0] = "10.0.0.1/8".into();
        let e = plan(&s).unwrap_err();
        assert_eq!(e.field, "kernel.deny[0]");
        assert!(e.reason.contains("host bits"), "{e}");
        let mut s = snapshot();
        s.budgets[1].listener = "gone".into();
        assert_eq!(plan(&s).unwrap_err().field, "budgets[1].listener");
    }
}
