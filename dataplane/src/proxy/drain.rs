//! Graceful shutdown. It may be announced first ([`Drain::announce`]: the admin API's
//! health check fails while the listeners still accept, so that a load balancer in front
//! stops sending new connections, and each response says `connection: close`). Once a
//! drain starts, every worker stops accepting (its listening
//! sockets close and leave kernel steering), closes its idle keep-alive connections at
//! once, answers each request still to come on an open connection with
//! `connection: close`, and ends when its last connection has closed. The binary bounds
//! the whole by its drain timeout.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::snapshot::SnapshotHolder;

/// Whether the proxy is draining, shared by its workers and the admin API.
#[derive(Debug)]
pub struct Drain {
    announced: AtomicBool,
    draining: AtomicBool,
    /// Its subscribers are the workers' listener followers, woken to see the drain.
    holder: Arc<SnapshotHolder>,
}

impl Drain {
    pub(crate) fn new(holder: Arc<SnapshotHolder>) -> Self {
        Drain {
            announced: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            holder,
        }
    }

    /// Announces the drain to come: health checks fail from now on.
    pub fn announce(&self) {
        self.announced.store(true, Ordering::Release);
    }

    /// Whether a drain was announced or has started (health checks fail).
    pub fn is_announced(&self) -> bool {
        self.announced.load(Ordering::Acquire)
    }

    /// Starts the drain (announcing it, if not yet); false if it had started already.
    pub fn start(&self) -> bool {
        self.announce();
        let first = !self.draining.swap(true, Ordering::AcqRel);
        if first {
            self.holder.wake_subscribers();
        }
        first
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
