//! OmniRelay's wire contracts, generated from `proto/omnirelay/v1/*.proto`.
//!
//! - [`v1::Snapshot`] and [`v1::SignedSnapshot`]: the compiled, signed configuration.
//! - [`v1::control_plane_server`] / [`v1::control_plane_client`]: the `Watch`/`Get` API.
//!
//! Signing and verification live with their users (the control daemon signs, the data
//! plane verifies); [`SIGNING_CONTEXT`] is the domain separator both must use.

/// Generated code for package `omnirelay.v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("omnirelay.v1");
}

/// The names of the features a snapshot may require (`required_capabilities`): the
/// control daemon names those a config uses, a data plane refuses a snapshot requiring one
/// it does not know.
pub mod capability {
    /// HTTP/1.1 proxying (every snapshot requires it).
    pub const HTTP1: &str = "http1";
    /// Round-robin balancing.
    pub const LB_ROUND_ROBIN: &str = "lb.round_robin";
    /// Least-request balancing.
    pub const LB_LEAST_REQUEST: &str = "lb.least_request";
    /// Ring-hash balancing.
    pub const LB_RING_HASH: &str = "lb.ring_hash";
    /// Rendezvous balancing.
    pub const LB_RENDEZVOUS: &str = "lb.rendezvous";
    /// A listener's `replace_request_id`.
    pub const LISTENER_REPLACE_REQUEST_ID: &str = "listener.replace_request_id";
    /// A listener's `merge_slashes`.
    pub const LISTENER_MERGE_SLASHES: &str = "listener.merge_slashes";
    /// A route's prefix or host rewrite.
    pub const ROUTE_REWRITE: &str = "route.rewrite";
    /// A cluster's `max_requests` circuit breaker.
    pub const CLUSTER_MAX_REQUESTS: &str = "cluster.max_requests";
    /// A route's request or response header edits.
    pub const ROUTE_HEADER_EDITS: &str = "route.header_edits";
    /// A route's own fixed response.
    pub const ROUTE_DIRECT_RESPONSE: &str = "route.direct_response";
    /// A route's own redirect.
    pub const ROUTE_REDIRECT: &str = "route.redirect";
    /// A route's split over weighted clusters.
    pub const ROUTE_WEIGHTED_CLUSTERS: &str = "route.weighted_clusters";
    /// A cluster's active health checks.
    pub const CLUSTER_HEALTH_CHECK: &str = "cluster.health_check";
    /// A route's rate limit.
    pub const ROUTE_RATE_LIMIT: &str = "route.rate_limit";
    /// A TCP health check.
    pub const CLUSTER_HEALTH_CHECK_TCP: &str = "cluster.health_check_tcp";
    /// A health check's expected statuses.
    pub const CLUSTER_HEALTH_CHECK_STATUSES: &str = "cluster.health_check_statuses";
    /// A split picked by the route's hash.
    pub const ROUTE_SPLIT_BY_HASH: &str = "route.split_by_hash";
    /// Retries on gateway errors or named statuses.
    pub const ROUTE_RETRY_STATUSES: &str = "route.retry_statuses";
    /// Every one this release's data plane implements.
    pub const ALL: &[&str] = &[
        HTTP1,
        LB_ROUND_ROBIN,
        LB_LEAST_REQUEST,
        LB_RING_HASH,
        LB_RENDEZVOUS,
        LISTENER_REPLACE_REQUEST_ID,
        LISTENER_MERGE_SLASHES,
        ROUTE_REWRITE,
        CLUSTER_MAX_REQUESTS,
        ROUTE_HEADER_EDITS,
        ROUTE_DIRECT_RESPONSE,
        ROUTE_REDIRECT,
        ROUTE_WEIGHTED_CLUSTERS,
        CLUSTER_HEALTH_CHECK,
        ROUTE_RATE_LIMIT,
        CLUSTER_HEALTH_CHECK_TCP,
        CLUSTER_HEALTH_CHECK_STATUSES,
        ROUTE_SPLIT_BY_HASH,
        ROUTE_RETRY_STATUSES,
    ];
}

/// Bounds of snapshot values that the control daemon checks when it reads the config and
/// each data plane checks again when it takes a snapshot (whatever signed it).
pub mod limits {
    /// The largest body of a route's `direct_response`.
    pub const MAX_DIRECT_RESPONSE_BODY: usize = 64 * 1024;
    /// The status codes a redirect may have.
    pub const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];
    /// Clusters one route may split its requests over.
    pub const MAX_WEIGHTED_CLUSTERS: usize = 64;
    /// The largest weight of a cluster in a split.
    pub const MAX_SPLIT_WEIGHT: u32 = 10_000;
    /// The shortest interval between health checks of one endpoint.
    pub const MIN_HEALTH_CHECK_INTERVAL_MS: u32 = 100;
    /// The shortest health check timeout.
    pub const MIN_HEALTH_CHECK_TIMEOUT_MS: u32 = 10;
    /// The largest health check threshold.
    pub const MAX_HEALTH_CHECK_THRESHOLD: u32 = 100;
    /// Statuses one route's retry policy may name.
    pub const MAX_RETRIABLE_STATUSES: usize = 32;
    /// The statuses a retry policy may name: those of failures.
    pub const RETRIABLE_STATUSES: std::ops::RangeInclusive<u16> = 400..=599;
    /// Ranges of statuses one health check may expect.
    pub const MAX_EXPECTED_STATUS_RANGES: usize = 32;
    /// The statuses a health check may expect: final ones (a check reads past interim
    /// 1xx responses, so expecting one could never pass).
    pub const EXPECTABLE_STATUSES: std::ops::RangeInclusive<u16> = 200..=599;
    /// The highest rate (and burst) of a route's rate limit, requests per second.
    pub const MAX_ROUTE_RATE: u32 = 10_000_000;
}

/// Prefix of the signed message: the signature covers `SIGNING_CONTEXT || payload`, so a
/// signature made for another purpose with the same key never verifies as a snapshot.
pub const SIGNING_CONTEXT: &[u8] = b"omnirelay.snapshot.v1\0";

/// The message that is signed for `payload`.
pub fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(payload);
    msg
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn snapshot_round_trips_through_its_encoding() {
        let snap = v1::Snapshot {
            version: 7,
            source: "omnirelay.toml".into(),
            clusters: vec![v1::Cluster {
                name: "api".into(),
                lb_policy: v1::LbPolicy::RingHash as i32,
                endpoints: vec![v1::Endpoint {
                    address: "127.0.0.1:8080".into(),
                    weight: 3,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = snap.encode_to_vec();
        let back = v1::Snapshot::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.clusters[0].lb_policy(), v1::LbPolicy::RingHash);
    }

    #[test]
    fn signed_message_is_prefixed_with_the_context() {
        let msg = signed_message(b"abc");
        assert!(msg.starts_with(SIGNING_CONTEXT));
        assert!(msg.ends_with(b"abc"));
    }
}
