//! The data plane's admin HTTP server (off the hot path, on its own thread): `/metrics`,
//! `/healthz` (503 before the first snapshot and while draining), `/snapshot` and
//! `/clusters` (each cluster's endpoints and what active health checks found).

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::{
    lb::Policy,
    proxy::Drain,
    snapshot::{HealthCheckRt, Probe, SnapshotHolder},
    telemetry::Metrics,
};

#[derive(Clone)]
struct AdminState {
    holder: Arc<SnapshotHolder>,
    metrics: Arc<Metrics>,
    drivers: Arc<Vec<&'static str>>,
    drain: Arc<Drain>,
}

/// Prometheus text for the snapshot state.
fn snapshot_metrics(holder: &SnapshotHolder) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE omnirelay_snapshot_version gauge\nomnirelay_snapshot_version {}",
        holder.version()
    );
    let _ = writeln!(
        out,
        "# TYPE omnirelay_snapshot_applied_total counter\nomnirelay_snapshot_applied_total {}",
        holder.applied()
    );
    out.push_str("# TYPE omnirelay_snapshot_rejected_total counter\n");
    for (reason, n) in holder.rejected() {
        let _ = writeln!(
            out,
            "omnirelay_snapshot_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out
}

/// Serves the admin API on `addr` from a new thread; returns once it is listening.
pub fn spawn(
    addr: SocketAddr,
    holder: Arc<SnapshotHolder>,
    metrics: Arc<Metrics>,
    drivers: Vec<&'static str>,
    drain: Arc<Drain>,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let state = AdminState {
        holder,
        metrics,
        drivers: Arc::new(drivers),
        drain,
    };
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("admin runtime: {e}"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("admin listener: {e}"),
                };
                let app = Router::new()
                    .route("/metrics", get(metrics_handler))
                    .route("/healthz", get(healthz))
                    .route("/snapshot", get(snapshot))
                    .route("/clusters", get(clusters))
                    .with_state(state);
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("admin server: {e}");
                }
            });
        })?;
    Ok(bound)
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics
            .render(&snapshot_metrics(&s.holder), || s.holder.current()),
    )
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    // Draining: a load balancer in front stops sending new connections.
    match s.holder.version() {
        _ if s.drain.is_announced() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned()),
        0 => (StatusCode::SERVICE_UNAVAILABLE, "no snapshot\n".to_owned()),
        v => (StatusCode::OK, format!("ok version={v}\n")),
    }
}

async fn snapshot(State(s): State<AdminState>) -> impl IntoResponse {
    let rejected: serde_json::Map<String, serde_json::Value> = s
        .holder
        .rejected()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    Json(json!({
        "version": s.holder.version(),
        "applied": s.holder.applied(),
        "rejected": rejected,
        "workers": s.drivers.len(),
        "draining": s.drain.is_draining(),
        "io_drivers": *s.drivers,
    }))
}

/// How a cluster's endpoints are checked, as `/clusters` shows it.
fn check_json(h: &HealthCheckRt) -> serde_json::Value {
    let mut out = json!({
        "interval_ms": h.interval.as_millis(),
        "timeout_ms": h.timeout.as_millis(),
        "unhealthy_threshold": h.unhealthy_threshold,
        "healthy_threshold": h.healthy_threshold,
    });
    out["protocol"] = match &h.probe {
        Probe::Http {
            path,
            host,
            expected,
        } => {
            out["path"] = json!(path);
            out["host"] = json!(host);
            let ranges = expected.iter().map(|&(lo, hi)| match lo == hi {
                true => lo.to_string(),
                false => format!("{lo}-{hi}"),
            });
            out["expected_statuses"] = ranges.collect();
            json!("http")
        }
        Probe::Tcp => json!("tcp"),
    };
    out
}

/// The running snapshot's clusters: policy, health check (or null) and endpoints
/// (address, weight and, for a health-checked cluster, `health`: `in`, `out` when its
/// checks took it out, or `pending` while it waits out for its first check).
/// Outlier ejections are each worker's own and not shown (see the metrics).
async fn clusters(State(s): State<AdminState>) -> impl IntoResponse {
    let body = s.holder.peek(|cfg| {
        let clusters: Vec<serde_json::Value> = cfg
            .into_iter()
            .flat_map(|cfg| &cfg.clusters)
            .map(|c| {
                let health = c.lb.health();
                let endpoints: Vec<serde_json::Value> =
                    c.lb.ids()
                        .map(|id| {
                            let state = health.map(|h| h.get(id.index()).name());
                            json!({
                                "address": c.lb.addr(id).map(|a| a.to_string()),
                                "weight": c.lb.weight(id),
                                "health": state,
                            })
                        })
                        .collect();
                json!({
                    "name": &*c.name,
                    "policy": policy_name(c.lb.policy()),
                    "health_checked": c.health_check.is_some(),
                    "health_check": c.health_check.as_ref().map(check_json),
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({
            "version": cfg.map_or(0, |c| c.version),
            "clusters": clusters,
        })
    });
    Json(body)
}

/// A policy as the config names it.
fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::RoundRobin => "round_robin",
        Policy::LeastRequest => "least_request",
        Policy::RingHash => "ring_hash",
        Policy::Rendezvous => "rendezvous",
    }
}
