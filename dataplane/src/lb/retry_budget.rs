//! A retry budget: retries may add at most a fixed share to the request load.
//!
//! Following Finagle's and Linkerd's retry budgets, over a sliding window of
//! `window_secs` one-second buckets a retry is allowed iff, counting it,
//!
//! ```text
//! retries_in_window <= budget_percent / 100 * requests_in_window + min_retries_per_second * window_secs
//! ```
//!
//! (evaluated exactly in integers). `requests` are original requests (call
//! [`RetryBudget::record_request`] once per request, not per attempt) and `retries` the
//! retries granted by [`RetryBudget::try_acquire_retry`]. The `min_retries_per_second`
//! reserve lets a quiet or just-started worker retry at all: with the defaults (20%, 3/s,
//! 10 s) a worker that has seen 100 requests in the window may retry 20 + 30 = 50 times.
//! Buckets older than the window drop out as time passes, refilling the budget.
//!
//! Time is the caller's `Instant`; bucket `n` covers `[origin + n s, origin + (n+1) s)`
//! from the instant the budget was created. An instant earlier than one already seen counts
//! in the latest bucket (time never runs backwards here).

use std::time::Instant;

/// Retry budget settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a percentage of requests in the window (default 20; may exceed
    /// 100).
    pub budget_percent: u32,
    /// Retries always allowed per second of window, whatever the request count (default 3).
    pub min_retries_per_second: u32,
    /// The window length in one-second buckets (default 10; 0 acts as 1).
    pub window_secs: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            budget_percent: 20,
            min_retries_per_second: 3,
            window_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The second (since origin) this bucket counts; `u64::MAX` for never used.
    second: u64,
    requests: u64,
    retries: u64,
}

const UNUSED: Bucket = Bucket {
    second: u64::MAX,
    requests: 0,
    retries: 0,
};

/// Per-worker retry budget for one cluster (or route).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    origin: Instant,
    latest: u64,
    buckets: Vec<Bucket>,
}

impl RetryBudget {
    /// An empty budget whose first bucket starts at `now`.
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        let window = config.window_secs.max(1) as usize;
        Self {
            config,
            origin: now,
            latest: 0,
            buckets: vec![UNUSED; window],
        }
    }

    /// The settings.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Counts one original request at `now`.
    pub fn record_request(&mut self, now: Instant) {
        let bucket = self.bucket(now);
        bucket.requests = bucket.requests.saturating_add(1);
    }

    /// Takes one retry from the budget if it allows one at `now`; false means do not
    /// retry (and nothing was taken).
    pub fn try_acquire_retry(&mut self, now: Instant) -> bool {
        if self.available(now) == 0 {
            return false;
        }
        let bucket = self.bucket(now);
        bucket.retries = bucket.retries.saturating_add(1);
        true
    }

    /// How many retries the budget would grant at `now`.
    pub fn available(&self, now: Instant) -> u64 {
        let (requests, retries) = self.window_totals(now);
        let window = self.buckets.len() as u64;
        // Everything in hundredths of a retry, so 20% of 7 requests is 1.4 retries.
        let allowance = u128::from(self.config.budget_percent) * u128::from(requests)
            + u128::from(self.config.min_retries_per_second) * u128::from(window) * 100;
        let whole = u64::try_from(allowance / 100).unwrap_or(u64::MAX);
        whole.saturating_sub(retries)
    }

    /// `(requests, retries)` counted in the window ending at `now`.
    pub fn window_totals(&self, now: Instant) -> (u64, u64) {
        let current = self.second(now);
        let window = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.second <= current && current - b.second < window)
            .fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries))
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin)
            .as_secs()
            .max(self.latest)
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let second = self.second(now);
        self.latest = second;
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(second % len) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                requests: 0,
                retries: 0,
            };
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    fn drain(b: &mut RetryBudget, now: Instant) -> u32 {
        let mut granted = 0;
        while b.try_acquire_retry(now) {
            granted += 1;
            assert!(granted <= 100_000, "budget never ran out");
        }
        granted
    }

    #[test]
    fn a_burst_gets_the_percentage_plus_the_reserve() {
        let t = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t);
        for _ in 0..100 {
            b.record_request(t);
        }
        assert_eq!(b.available(t), 50);
        assert_eq!(drain(&mut b, t + S / 2), 20 + 3 * 10);
        assert_eq!(b.window_totals(t), (100, 50));
        // More requests earn more retries: 20% of 10 is 2.
        for _ in 0..10 {
            b.record_request(t + S);
        }
        assert_eq!(drain(&mut b, t + S), 2);
    }

    #[test]
    fn fractions_accumulate_exactly() {
        let t = Instant::now();
        let config = RetryBudgetConfig {
            min_retries_per_second: 0,
            ..RetryBudgetConfig::default()
        };
        let mut b = RetryBudget::new(config, t);
        let mut granted = 0;
        for _ in 0..23 {
            b.record_request(t);
            granted += drain(&mut b, t);
        }
        assert_eq!(granted, 4); // at requests 5, 10, 15 and 20
        assert!(!b.try_acquire_retry(t));
    }

    #[test]
    fn an_idle_worker_still_gets_the_reserve() {
        let t = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t);
        assert_eq!(drain(&mut b, t), 30);
    }

    #[test]
    fn old_buckets_slide_out_of_the_window() {
        let t = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t);
        for _ in 0..100 {
            b.record_request(t);
        }
        assert_eq!(drain(&mut b, t), 50);
        // Still inside the 10 s window at 9.9 s: nothing back.
        assert!(!b.try_acquire_retry(t + 9 * S + S * 9 / 10));
        // At 10 s the first bucket has left: the requests and the retries with it.
        assert_eq!(b.window_totals(t + 10 * S), (0, 0));
        assert_eq!(drain(&mut b, t + 10 * S), 30);
        // A bucket index reused after a full lap starts from zero.
        b.record_request(t + 20 * S);
        assert_eq!(b.window_totals(t + 20 * S), (1, 0));
    }

    #[test]
    fn spread_load_is_summed_over_the_window() {
        let t = Instant::now();
        let config = RetryBudgetConfig {
            min_retries_per_second: 0,
            ..RetryBudgetConfig::default()
        };
        let mut b = RetryBudget::new(config, t);
        for sec in 0..10u32 {
            for _ in 0..10 {
                b.record_request(t + sec * S);
            }
        }
        assert_eq!(b.window_totals(t + 9 * S), (100, 0));
        assert_eq!(b.available(t + 9 * S), 20);
        assert_eq!(b.available(t + 14 * S), 10); // seconds 5..=9 remain
    }

    #[test]
    fn earlier_instants_count_in_the_latest_bucket() {
        let t = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t + 5 * S);
        b.record_request(t); // before the origin: second 0
        b.record_request(t + 20 * S); // second 15
        b.record_request(t + 19 * S); // late report: still second 15
        assert_eq!(b.window_totals(t + 20 * S), (2, 0));
        let zero = RetryBudgetConfig {
            window_secs: 0,
            ..RetryBudgetConfig::default()
        };
        let one = RetryBudget::new(zero, t);
        assert_eq!(one.available(t), 3);
        assert_eq!(one.config().window_secs, 0);
    }
}
