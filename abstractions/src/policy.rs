//! `ExecutionPolicy`: how every provider call is wrapped. A timeout per attempt, retries
//! with exponential backoff and full jitter (only for retryable errors, within a retry
//! budget), a circuit breaker, and a concurrency limit.
//!
//! The state machines are sans-IO (time is passed in) so they are tested
//! deterministically; [`PolicyExecutor::execute`] drives them with any async runtime
//! through the small [`Timer`] trait.

use std::{
    future::Future,
    pin::pin,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use crate::{Error, ErrorCode};

/// Declarative policy; each contract documents its default.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionPolicy {
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff`, with full jitter.
    pub base_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Consecutive failures that open the breaker (0 disables it).
    pub breaker_failures: u32,
    /// How long an open breaker rejects calls before letting one probe through.
    pub breaker_open_for: Duration,
    /// Calls in flight at once (0 = unlimited).
    pub max_concurrency: usize,
}

impl Default for ExecutionPolicy {
    fn default() -> Self {
        ExecutionPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
            max_concurrency: 0,
        }
    }
}

impl ExecutionPolicy {
    /// The backoff before retry number `attempt` (1-based), given a uniform random `u64`:
    /// uniformly distributed in `[0, min(max, base * 2^(attempt-1))]` ("full jitter").
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let cap = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random % (nanos + 1))
    }
}

/// Circuit breaker states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counting consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Calls are rejected until the instant passes.
    Open {
        /// When one probe call may go through.
        until: Instant,
    },
    /// One probe call is in flight; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// A consecutive-failure circuit breaker with a half-open probe.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` failures in a row (0: never opens).
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            threshold,
            open_for,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may start at `now`. An expired open breaker lets exactly one probe in.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// Records a call's outcome.
    pub fn record(&mut self, success: bool, now: Instant) {
        self.state = match (self.state, success) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) => {
                let failures = failures + 1;
                if self.threshold > 0 && failures >= self.threshold {
                    BreakerState::Open {
                        until: now + self.open_for,
                    }
                } else {
                    BreakerState::Closed { failures }
                }
            }
            (BreakerState::HalfOpen | BreakerState::Open { .. }, false) => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }
}

/// Time for the executor, implemented once per async runtime.
pub trait Timer {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// The current instant.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Runs `fut` with a deadline; `None` if the timer fired first.
pub async fn with_timeout<T>(
    timer: &impl Timer,
    timeout: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = pin!(fut);
    let mut sleep = pin!(timer.sleep(timeout));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// An [`ExecutionPolicy`] with its live state (breaker, concurrency), shared by the
/// callers of one provider.
#[derive(Debug)]
pub struct PolicyExecutor {
    policy: ExecutionPolicy,
    breaker: Mutex<CircuitBreaker>,
    in_flight: AtomicUsize,
    name: String,
}

impl PolicyExecutor {
    /// An executor for the provider named `name` (used in error messages).
    pub fn new(name: impl Into<String>, policy: ExecutionPolicy) -> Self {
        let breaker = CircuitBreaker::new(policy.breaker_failures, policy.breaker_open_for);
        PolicyExecutor {
            policy,
            breaker: Mutex::new(breaker),
            in_flight: AtomicUsize::new(0),
            name: name.into(),
        }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .map(|b| b.state())
            .unwrap_or(BreakerState::HalfOpen)
    }

    fn breaker<R>(&self, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        match self.breaker.lock() {
            Ok(mut b) => f(&mut b),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Runs `op` under the policy. `random` supplies jitter (any uniform `u64` source).
    pub async fn execute<T, F, Fut>(
        &self,
        timer: &impl Timer,
        mut random: impl FnMut() -> u64,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let limit = self.policy.max_concurrency;
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _slot = InFlight(&self.in_flight);
        if limit > 0 && prev >= limit {
            return Err(Error::new(
                ErrorCode::ResourceExhausted,
                format!("{}: {limit} calls already in flight", self.name),
            ));
        }
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !self.breaker(|b| b.try_acquire(timer.now())) {
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!("{}: circuit breaker open", self.name),
                )
                .with_retryable(false));
            }
            let result = match with_timeout(timer, self.policy.timeout, op()).await {
                Some(r) => r,
                None => Err(Error::new(
                    ErrorCode::Timeout,
                    format!("{}: no answer within {:?}", self.name, self.policy.timeout),
                )),
            };
            self.breaker(|b| b.record(result.is_ok(), timer.now()));
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < attempts => {
                    timer.sleep(self.policy.backoff(attempt, random())).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
