//! Idle keep-alive client connections, timed out without a timer each: an idle connection
//! registers its socket here (24 bytes) instead of holding a runtime timer entry (about
//! 640 bytes in monoio) while it waits for its next request. One task per worker wakes a
//! few times per timeout period and shuts down the sockets whose deadline passed; that
//! completes their pending readiness wait and their tasks end as on a client close.
//!
//! Precision: a connection is closed between `timeout` and `timeout + tick` after it went
//! idle, with `tick` a quarter of the timeout (between 50 ms and 1 s).

use std::{
    os::fd::RawFd,
    time::{Duration, Instant},
};

/// Identifies one registration; stale after it is removed or reaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdleToken {
    index: u32,
    generation: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    fd: RawFd,
    generation: u32,
    deadline: Instant,
    live: bool,
}

/// The idle connections of one worker.
#[derive(Debug, Default)]
pub(crate) struct IdleSet {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
}

impl IdleSet {
    /// Registers `fd`, idle until `deadline`.
    pub fn register(&mut self, fd: RawFd, deadline: Instant) -> IdleToken {
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.generation = e.generation.wrapping_add(1);
            e.fd = fd;
            e.deadline = deadline;
            e.live = true;
            return IdleToken {
                index,
                generation: e.generation,
            };
        }
        let index = self.entries.len() as u32;
        self.entries.push(Entry {
            fd,
            generation: 0,
            deadline,
            live: true,
        });
        IdleToken {
            index,
            generation: 0,
        }
    }

    /// Ends a registration. False when the connection was reaped (its socket is shut down).
    pub fn remove(&mut self, token: IdleToken) -> bool {
        match self.entries.get_mut(token.index as usize) {
            Some(e) if e.live && e.generation == token.generation => {
                e.live = false;
                self.live -= 1;
                self.free.push(token.index);
                true
            }
            _ => false,
        }
    }

    /// Takes every registration whose deadline is at or before `now` and returns their
    /// sockets, for the caller to shut down.
    pub fn expire(&mut self, now: Instant) -> Vec<RawFd> {
        self.take_where(|deadline| deadline <= now)
    }

    /// Takes every registration (a drain closes them all) and returns their sockets.
    pub fn take_all(&mut self) -> Vec<RawFd> {
        self.take_where(|_| true)
    }

    fn take_where(&mut self, due: impl Fn(Instant) -> bool) -> Vec<RawFd> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.live && due(e.deadline) {
                e.live = false;
                out.push(e.fd);
                self.free.push(i as u32);
            }
        }
        self.live -= out.len();
        out
    }

    /// Connections idle now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }
}

/// How often the reaper looks, for an idle timeout.
pub(crate) fn tick(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Shuts down a reaped connection's socket: its pending read wakes up and sees the end.
pub(crate) fn shut_down(fd: RawFd) {
    // SAFETY: `fd` is the socket of a connection task that is still parked on it (its
    // registration was live, and tasks remove theirs before they close the socket), so it
    // is open and ours; shutdown(2) does not close it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_taken_once_and_their_tokens_go_stale() {
        let t0 = Instant::now();
        let mut set = IdleSet::default();
        let a = set.register(10, t0 + Duration::from_secs(1));
        let b = set.register(11, t0 + Duration::from_secs(5));
        assert_eq!(set.len(), 2);
        assert!(set.expire(t0).is_empty());
        assert_eq!(set.expire(t0 + Duration::from_secs(2)), vec![10]);
        assert!(set.expire(t0 + Duration::from_secs(2)).is_empty(), "once");
        assert!(!set.remove(a), "a was reaped");
        // The slot is reused; the old token must not remove the new registration.
        let c = set.register(12, t0 + Duration::from_secs(9));
        assert_eq!(c.index, a.index);
        assert!(!set.remove(a));
        assert!(set.remove(c));
        assert!(set.remove(b));
        assert_eq!(set.len(), 0);

        // A drain takes every registration, whatever its deadline.
        let d = set.register(13, t0 + Duration::from_secs(60));
        set.register(14, t0 + Duration::from_secs(90));
        let mut all = set.take_all();
        all.sort_unstable();
        assert_eq!(all, vec![13, 14]);
        assert_eq!(set.len(), 0);
        assert!(!set.remove(d), "d was taken");
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_timeout_within_bounds() {
        assert_eq!(tick(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(tick(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(tick(Duration::from_millis(40)), Duration::from_millis(50));
    }
}
