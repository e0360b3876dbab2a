//! Per-worker upstream connection pool: idle keep-alive connections by endpoint address,
//! reused most-recent first, expired after the cluster's idle timeout. Workers never share
//! a pool, so there is no locking.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use monoio::net::TcpStream;

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
    /// An idle connection to `addr` that has not outlived `idle_timeout`, if any.
    pub fn take(
        &mut self,
        addr: SocketAddr,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<TcpStream> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.since) < idle_timeout {
                return Some(conn.stream);
            }
            // Expired: dropping closes it.
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
