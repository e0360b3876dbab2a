//! Graceful shutdown. Once a drain starts, every worker stops accepting (its listening
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
    draining: AtomicBool,
    /// Its subscribers are the workers' listener followers, woken to see the drain.
    holder: Arc<SnapshotHolder>,
}

impl Drain {
    pub(crate) fn new(holder: Arc<SnapshotHolder>) -> Self {
        Drain {
            draining: AtomicBool::new(false),
            holder,
        }
    }

    /// Starts the drain; false if it had started already.
    pub fn start(&self) -> bool {
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
