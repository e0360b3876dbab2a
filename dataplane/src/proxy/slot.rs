//! A heap slot that runs one future after another in the same allocation.
//!
//! A connection serves each request through a large future (several KiB: the head, the
//! upstream exchange, the body relay, timers). Boxing it anew per request costs an
//! allocation per request, and an over-aligned one: monoio's timer entries are aligned to
//! 128 bytes, so the allocator takes its slow `memalign` path. A busy connection instead
//! keeps one slot and writes each request's future into it; an idle connection releases
//! the slot and holds nothing.

use std::{
    marker::PhantomData,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll},
};

/// Storage for futures of type `F`, allocated on first use.
pub(crate) struct FutureSlot<F> {
    mem: Option<Box<MaybeUninit<F>>>,
    /// A future lives in `mem` that has not been dropped yet.
    occupied: bool,
}

impl<F: Future> FutureSlot<F> {
    pub(crate) fn new() -> Self {
        FutureSlot {
            mem: None,
            occupied: false,
        }
    }

    /// Puts the future `make` returns into the slot and returns a future that runs it
    /// there; the slot's future is dropped in place when it completes or when the returned
    /// future is dropped. Made in the call, the future can be built in the slot's memory
    /// directly instead of being built elsewhere and copied in whole (its size, not the
    /// few bytes a fresh future sets, would be copied).
    #[inline(always)]
    pub(crate) fn run(&mut self, make: impl FnOnce() -> F) -> SlotRun<'_, F> {
        self.clear();
        let mem = self.mem.get_or_insert_with(Box::new_uninit);
        mem.write(make());
        self.occupied = true;
        SlotRun {
            slot: self,
            _pinned: PhantomData,
        }
    }

    /// Frees the allocation.
    pub(crate) fn release(&mut self) {
        self.clear();
        self.mem = None;
    }

    /// Drops the slot's future if one is still there. Only a `SlotRun` that was leaked
    /// (never dropped) leaves one behind; dropping it before the memory is reused or freed
    /// keeps the promise made when it was pinned.
    fn clear(&mut self) {
        if self.occupied {
            self.occupied = false;
            if let Some(mem) = self.mem.as_mut() {
                // SAFETY: `occupied` says the memory holds an initialised `F` not yet dropped.
                unsafe { mem.assume_init_drop() };
            }
        }
    }
}

impl<F> Drop for FutureSlot<F> {
    fn drop(&mut self) {
        if self.occupied
            && let Some(mem) = self.mem.as_mut()
        {
            // SAFETY: as in `clear`.
            unsafe { mem.assume_init_drop() };
        }
    }
}

/// The future [`FutureSlot::run`] returns.
pub(crate) struct SlotRun<'a, F: Future> {
    slot: &'a mut FutureSlot<F>,
    /// `F` may be `!Unpin`; it never moves (it stays in the slot's heap memory).
    _pinned: PhantomData<F>,
}

impl<F: Future> Future for SlotRun<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `SlotRun` holds no pinned data itself (`F` lives in the slot's heap
        // memory, which `SlotRun` only points to), so it may be accessed mutably.
        let this = unsafe { self.get_unchecked_mut() };
        let slot = &mut *this.slot;
        if !slot.occupied {
            // Polled again after completion.
            return Poll::Pending;
        }
        let Some(mem) = slot.mem.as_mut() else {
            return Poll::Pending;
        };
        // SAFETY: the memory holds an initialised `F` (`occupied`) in a heap allocation
        // that is neither moved nor reused until the future is dropped in place below,
        // by `Drop for SlotRun`, or by `FutureSlot::clear` before any reuse.
        let fut = unsafe { Pin::new_unchecked(mem.assume_init_mut()) };
        let out = fut.poll(cx);
        if out.is_ready() {
            slot.occupied = false;
            // SAFETY: initialised and, with `occupied` cleared, dropped exactly once.
            unsafe { mem.assume_init_drop() };
        }
        out
    }
}

impl<F: Future> Drop for SlotRun<'_, F> {
    fn drop(&mut self) {
        self.slot.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::FutureSlot;
    use std::{
        cell::Cell,
        pin::pin,
        rc::Rc,
        task::{Context, Poll, Waker},
    };

    /// Counts its drops; pending until `ready` is set.
    struct Probe {
        drops: Rc<Cell<u32>>,
        ready: Rc<Cell<bool>>,
        value: u32,
    }

    impl Future for Probe {
        type Output = u32;
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            if self.ready.get() {
                Poll::Ready(self.value)
            } else {
                Poll::Pending
            }
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    #[test]
    fn futures_run_in_one_allocation_and_each_is_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        let ready = Rc::new(Cell::new(true));
        let probe = |value| Probe {
            drops: Rc::clone(&drops),
            ready: Rc::clone(&ready),
            value,
        };
        let mut cx = Context::from_waker(Waker::noop());
        let mut slot = FutureSlot::new();
        let mut addr = None;
        for i in 0..3 {
            {
                let mut run = pin!(slot.run(|| probe(i)));
                assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(i));
            }
            let a = slot.mem.as_ref().map(|m| m.as_ptr() as usize);
            assert!(a.is_some());
            assert!(addr.is_none() || addr == a, "the slot reallocated");
            addr = a;
            assert_eq!(drops.get(), i + 1);
        }

        // Dropped mid-flight: the future is dropped in place, once.
        ready.set(false);
        {
            let mut run = pin!(slot.run(|| probe(9)));
            assert_eq!(run.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(drops.get(), 4);

        // Leaked mid-flight: the next use drops it before reusing the memory.
        std::mem::forget(slot.run(|| probe(10)));
        assert_eq!(drops.get(), 4);
        ready.set(true);
        {
            let mut run = pin!(slot.run(|| probe(11)));
            assert_eq!(drops.get(), 5);
            assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(11));
        }
        assert_eq!(drops.get(), 6);

        slot.release();
        assert!(slot.mem.is_none());
        std::mem::forget(slot.run(|| probe(12)));
        drop(slot);
        assert_eq!(
            drops.get(),
            7,
            "a leaked run's future is dropped with the slot"
        );
    }
}
