//! Metrics: every worker owns its cells (atomics written by one thread, relaxed), the
//! scraper sums them. Per-route and per-cluster cells are looked up by name only when a new
//! snapshot arrives; per request a worker touches only its own cached cells.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::snapshot::RuntimeConfig;

/// Histogram bucket upper bounds, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A counter of one worker's cells: only that worker adds to it (others only read it), so
/// an add is a load and a store, not a locked read-modify-write; with one writer no
/// increment is lost, and a reader sees each value whole.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`; only from the worker that owns the cell.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A latency histogram (cumulative buckets are computed at render time).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let idx = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[idx].add(1);
        self.sum_us.add(us);
    }

    fn add_into(&self, counts: &mut [u64; LATENCY_BUCKETS_US.len() + 1], sum: &mut u64) {
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c += b.get();
        }
        *sum += self.sum_us.get();
    }
}

/// Per-route cells of one worker.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Responses by status class (1xx..5xx), then requests the client abandoned before
    /// any response went out (status 0, nginx's 499): listed in `STATUS_CLASSES`.
    pub status: [Counter; STATUS_CLASSES.len()],
    /// Whole-request latency.
    pub latency: Histogram,
}

/// The `class` label of `omnirelay_requests_total`, by index of [`RouteStats::status`].
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "client_closed"];

impl RouteStats {
    /// Records a finished request.
    pub fn record(&self, status: u16, d: Duration) {
        let class = match status {
            0 => STATUS_CLASSES.len() - 1,
            s => usize::from((s / 100).clamp(1, 5)) - 1,
        };
        self.status[class].add(1);
        self.latency.observe(d);
    }
}

/// Per-cluster cells of one worker.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Upstream attempts (first tries and retries).
    pub attempts: Counter,
    /// Retries.
    pub retries: Counter,
    /// Connect failures.
    pub connect_failures: Counter,
    /// Upstream timeouts.
    pub timeouts: Counter,
    /// New upstream connections.
    pub connections_opened: Counter,
    /// Requests sent on a reused pooled connection.
    pub connections_reused: Counter,
    /// Endpoint ejections by outlier detection.
    pub ejections: Counter,
    /// Requests refused because the cluster had `max_requests` in flight.
    pub overflows: Counter,
    /// Upstream response-head latency.
    pub upstream_latency: Histogram,
}

/// One worker's cells.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Open downstream connections.
    pub connections_active: AtomicU64,
    /// Accepted downstream connections.
    pub connections_total: AtomicU64,
    /// Requests rejected before routing (bad HTTP).
    pub bad_requests: AtomicU64,
    /// Requests no route matched (answered 404).
    pub unrouted: AtomicU64,
    routes: Mutex<BTreeMap<(String, String), Arc<RouteStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
}

impl WorkerStats {
    /// The cells of each `(route, cluster)` of a snapshot, in order: kept ones with their
    /// counts, new ones from zero. Cells of routes the snapshot no longer has are dropped
    /// (their series end; a request of an older snapshot still in flight counts into cells
    /// it holds, unseen). Called once per snapshot version, not per request: workers cache
    /// the result.
    pub fn routes_for<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Arc<RouteStats>> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        keep_only(
            &mut map,
            keys.into_iter().map(|(r, c)| (r.to_owned(), c.to_owned())),
        )
    }

    /// The cells of each cluster of a snapshot, as [`Self::routes_for`].
    pub fn clusters_for<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Arc<ClusterStats>> {
        let mut map = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
        keep_only(&mut map, names.into_iter().map(str::to_owned))
    }
}

/// Leaves in `map` only the entries of `keys` (new ones at their default), returning them
/// in the order of `keys`.
fn keep_only<K: Ord + Clone, V: Default>(
    map: &mut BTreeMap<K, Arc<V>>,
    keys: impl Iterator<Item = K>,
) -> Vec<Arc<V>> {
    let mut old = std::mem::take(map);
    keys.map(|k| {
        let cells = old.remove(&k).unwrap_or_default();
        Arc::clone(map.entry(k).or_insert(cells))
    })
    .collect()
}

