//! Active health: which endpoints of a cluster its health checks have taken out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The endpoints of one cluster taken out by active health checks, in the cluster's
/// endpoint order. Written by the data plane's health checker, read by every worker's
/// picks (relaxed loads: a pick may see a change a moment late, as it may see an
/// ejection a moment late).
#[derive(Debug)]
pub struct Health {
    down: Box<[AtomicBool]>,
    /// Out only until a first check: endpoints new to the cluster.
    pending: Box<[AtomicBool]>,
    count: AtomicUsize,
}

impl Health {
    /// `n` endpoints, all in.
    pub fn new(n: usize) -> Self {
        Health {
            down: (0..n).map(|_| AtomicBool::new(false)).collect(),
            pending: (0..n).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// Whether endpoint `i` is out because it has not been checked yet.
    pub fn is_pending(&self, i: usize) -> bool {
        self.pending.get(i).is_some_and(|p| p.load(Relaxed))
    }

    /// Marks endpoint `i` as waiting for its first check (`true`: it is taken out too)
    /// or as checked.
    pub fn set_pending(&self, i: usize, pending: bool) {
        if let Some(p) = self.pending.get(i) {
            p.store(pending, Relaxed);
            if pending {
                self.set(i, true);
            }
        }
    }

    /// The number of endpoints it follows.
    pub fn len(&self) -> usize {
        self.down.len()
    }

    /// Whether it follows no endpoint.
    pub fn is_empty(&self) -> bool {
        self.down.is_empty()
    }

    /// Whether endpoint `i` is out (false for an index out of range).
    pub fn is_down(&self, i: usize) -> bool {
        self.down.get(i).is_some_and(|d| d.load(Relaxed))
    }

    /// Takes endpoint `i` out or brings it back; whether that changed it.
    pub fn set(&self, i: usize, down: bool) -> bool {
        let Some(flag) = self.down.get(i) else {
            return false;
        };
        let changed = flag.swap(down, Relaxed) != down;
        if changed {
            if down {
                self.count.fetch_add(1, Relaxed);
            } else {
                self.count.fetch_sub(1, Relaxed);
            }
        }
        changed
    }

    /// How many endpoints are out.
    pub fn down_count(&self) -> usize {
        self.count.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn endpoints_go_out_and_come_back_counted() {
        let h = Health::new(3);
        assert!(!h.is_down(1) && h.down_count() == 0);
        assert!(h.set(1, true));
        assert!(!h.set(1, true), "no change the second time");
        assert!(h.is_down(1) && h.down_count() == 1);
        assert!(h.set(2, true) && h.down_count() == 2);
        assert!(h.set(1, false) && !h.is_down(1) && h.down_count() == 1);
        assert!(!h.set(7, true) && !h.is_down(7), "out of range is ignored");
        h.set_pending(0, true);
        assert!(h.is_pending(0) && h.is_down(0) && h.down_count() == 2);
        h.set_pending(0, false);
        assert!(
            !h.is_pending(0) && h.is_down(0),
            "checked, still out until it passes"
        );
    }
}
