//! One timer per request, re-armed for each wait that needs a deadline.
//!
//! A monoio `Timeout` carries its own timer entry: 640 bytes, aligned to 128, inside every
//! future that waits with one. Async fns hold their callees' futures and copy each one into
//! place once per call, so those bytes were copied several times per request. Here the
//! request owns one [`Sleep`] and each wait borrows it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use monoio::time::Sleep;

/// The request's timer, pinned where the request future lives.
pub(crate) type Timer<'a> = Pin<&'a mut Sleep>;

/// A fresh timer (not armed until a wait sets its deadline and polls it). `at` is any
/// past time: every wait sets its own deadline first.
pub(crate) fn timer(at: Instant) -> Sleep {
    monoio::time::sleep_until(at.into())
}

/// The deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// Runs `fut` until `deadline`, on `timer`.
pub(crate) fn within<'t, 'a, F: Future>(
    timer: &'t mut Timer<'a>,
    deadline: Instant,
    fut: F,
) -> Within<'t, 'a, F> {
    let deadline = monoio::time::Instant::from(deadline);
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    Within { timer, fut }
}

/// Waits on `timer` until `deadline`.
pub(crate) async fn sleep_until(timer: &mut Timer<'_>, deadline: Instant) {
    timer.as_mut().reset(deadline.into());
    timer.as_mut().await;
}

/// The future [`within`] returns: the work's output, or [`TimedOut`].
pub(crate) struct Within<'t, 'a, F> {
    timer: &'t mut Timer<'a>,
    fut: F,
}

impl<F: Future> Future for Within<'_, '_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is pinned with `self` and never moved out of it; `timer` is a
        // reference to an already pinned timer, so taking it mutably moves nothing pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above, `fut` stays in place for as long as `self` is pinned.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        // The work first: when both are ready, the result wins over the deadline.
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::pin,
        time::{Duration, Instant},
    };

    use super::{TimedOut, sleep_until, timer, within};

    #[test]
    fn one_timer_serves_successive_deadlines() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut t = pin!(timer(Instant::now()));
            // Work that finishes first wins.
            let far = Instant::now() + Duration::from_secs(5);
            assert_eq!(within(&mut t, far, async { 7 }).await, Ok(7));
            // Work that never finishes times out at the (re-armed, nearer) deadline.
            let t0 = Instant::now();
            let near = t0 + Duration::from_millis(20);
            let out = within(&mut t, near, std::future::pending::<()>()).await;
            assert_eq!(out, Err(TimedOut));
            assert!(t0.elapsed() >= Duration::from_millis(20));
            // Re-armed again, later, after firing.
            let t1 = Instant::now();
            let slow = async {
                monoio::time::sleep(Duration::from_millis(10)).await;
                3
            };
            let out = within(&mut t, t1 + Duration::from_millis(500), slow).await;
            assert_eq!(out, Ok(3));
            assert!(t1.elapsed() < Duration::from_millis(400));
            // And as a plain sleep.
            let t2 = Instant::now();
            sleep_until(&mut t, t2 + Duration::from_millis(15)).await;
            assert!(t2.elapsed() >= Duration::from_millis(15));
        });
    }
}
