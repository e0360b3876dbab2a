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
    /// No request served on it yet (a drain gives it time for its first).
    fresh: bool,
}

/// The idle connections of one worker.
#[derive(Debug, Default)]
pub(crate) struct IdleSet {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
}

impl IdleSet {
    /// Registers `fd`, idle until `deadline`; `fresh`: no request served on it yet.
    pub fn register(&mut self, fd: RawFd, deadline: Instant, fresh: bool) -> IdleToken {
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.generation = e.generation.wrapping_add(1);
            e.fd = fd;
            e.deadline = deadline;
            e.live = true;
            e.fresh = fresh;
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
            fresh,
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
        self.take_where(|e| e.deadline <= now)
    }

    /// What a drain closes at `now`: connections that served a request (their client
    /// knows to reconnect) and those still waiting for their first one at `first_by`,
    /// except any whose socket holds bytes already (a request its task is about to read:
    /// it is served, with `connection: close`).
    pub fn take_for_drain(&mut self, now: Instant, first_by: Instant) -> Vec<RawFd> {
        self.take_where(|e| {
            (!e.fresh || e.deadline.min(first_by) <= now) && !has_bytes_waiting(e.fd)
        })
    }

    fn take_where(&mut self, due: impl Fn(&Entry) -> bool) -> Vec<RawFd> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.live && due(e) {
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

/// Whether bytes wait to be read on an idle connection's socket.
fn has_bytes_waiting(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: as in `shut_down`, `fd` is an open socket of a parked connection task; a
    // one-byte peek into a local leaves its data in place and does not block.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
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
        let a = set.register(10, t0 + Duration::from_secs(1), false);
        let b = set.register(11, t0 + Duration::from_secs(5), false);
        assert_eq!(set.len(), 2);
        assert!(set.expire(t0).is_empty());
        assert_eq!(set.expire(t0 + Duration::from_secs(2)), vec![10]);
        assert!(set.expire(t0 + Duration::from_secs(2)).is_empty(), "once");
        assert!(!set.remove(a), "a was reaped");
        // The slot is reused; the old token must not remove the new registration.
        let c = set.register(12, t0 + Duration::from_secs(9), false);
        assert_eq!(c.index, a.index);
        assert!(!set.remove(a));
        assert!(set.remove(c));
        assert!(set.remove(b));
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn a_drain_takes_served_connections_now_and_fresh_ones_at_their_first_request_deadline() {
        use std::{io::Write as _, os::fd::AsRawFd as _, os::unix::net::UnixStream};
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut set = IdleSet::default();
        let (served, _a) = UnixStream::pair().unwrap();
        let (fresh, _b) = UnixStream::pair().unwrap();
        let (asking, mut client) = UnixStream::pair().unwrap();
        set.register(served.as_raw_fd(), later, false);
        set.register(fresh.as_raw_fd(), later, true);
        set.register(asking.as_raw_fd(), later, false);
        // A request already waiting on `asking`: its task is about to read it.
        client.write_all(b"G").unwrap();
        let first_by = t0 + Duration::from_secs(2);
        assert_eq!(set.take_for_drain(t0, first_by), vec![served.as_raw_fd()]);
        assert_eq!(
            set.take_for_drain(t0 + Duration::from_secs(3), first_by),
            vec![fresh.as_raw_fd()]
        );
        assert_eq!(set.len(), 1, "the connection with a request waiting stays");
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_timeout_within_bounds() {
        assert_eq!(tick(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(tick(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(tick(Duration::from_millis(40)), Duration::from_millis(50));
    }
}
