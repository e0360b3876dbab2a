//! Passive outlier detection: eject endpoints after consecutive failures.
//!
//! Each worker watches the outcomes of its own requests (no shared counters). An endpoint
//! is ejected when `consecutive_failures` failures arrive with no success in between. Its
//! k-th ejection lasts `min(base_ejection_time * k, max_ejection_time)`; when that has
//! passed it is un-ejected (at the next `refresh`/`report`/pick) with its failure count
//! reset. The multiplier `k` decays by one for every whole `max_ejection_time` the endpoint
//! then stays un-ejected, so an endpoint that recovered for good starts over at the base
//! time. Outcomes reported for an endpoint while it is ejected (requests that were already
//! in flight) are ignored.
//!
//! **Cap.** An ejection is made only if afterwards at most `max_ejection_percent` of the
//! endpoints are ejected (with 50% and 3 endpoints, at most one; with 1 endpoint, none).
//! Refused ejections are counted in [`OutlierStats::ejections_capped`], and the endpoint
//! keeps its failure count, so its next failure tries again.

use std::time::{Duration, Instant};

use super::EndpointId;

/// What went wrong with a request to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection (or TLS handshake) to the endpoint failed.
    ConnectFailure,
    /// The endpoint did not answer in time.
    Timeout,
    /// The endpoint answered with a 5xx status.
    Status5xx,
}

/// The result of one request, as far as endpoint health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The endpoint handled the request (any non-5xx answer).
    Success,
    /// The request failed in a way that counts against the endpoint.
    Failure(FailureKind),
}

/// Outlier detection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// The first ejection's duration, multiplied by the ejection count (default 30 s).
    pub base_ejection_time: Duration,
    /// The longest ejection (default 300 s).
    pub max_ejection_time: Duration,
    /// The most endpoints ejected at once, in percent of the cluster (default 50; values
    /// above 100 act as 100).
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutlierStats {
    /// Ejections since the detector was created.
    pub ejections_total: u64,
    /// Endpoints ejected right now (as of the last time passed in).
    pub currently_ejected: u32,
    /// Ejections refused because of `max_ejection_percent`.
    pub ejections_capped: u64,
}

#[derive(Debug, Clone, Default)]
struct Health {
    consecutive_failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
    /// When the last ejection ended; the start of the multiplier's decay.
    unejected_at: Option<Instant>,
}

/// Per-worker outlier state for one cluster's endpoints.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Vec<Health>,
    /// The earliest `ejected_until`, so `refresh` scans only when something expires.
    next_expiry: Option<Instant>,
    stats: OutlierStats,
}

impl OutlierDetector {
    /// A detector for `endpoints` endpoints, all healthy.
    pub fn new(config: OutlierConfig, endpoints: usize) -> Self {
        Self {
            config,
            endpoints: vec![Health::default(); endpoints],
            next_expiry: None,
            stats: OutlierStats::default(),
        }
    }

    /// A detector for `n` endpoints where endpoint `i` keeps the state endpoint `from(i)`
    /// has here (an endpoint list changed: the endpoints that stay keep their ejections
    /// and failure counts, new ones start healthy).
    pub fn remapped(&self, n: usize, from: impl Fn(usize) -> Option<usize>) -> Self {
        let endpoints: Vec<Health> = (0..n)
            .map(|i| {
                from(i)
                    .and_then(|j| self.endpoints.get(j))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let ejected = endpoints.iter().filter_map(|h| h.ejected_until);
        Self {
            config: self.config.clone(),
            next_expiry: ejected.clone().min(),
            stats: OutlierStats {
                currently_ejected: ejected.count() as u32,
                ..self.stats
            },
            endpoints,
        }
    }

    /// New settings (a snapshot changed them), keeping every endpoint's state: they apply
    /// from the next outcome reported.
    pub fn set_config(&mut self, config: OutlierConfig) {
        self.config = config;
    }

    /// The settings in force.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> OutlierStats {
        self.stats
    }

    /// Whether `id` is ejected as of the last time passed in (false if out of range).
    pub fn is_ejected(&self, id: EndpointId) -> bool {
        self.endpoints
            .get(id.index())
            .is_some_and(|h| h.ejected_until.is_some())
    }

    /// When the current ejection of `id` ends, if it is ejected.
    pub fn ejected_until(&self, id: EndpointId) -> Option<Instant> {
        self.endpoints.get(id.index()).and_then(|h| h.ejected_until)
    }

    /// Failures of `id` since its last success (or un-ejection).
    pub fn consecutive_failures(&self, id: EndpointId) -> u32 {
        self.endpoints
            .get(id.index())
            .map_or(0, |h| h.consecutive_failures)
    }

    /// Un-ejects every endpoint whose ejection has ended by `now`.
    pub fn refresh(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| now < t) {
            return;
        }
        let mut next = None;
        for h in &mut self.endpoints {
            match h.ejected_until {
                Some(until) if until <= now => {
                    h.ejected_until = None;
                    h.consecutive_failures = 0;
                    h.unejected_at = Some(until);
                    self.stats.currently_ejected -= 1;
                }
                Some(until) => next = Some(next.map_or(until, |n: Instant| n.min(until))),
                None => {}
            }
        }
        self.next_expiry = next;
    }

    /// Records the outcome of a request to `id` at `now`. Returns true if this report
    /// ejected the endpoint. Unknown ids and endpoints already ejected are ignored.
    pub fn report(&mut self, id: EndpointId, outcome: Outcome, now: Instant) -> bool {
        self.refresh(now);
        let threshold = self.config.consecutive_failures;
        let Some(h) = self.endpoints.get_mut(id.index()) else {
            return false;
        };
        if h.ejected_until.is_some() {
            return false;
        }
        match outcome {
            Outcome::Success => {
                h.consecutive_failures = 0;
                false
            }
            Outcome::Failure(_) => {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                if threshold == 0 || h.consecutive_failures < threshold {
                    return false;
                }
                self.try_eject(id.index(), now)
            }
        }
    }

    fn try_eject(&mut self, index: usize, now: Instant) -> bool {
        let allowed = u64::from(self.config.max_ejection_percent.min(100));
        let after = u64::from(self.stats.currently_ejected) + 1;
        if after * 100 > allowed * self.endpoints.len() as u64 {
            self.stats.ejections_capped += 1;
            return false;
        }
        let config = &self.config;
        let h = &mut self.endpoints[index];
        if let Some(since) = h.unejected_at {
            let healthy = now.saturating_duration_since(since).as_nanos();
            let decay = healthy
                .checked_div(config.max_ejection_time.as_nanos())
                .unwrap_or(0);
            h.times_ejected = h
                .times_ejected
                .saturating_sub(decay.try_into().unwrap_or(u32::MAX));
        }
        h.times_ejected = h.times_ejected.saturating_add(1);
        let duration = config
            .base_ejection_time
            .saturating_mul(h.times_ejected)
            .min(config.max_ejection_time);
        let until = now.checked_add(duration).unwrap_or(now);
        h.ejected_until = Some(until);
        h.consecutive_failures = 0;
        self.next_expiry = Some(self.next_expiry.map_or(until, |t| t.min(until)));
        self.stats.currently_ejected += 1;
        self.stats.ejections_total += 1;
        true
    }
}

#[cfg(test)]
mod tests;
