use std::{
    cell::{Cell, RefCell},
    future::Future,
    task::{Context, Poll, Waker},
};

use super::*;

/// A manual clock: `sleep` completes immediately and advances virtual time, so tests see
/// every backoff without waiting. With `frozen`, sleeps never complete (time stands still).
struct VirtualTimer {
    now: Cell<Instant>,
    slept: RefCell<Vec<Duration>>,
    frozen: bool,
}

impl VirtualTimer {
    fn new() -> Self {
        VirtualTimer {
            now: Cell::new(Instant::now()),
            slept: RefCell::new(Vec::new()),
            frozen: false,
        }
    }

    /// Sleeps that were backoffs (the per-attempt timeout sleeps are 1 s in these tests).
    fn backoffs(&self) -> usize {
        self.slept
            .borrow()
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count()
    }
}

impl Timer for VirtualTimer {
    async fn sleep(&self, d: Duration) {
        if self.frozen {
            return std::future::pending().await;
        }
        self.now.set(self.now.get() + d);
        self.slept.borrow_mut().push(d);
    }
    fn now(&self) -> Instant {
        self.now.get()
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

fn policy() -> ExecutionPolicy {
    ExecutionPolicy {
        timeout: Duration::from_secs(1),
        max_attempts: 3,
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(250),
        breaker_failures: 3,
        breaker_open_for: Duration::from_secs(10),
        max_concurrency: 0,
    }
}

#[test]
fn backoff_is_full_jitter_capped_exponential() {
    let p = policy();
    // random = u64::MAX picks the top of the range modulo (cap+1): check caps instead.
    for attempt in 1..6 {
        let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(p.max_backoff);
        for r in [0, 1, 12_345, u64::MAX / 3, u64::MAX] {
            assert!(p.backoff(attempt, r) <= cap, "attempt {attempt}");
        }
    }
    assert_eq!(p.backoff(1, 0), Duration::ZERO);
}

#[test]
fn retryable_errors_are_retried_until_success() {
    let exec = PolicyExecutor::new("test", policy());
    let timer = VirtualTimer::new();
    let calls = Cell::new(0);
    let out = block_on(exec.execute(
        &timer,
        || 7,
        || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(Error::new(ErrorCode::Unavailable, "down"))
                } else {
                    Ok(n)
                }
            }
        },
    ));
    assert_eq!(out.unwrap(), 3);
    assert_eq!(timer.backoffs(), 2, "one backoff before each retry");
}

#[test]
fn non_retryable_errors_are_returned_at_once() {
    let exec = PolicyExecutor::new("test", policy());
    let timer = VirtualTimer::new();
    let calls = Cell::new(0);
    let out: Result<(), _> = block_on(exec.execute(
        &timer,
        || 0,
        || {
            calls.set(calls.get() + 1);
            async { Err(Error::new(ErrorCode::InvalidArgument, "bad")) }
        },
    ));
    assert_eq!(out.unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(calls.get(), 1);
}

#[test]
fn attempts_are_bounded() {
    let exec = PolicyExecutor::new(
        "test",
        ExecutionPolicy {
            breaker_failures: 0,
            ..policy()
        },
    );
    let timer = VirtualTimer::new();
    let calls = Cell::new(0);
    let out: Result<(), _> = block_on(exec.execute(
        &timer,
        || 0,
        || {
            calls.set(calls.get() + 1);
            async { Err(Error::new(ErrorCode::Unavailable, "down")) }
        },
    ));
    assert_eq!(out.unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(calls.get(), 3);
}

#[test]
fn a_hanging_call_times_out() {
    let exec = PolicyExecutor::new(
        "slow",
        ExecutionPolicy {
            max_attempts: 1,
            ..policy()
        },
    );
    let timer = VirtualTimer::new();
    let out: Result<(), _> =
        block_on(exec.execute(&timer, || 0, std::future::pending::<Result<(), Error>>));
    let err = out.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert!(err.message().contains("slow"), "{err}");
}

#[test]
fn breaker_opens_after_consecutive_failures_then_probes() {
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(3, Duration::from_secs(10));
    for _ in 0..2 {
        assert!(b.try_acquire(t0));
        b.record(false, t0);
    }
    assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
    b.record(true, t0);
    assert_eq!(
        b.state(),
        BreakerState::Closed { failures: 0 },
        "success resets"
    );
    for _ in 0..3 {
        b.record(false, t0);
    }
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert!(!b.try_acquire(t0 + Duration::from_secs(9)));
    assert!(
        b.try_acquire(t0 + Duration::from_secs(10)),
        "one probe after the wait"
    );
    assert!(
        !b.try_acquire(t0 + Duration::from_secs(10)),
        "only one probe"
    );
    b.record(false, t0 + Duration::from_secs(10));
    assert!(
        matches!(b.state(), BreakerState::Open { .. }),
        "failed probe reopens"
    );
    assert!(b.try_acquire(t0 + Duration::from_secs(20)));
    b.record(true, t0 + Duration::from_secs(20));
    assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
}

#[test]
fn open_breaker_rejects_without_calling() {
    let exec = PolicyExecutor::new(
        "flaky",
        ExecutionPolicy {
            max_attempts: 1,
            ..policy()
        },
    );
    let timer = VirtualTimer::new();
    let calls = Cell::new(0);
    let fail = || {
        calls.set(calls.get() + 1);
        async { Err::<(), _>(Error::new(ErrorCode::Unavailable, "down")) }
    };
    for _ in 0..3 {
        let _ = block_on(exec.execute(&timer, || 0, fail));
    }
    let err = block_on(exec.execute(&timer, || 0, fail)).unwrap_err();
    assert_eq!(calls.get(), 3);
    assert!(err.message().contains("circuit breaker open"), "{err}");
}

#[test]
fn concurrency_limit_rejects_excess_calls() {
    let exec = PolicyExecutor::new(
        "busy",
        ExecutionPolicy {
            max_concurrency: 1,
            ..policy()
        },
    );
    let timer = VirtualTimer {
        frozen: true,
        ..VirtualTimer::new()
    };
    let mut first =
        std::pin::pin!(exec.execute(&timer, || 0, std::future::pending::<Result<(), Error>>));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let second: Result<(), _> = block_on(exec.execute(&timer, || 0, || async { Ok(()) }));
    assert_eq!(second.unwrap_err().code(), ErrorCode::ResourceExhausted);
}
