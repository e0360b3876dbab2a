//! A route's request rate limit, shared by every worker of a data plane (Envoy's local
//! rate limit): the generic cell rate algorithm on one atomic. Sans-IO: time is the
//! caller's `Instant`.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Instant,
};

/// A token bucket of `burst` requests refilled at `rate` a second, kept as the theoretical
/// arrival time of the next request (GCRA): a request is admitted when that time is at
/// most `burst - 1` intervals ahead of now, and moves it one interval on.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    burst: u32,
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst - 1` intervals.
    tolerance: u64,
    /// The time the nanoseconds count from.
    base: Instant,
    /// The theoretical arrival time of the next request, in nanoseconds since `base`.
    next: AtomicU64,
    /// Requests refused.
    limited: AtomicU64,
}

impl RateLimiter {
    /// `rate` requests a second with `burst` at once (both at least 1), counting from
    /// `base`. The time between requests is kept in whole nanoseconds (rounded down: a
    /// rate of millions a second runs up to 1% over).
    pub fn new(rate: u32, burst: u32, base: Instant) -> Self {
        let (rate, burst) = (rate.max(1), burst.max(1));
        let interval = 1_000_000_000 / u64::from(rate);
        RateLimiter {
            rate,
            burst,
            interval,
            tolerance: interval * u64::from(burst - 1),
            base,
            next: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// A limiter of `rate` and `burst` that goes on from `before` (the same route's under
    /// its old limit): what that one admitted lately still counts, so a new limit does not
    /// start with a full burst, and its count of refusals carries on.
    pub fn following(rate: u32, burst: u32, before: &RateLimiter) -> Self {
        let next = RateLimiter::new(rate, burst, before.base);
        next.next.store(before.next.load(Relaxed), Relaxed);
        next.limited.store(before.limited(), Relaxed);
        next
    }

    /// Whether a request at `now` is within the limit (it takes its place) or over it
    /// (it is counted).
    pub fn admit(&self, now: Instant) -> bool {
        // Nanoseconds fit in u64 for 584 years of uptime.
        let now = now.saturating_duration_since(self.base).as_nanos() as u64;
        let admitted = self
            .next
            .fetch_update(Relaxed, Relaxed, |next| {
                let next = next.max(now);
                (next - now <= self.tolerance).then_some(next + self.interval)
            })
            .is_ok();
        if !admitted {
            self.limited.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// `(rate, burst)`.
    pub fn config(&self) -> (u32, u32) {
        (self.rate, self.burst)
    }

    /// Requests refused so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RateLimiter;

    #[test]
    fn a_burst_goes_at_once_and_then_the_rate() {
        let t0 = Instant::now();
        let l = RateLimiter::new(10, 3, t0);
        let admitted = (0..5).filter(|_| l.admit(t0)).count();
        assert_eq!(admitted, 3, "the burst");
        assert_eq!(l.limited(), 2);
        // 100 ms later one more place, not two.
        let later = t0 + Duration::from_millis(100);
        assert!(l.admit(later));
        assert!(!l.admit(later));
        // A second at rest refills the whole burst, no more.
        let rested = later + Duration::from_secs(1);
        assert_eq!((0..5).filter(|_| l.admit(rested)).count(), 3);
        // Over ten seconds at 50 a second, about 10 a second get through.
        let mut got = 0;
        let start = rested + Duration::from_secs(1);
        for i in 0..500u64 {
            if l.admit(start + Duration::from_millis(20 * i)) {
                got += 1;
            }
        }
        assert!((100..=103).contains(&got), "{got}");
        assert_eq!(l.config(), (10, 3));
    }

    #[test]
    fn workers_share_one_budget() {
        let t0 = Instant::now();
        let l = std::sync::Arc::new(RateLimiter::new(1, 100, t0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || (0..100).filter(|_| l.admit(t0)).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 100);
        assert_eq!(l.limited(), 300);
    }

    #[test]
    fn a_new_limit_goes_on_from_the_old_one() {
        let t0 = Instant::now();
        let old = RateLimiter::new(10, 10, t0);
        assert_eq!((0..12).filter(|_| old.admit(t0)).count(), 10);
        // Lowered to 1 a second, 2 at once: the second of requests just admitted
        // still counts, so one more goes through where a fresh bucket would let two.
        let new = RateLimiter::following(1, 2, &old);
        assert!(new.admit(t0));
        assert!(!new.admit(t0));
        assert_eq!(new.limited(), 3, "the old refusals carry on");
        assert_eq!(new.config(), (1, 2));
        // A fresh one would have let 2 through.
        let fresh = RateLimiter::new(1, 2, t0);
        assert_eq!((0..3).filter(|_| fresh.admit(t0)).count(), 2);
    }
}
