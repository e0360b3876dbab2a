//! The control daemon's own metrics, rendered in Prometheus text format on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters and gauges of the daemon.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Reloads that published a new version.
    pub reloads_published: AtomicU64,
    /// Reloads whose config was identical to the published one.
    pub reloads_unchanged: AtomicU64,
    /// Reloads rejected by validation.
    pub reloads_invalid: AtomicU64,
    /// Reloads that failed for another reason (source or store unavailable).
    pub reloads_failed: AtomicU64,
    /// Errors in the last rejected config.
    pub last_config_errors: AtomicU64,
    /// Version currently published.
    pub snapshot_version: AtomicU64,
    /// Open gRPC Watch streams.
    pub watchers: AtomicU64,
    /// Snapshots served over HTTP pull.
    pub http_pulls: AtomicU64,
    /// Snapshots streamed to a data plane that said it lacks a capability they require.
    pub unsupported_sends: AtomicU64,
    /// gRPC connections refused at the TLS handshake, or over the handshake cap (`[control.tls]`).
    pub tls_handshake_failures: AtomicU64,
    /// Reloads whose `[control.tls]` files did not load (the running certificate stayed).
    pub tls_reload_failures: AtomicU64,
    /// Microseconds the last published snapshot took: load, validate, compile, sign, store.
    pub last_build_us: AtomicU64,
}

impl ControlMetrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP omnirelay_control_reloads_total Config reloads by outcome.\n");
        out.push_str("# TYPE omnirelay_control_reloads_total counter\n");
        for (outcome, v) in [
            ("published", &self.reloads_published),
            ("unchanged", &self.reloads_unchanged),
            ("invalid", &self.reloads_invalid),
            ("failed", &self.reloads_failed),
        ] {
            out.push_str(&format!(
                "omnirelay_control_reloads_total{{outcome=\"{outcome}\"}} {}\n",
                g(v)
            ));
        }
        for (name, help, kind, v) in [
            (
                "omnirelay_control_last_config_errors",
                "Errors found in the last rejected config.",
                "gauge",
                &self.last_config_errors,
            ),
            (
                "omnirelay_control_snapshot_version",
                "Version of the published snapshot.",
                "gauge",
                &self.snapshot_version,
            ),
            (
                "omnirelay_control_watchers",
                "Open gRPC Watch streams.",
                "gauge",
                &self.watchers,
            ),
            (
                "omnirelay_control_last_build_microseconds",
                "Time to load, validate, compile, sign and store the last published snapshot.",
                "gauge",
                &self.last_build_us,
            ),
            (
                "omnirelay_control_http_pulls_total",
                "Snapshots served over HTTP pull.",
                "counter",
                &self.http_pulls,
            ),
            (
                "omnirelay_control_unsupported_snapshots_total",
                "Snapshots streamed to a data plane that lacks a capability they require (it refuses them and keeps its last good snapshot).",
                "counter",
                &self.unsupported_sends,
            ),
            (
                "omnirelay_control_tls_handshake_failures_total",
                "gRPC connections refused at the TLS handshake (no or an untrusted client certificate, a plaintext client, a timeout, too many handshakes at once).",
                "counter",
                &self.tls_handshake_failures,
            ),
            (
                "omnirelay_control_tls_reload_failures_total",
                "Reloads whose [control.tls] files did not load (the running certificate stayed).",
                "counter",
                &self.tls_reload_failures,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                g(v)
            ));
        }
        out
    }
}
