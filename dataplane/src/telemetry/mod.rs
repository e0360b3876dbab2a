//! Telemetry of the data plane: per-worker metric cells aggregated at scrape time, and the
//! access log written off the hot path.

mod access_log;
mod metrics;

pub use access_log::{AccessLog, AccessRecord};
pub use metrics::{ClusterStats, LATENCY_BUCKETS_US, Metrics, RouteStats, WorkerStats};
