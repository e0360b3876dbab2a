//! Admin HTTP: `/healthz`, `/metrics`, `/control/snapshot`, `/control/history`,
//! `POST /control/reload`, and the HTTP pull of snapshots at `/v1/snapshot`.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    metrics::ControlMetrics,
    publish::{Publisher, ReloadOutcome},
};

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The publisher (current snapshot, store, reload).
    pub publisher: Arc<Publisher>,
    /// Daemon metrics.
    pub metrics: Arc<ControlMetrics>,
    /// The kernel limiter, when `[kernel]` enabled it.
    pub kernel: Option<Arc<super::kernel::KernelService>>,
    /// Asks the reload task to reload and answers with the outcome.
    pub reload: mpsc::Sender<tokio::sync::oneshot::Sender<ReloadOutcome>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/control/snapshot", get(snapshot_info))
        .route("/control/history", get(history))
        .route("/control/reload", post(reload))
        .route("/v1/snapshot", get(pull))
        .with_state(state)
}

async fn healthz(State(s): State<AdminState>) -> Response {
    match s.publisher.current() {
        Some(p) => (StatusCode::OK, format!("ok version={}\n", p.version)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot published yet\n",
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut text = s.metrics.render();
    if let Some(k) = s.kernel.clone() {
        // Map lookups are system calls: off the async workers.
        match tokio::task::spawn_blocking(move || k.render()).await {
            Ok(kernel) => text.push_str(&kernel),
            Err(e) => tracing::error!(error = %e, "rendering the kernel metrics failed"),
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn snapshot_info(State(s): State<AdminState>) -> Response {
    match s.publisher.current() {
        Some(p) => Json(json!({
            "version": p.version,
            "payload_sha256": p.payload_sha256,
            "payload_bytes": p.signed.payload.len(),
            "created_unix_ms": p.created_unix_ms,
            "source": p.source,
            "config_sha256": p.config_sha256,
            "key_id": p.signed.key_id,
            "watchers": s.metrics.watchers.load(Ordering::Relaxed),
            "kernel_version": s.kernel.as_ref().map(|k| k.version.load(Ordering::Relaxed)),
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no snapshot published yet"})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(s): State<AdminState>, Query(q): Query<HistoryQuery>) -> Response {
    let store = Arc::clone(s.publisher.store());
    let limit = q.limit.unwrap_or(20).min(1000);
    match tokio::task::spawn_blocking(move || store.history(limit)).await {
        Ok(Ok(records)) => Json(
            records
                .iter()
                .map(|r| {
                    json!({
                        "version": r.version,
                        "created_unix_ms": r.created_unix_ms,
                        "source": r.source,
                        "config_sha256": r.config_sha256,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn reload(State(s): State<AdminState>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "reload task stopped\n").into_response();
    }
    let Ok(outcome) = rx.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reload task stopped\n").into_response();
    };
    let (status, body) = match outcome {
        ReloadOutcome::Published(v) => (
            StatusCode::OK,
            json!({"outcome": "published", "version": v}),
        ),
        ReloadOutcome::Unchanged(v) => (
            StatusCode::OK,
            json!({"outcome": "unchanged", "version": v}),
        ),
        ReloadOutcome::Invalid(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"outcome": "invalid", "errors": e.errors.iter().map(ToString::to_string).collect::<Vec<_>>()}),
        ),
        ReloadOutcome::Failed(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"outcome": "failed", "error": why}),
        ),
    };
    (status, Json(body)).into_response()
}

async fn pull(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(p) = s.publisher.current() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot published yet\n",
        )
            .into_response();
    };
    let etag = format!("\"{}\"", p.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    s.metrics.http_pulls.fetch_add(1, Ordering::Relaxed);
    (
        [
            (header::CONTENT_TYPE, "application/x-protobuf".to_owned()),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("x-omnirelay-version"),
                p.version.to_string(),
            ),
        ],
        p.encoded.clone(),
    )
        .into_response()
}
