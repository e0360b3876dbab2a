//! Scenario `http1-large-body`: `http1-keepalive`'s machinery (same proxies, pinning,
//! warm-up, alternating runs, medians and ratios) with large bodies: GETs of a 1 MiB
//! response, then POSTs of a 1 MiB request body that the upstream reads to its end before
//! answering 3 bytes. Per proxy: CPU µs per request and throughput (body bytes through the
//! proxy per second, MB/s) beside requests/s and latency. No memory test.
//!
//! Every proxy streams bodies: nginx is configured with `proxy_request_buffering off` and
//! `proxy_max_temp_file_size 0` (its defaults would spool request and response bodies
//! through temp files), haproxy, Envoy and OmniRelay stream by default. Buffers are 64 KiB
//! where the proxy has the knob (nginx, haproxy), like OmniRelay's reads; Envoy keeps its
//! defaults.

use serde_json::{Value, json};

use super::{
    configs,
    keepalive::{self, Case, Plan, Spec},
    peers::Binaries,
};

pub const NAME: &str = "http1-large-body";

/// The body size, both directions.
pub const BODY: usize = 1024 * 1024;

/// wrk's timeout per response. Its default, 2 s, is shorter than the slowest of 64
/// concurrent 1 MiB transfers when other work shares the load core (seen here), which
/// would fail a proxy for the machine's load; 10 s still catches a stalled transfer.
pub const WRK_TIMEOUT_S: u64 = 10;

/// Runs the scenario; returns its JSON object for the result file.
pub fn run(plan: &Plan, bins: &Binaries) -> anyhow::Result<Value> {
    let plan = Plan {
        bodies: vec![BODY],
        idle_conns: 0,
        ..plan.clone()
    };
    let spec = Spec {
        name: NAME,
        cases: vec![Case::get(BODY), Case::post(BODY)],
        large_bodies: true,
        idle_conns: 0,
        wrk_timeout_s: Some(WRK_TIMEOUT_S),
        knobs: json!({
            "upload_bytes": BODY,
            "wrk_timeout_s": WRK_TIMEOUT_S,
            "peer_settings": {
                "nginx": format!(
                    "worker_processes 1, upstream keepalive 64, access_log off, {}",
                    configs::NGINX_LARGE_BODIES
                ),
                "haproxy": format!(
                    "nbthread 1, http-reuse safe (default), no logging, {}",
                    configs::HAPROXY_LARGE_BODIES
                ),
                "envoy": "--concurrency 1, no access log",
            },
        }),
    };
    keepalive::run_spec(&spec, &plan, bins)
}