/// Every worker's cells plus process-wide gauges; renders Prometheus text.
#[derive(Debug, Default)]
pub struct Metrics {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
    /// Active health checks by cluster: (passed, failed).
    health_checks: Mutex<BTreeMap<String, (u64, u64)>>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Registers a new worker and returns its cells.
    pub fn add_worker(&self) -> Arc<WorkerStats> {
        let w = Arc::new(WorkerStats::default());
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&w));
        w
    }

    /// Counts one active health check of an endpoint of `cluster`.
    pub fn health_checked(&self, cluster: &str, passed: bool) {
        let mut map = self.health_checks.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match map.get_mut(cluster) {
            Some(c) => c,
            None => map.entry(cluster.to_owned()).or_default(),
        };
        if passed {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }

    /// Client connections open now, over every worker.
    pub fn open_connections(&self) -> u64 {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|w| w.connections_active.load(Relaxed))
            .sum()
    }

    /// Prometheus text exposition; `extra` is appended (snapshot gauges and the like).
    /// Only the routes and clusters of `live()`, the running snapshot, are shown (all when
    /// there is none): a worker that has not taken a version yet still holds the cells of
    /// routes it removed, and a sum over some workers only would read as a counter going
    /// back. `live` is asked after the cells are summed: workers only take versions the
    /// holder has published, so any cells dropped meanwhile belong to routes not shown.
    pub fn render(&self, extra: &str, live: impl FnOnce() -> Option<Arc<RuntimeConfig>>) -> String {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::with_capacity(4096);
        out.push_str("# TYPE omnirelay_worker_connections gauge\n");
        for (i, w) in workers.iter().enumerate() {
            let _ = writeln!(
                out,
                "omnirelay_worker_connections{{worker=\"{i}\"}} {}",
                w.connections_active.load(Relaxed)
            );
        }
        // Not `omnirelay_worker_connections_total`: OpenMetrics would read that as the
        // gauge above's family.
        out.push_str("# TYPE omnirelay_worker_connections_accepted_total counter\n");
        for (i, w) in workers.iter().enumerate() {
            let _ = writeln!(
                out,
                "omnirelay_worker_connections_accepted_total{{worker=\"{i}\"}} {}",
                w.connections_total.load(Relaxed)
            );
        }
        let bad: u64 = workers.iter().map(|w| w.bad_requests.load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "# TYPE omnirelay_bad_requests_total counter\nomnirelay_bad_requests_total {bad}"
        );
        let unrouted: u64 = workers.iter().map(|w| w.unrouted.load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "# TYPE omnirelay_requests_unrouted_total counter\nomnirelay_requests_unrouted_total {unrouted}"
        );

        // Sum route cells across workers.
        type RouteSum = (
            [u64; STATUS_CLASSES.len()],
            [u64; LATENCY_BUCKETS_US.len() + 1],
            u64,
        );
        let mut routes: BTreeMap<(String, String), RouteSum> = BTreeMap::new();
        let mut clusters: BTreeMap<String, ([u64; 8], [u64; LATENCY_BUCKETS_US.len() + 1], u64)> =
            BTreeMap::new();
        for w in &workers {
            for (k, s) in w.routes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let e = routes.entry(k.clone()).or_default();
                for (a, b) in e.0.iter_mut().zip(&s.status) {
                    *a += b.get();
                }
                s.latency.add_into(&mut e.1, &mut e.2);
            }
            for (k, s) in w.clusters.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let e = clusters.entry(k.clone()).or_default();
                for (a, b) in e.0.iter_mut().zip([
                    &s.attempts,
                    &s.retries,
                    &s.connect_failures,
                    &s.timeouts,
                    &s.connections_opened,
                    &s.connections_reused,
                    &s.ejections,
                    &s.overflows,
                ]) {
                    *a += b.get();
                }
                s.upstream_latency.add_into(&mut e.1, &mut e.2);
            }
        }
        let live = live();
        let mut counted = self.health_checks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cfg) = &live {
            let live_routes: BTreeSet<(&str, &str)> = cfg.route_keys().collect();
            let live_clusters: BTreeSet<&str> = cfg.clusters.iter().map(|c| &*c.name).collect();
            routes.retain(|(r, c), _| live_routes.contains(&(r.as_str(), c.as_str())));
            clusters.retain(|c, _| live_clusters.contains(c.as_str()));
            // The counts of a cluster gone are dropped (a cluster of that name later
            // starts from zero, as a route's cells do).
            counted.retain(|c, _| live_clusters.contains(c.as_str()));
        }
        let checks = counted.clone();
        drop(counted);
        out.push_str("# TYPE omnirelay_requests_total counter\n");
        for ((route, cluster), (status, _, _)) in &routes {
            for (i, n) in status.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "omnirelay_requests_total{{route=\"{}\",cluster=\"{}\",class=\"{}\"}} {n}",
                    esc(route),
                    esc(cluster),
                    STATUS_CLASSES[i]
                );
            }
        }
        out.push_str("# TYPE omnirelay_request_duration_seconds histogram\n");
        for ((route, cluster), (_, buckets, sum)) in &routes {
            let labels = format!("route=\"{}\",cluster=\"{}\"", esc(route), esc(cluster));
            histogram(
                &mut out,
                "omnirelay_request_duration_seconds",
                &labels,
                buckets,
                *sum,
            );
        }
        let names = [
            "attempts",
            "retries",
            "connect_failures",
            "timeouts",
            "connections_opened",
            "connections_reused",
            "ejections",
            "overflows",
        ];
        for (i, name) in names.iter().enumerate() {
            let _ = writeln!(out, "# TYPE omnirelay_upstream_{name}_total counter");
            for (cluster, (c, _, _)) in &clusters {
                let _ = writeln!(
                    out,
                    "omnirelay_upstream_{name}_total{{cluster=\"{}\"}} {}",
                    esc(cluster),
                    c[i]
                );
            }
        }
        out.push_str("# TYPE omnirelay_upstream_duration_seconds histogram\n");
        for (cluster, (_, buckets, sum)) in &clusters {
            let labels = format!("cluster=\"{}\"", esc(cluster));
            histogram(
                &mut out,
                "omnirelay_upstream_duration_seconds",
                &labels,
                buckets,
                *sum,
            );
        }
        out.push_str("# TYPE omnirelay_health_checks_total counter\n");
        for (cluster, (passed, failed)) in &checks {
            for (result, n) in [("passed", passed), ("failed", failed)] {
                let _ = writeln!(
                    out,
                    "omnirelay_health_checks_total{{cluster=\"{}\",result=\"{result}\"}} {n}",
                    esc(cluster)
                );
            }
        }
        out.push_str("# TYPE omnirelay_route_rate_limited_total counter\n");
        for r in live.iter().flat_map(|cfg| &cfg.routes) {
            if let Some(l) = &r.rate_limit {
                let _ = writeln!(
                    out,
                    "omnirelay_route_rate_limited_total{{route=\"{}\"}} {}",
                    esc(&r.name),
                    l.limited()
                );
            }
        }
        out.push_str("# TYPE omnirelay_upstream_endpoints_unhealthy gauge\n");
        for c in live.iter().flat_map(|cfg| &cfg.clusters) {
            if let Some(h) = c.lb.health() {
                let _ = writeln!(
                    out,
                    "omnirelay_upstream_endpoints_unhealthy{{cluster=\"{}\"}} {}",
                    esc(&c.name),
                    h.down_count()
                );
            }
        }
        let _ = writeln!(
            out,
            "# TYPE omnirelay_access_log_dropped_total counter\nomnirelay_access_log_dropped_total {}",
            self.access_log_dropped.load(Relaxed)
        );
        out.push_str(extra);
        out
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], sum_us: u64) {
    let mut cumulative = 0;
    for (i, n) in buckets.iter().enumerate() {
        cumulative += n;
        let le = LATENCY_BUCKETS_US
            .get(i)
            .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_of_all_workers_are_summed_at_scrape() {
        let m = Metrics::default();
        let (a, b) = (m.add_worker(), m.add_worker());
        let a_routes = a.routes_for([("api", "backend")]);
        let b_routes = b.routes_for([("api", "backend"), ("gone", "backend")]);
        a_routes[0].record(200, Duration::from_micros(300));
        b_routes[0].record(204, Duration::from_millis(2));
        b_routes[0].record(503, Duration::from_millis(20));
        b_routes[1].record(0, Duration::from_millis(1));
        a.clusters_for(["backend"])[0].connect_failures.add(2);
        b.clusters_for(["backend"])[0].overflows.add(4);
        b.clusters_for(["backend"])[0].connect_failures.add(1);
        a.connections_active.store(3, Relaxed);
        a.unrouted.fetch_add(2, Relaxed);
        b.unrouted.fetch_add(1, Relaxed);
        let text = m.render("", || None);
        assert!(
            text.contains(
                "omnirelay_requests_total{route=\"api\",cluster=\"backend\",class=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "omnirelay_requests_total{route=\"api\",cluster=\"backend\",class=\"5xx\"} 1"
        ));
        assert!(text.contains(
            "omnirelay_requests_total{route=\"gone\",cluster=\"backend\",class=\"1xx\"} 0"
        ));
        assert!(text.contains(
            "omnirelay_requests_total{route=\"gone\",cluster=\"backend\",class=\"client_closed\"} 1"
        ));
        assert!(text.contains("omnirelay_upstream_connect_failures_total{cluster=\"backend\"} 3"));
        assert!(text.contains("omnirelay_upstream_overflows_total{cluster=\"backend\"} 4"));
        assert!(text.contains("omnirelay_worker_connections{worker=\"0\"} 3"));
        assert!(text.contains("omnirelay_requests_unrouted_total 3"));
        assert!(text.contains("omnirelay_request_duration_seconds_bucket{route=\"api\",cluster=\"backend\",le=\"0.0005\"} 1"));
        assert!(text.contains("omnirelay_request_duration_seconds_bucket{route=\"api\",cluster=\"backend\",le=\"0.0025\"} 2"));
        assert!(text.contains(
            "omnirelay_request_duration_seconds_count{route=\"api\",cluster=\"backend\"} 3"
        ));
    }

    #[test]
    fn cells_are_kept_by_name_and_dropped_with_their_route() {
        let w = WorkerStats::default();
        let first = w.routes_for([("r", "c"), ("gone", "c")]);
        assert!(!Arc::ptr_eq(&first[0], &first[1]));
        first[0].record(200, Duration::from_millis(1));
        let next = w.routes_for([("new", "c"), ("r", "c")]);
        assert!(Arc::ptr_eq(&first[0], &next[1]), "kept with its counts");
        assert!(!Arc::ptr_eq(&first[1], &next[0]));
        let keys: Vec<_> = w.routes.lock().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [("new".to_owned(), "c".to_owned()), ("r".into(), "c".into())]
        );
        let clusters = w.clusters_for(["a", "b"]);
        let again = w.clusters_for(["b"]);
        assert!(Arc::ptr_eq(&clusters[1], &again[0]));
        assert_eq!(w.clusters.lock().unwrap().len(), 1);
    }
}
