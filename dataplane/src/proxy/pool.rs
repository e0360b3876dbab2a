//! Per-worker upstream connection pool: idle keep-alive connections by endpoint address,
//! reused most-recent first, expired after the cluster's idle timeout. Workers never share
//! a pool, so there is no locking.

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use monoio::net::TcpStream;

/// Idle time from which a pooled connection is checked before reuse.
pub const CHECK_AFTER: Duration = Duration::from_millis(250);

/// Whether the peer has neither closed `stream` nor sent anything on it: a non-blocking
/// peek finds nothing to read.
fn open_and_quiet(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local; the descriptor is open (owned by `stream`).
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// The pool of one worker.
#[derive(Default)]
pub struct UpstreamPool {
    /// foldhash, not the std default: the pool is looked up twice per request and SipHash
    /// (built to resist chosen keys) cost more than the rest of the lookup; the keys are
    /// configured endpoints, not client input.
    idle: HashMap<SocketAddr, Vec<Idle>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("endpoints", &self.idle.len())
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl UpstreamPool {
    /// An idle connection to `addr` that has not outlived `idle_timeout`, if any. One idle
    /// for [`CHECK_AFTER`] or longer is first checked to be still open and quiet (a
    /// backend's own keep-alive timeout may have closed it, or it may have sent something
    /// unasked, such as a 408): a request written into a closed connection fails, and one
    /// that is not idempotent, or whose body was too large to keep, cannot be retried.
    /// Busy connections are reused within milliseconds and skip the check.
    pub fn take(
        &mut self,
        addr: SocketAddr,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<TcpStream> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            let idle = now.duration_since(conn.since);
            if idle < idle_timeout && (idle < CHECK_AFTER || open_and_quiet(&conn.stream)) {
                return Some(conn.stream);
            }
            // Expired, closed or out of step: dropping closes it.
        }
        None
    }

    /// Returns a connection for reuse, unless `max_idle` are already kept for `addr`.
    pub fn put(&mut self, addr: SocketAddr, stream: TcpStream, max_idle: usize, now: Instant) {
        let list = self.idle.entry(addr).or_default();
        if list.len() < max_idle {
            list.push(Idle { stream, since: now });
        }
    }

    /// Idle connections held.
    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Drops connections idle longer than `max_age` (called periodically).
    pub fn expire(&mut self, max_age: Duration, now: Instant) {
        for list in self.idle.values_mut() {
            list.retain(|c| now.duration_since(c.since) < max_age);
        }
        self.idle.retain(|_, l| !l.is_empty());
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::io::Write as _;

    use super::*;

    /// A pooled connection to a local listener, idle since `idle` ago, and the peer's end.
    fn pooled(pool: &mut UpstreamPool, idle: Duration) -> (SocketAddr, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ours = std::net::TcpStream::connect(addr).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let stream = TcpStream::from_std(ours).unwrap();
        pool.put(addr, stream, 8, Instant::now() - idle);
        (addr, theirs)
    }

    #[test]
    fn a_connection_idle_long_enough_is_reused_only_if_the_peer_kept_it_open_and_quiet() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let (timeout, now) = (Duration::from_secs(60), Instant::now);
            let mut pool = UpstreamPool::default();

            let (addr, _peer) = pooled(&mut pool, Duration::from_secs(1));
            assert!(pool.take(addr, timeout, now()).is_some(), "open and quiet");

            let (addr, peer) = pooled(&mut pool, Duration::from_secs(1));
            drop(peer);
            std::thread::sleep(Duration::from_millis(20));
            assert!(
                pool.take(addr, timeout, now()).is_none(),
                "closed by the peer"
            );

            let (addr, mut peer) = pooled(&mut pool, Duration::from_secs(1));
            peer.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert!(pool.take(addr, timeout, now()).is_none(), "unasked bytes");

            // A busy connection (idle less than CHECK_AFTER) is not checked: reused even
            // though its peer is gone (the request's own failure handling covers that rare
            // case).
            let (addr, peer) = pooled(&mut pool, Duration::ZERO);
            drop(peer);
            assert!(pool.take(addr, timeout, now()).is_some());

            let (addr, _peer) = pooled(&mut pool, Duration::from_secs(61));
            assert!(pool.take(addr, timeout, now()).is_none(), "expired");
        });
    }
}
