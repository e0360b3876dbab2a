//! Active health: which endpoints of a cluster its health checks have taken out.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// What the health checks found of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Checked {
    /// Passing: it takes requests.
    In = 0,
    /// Taken out by its checks.
    Out = 1,
    /// New to the checks: out until its first one.
    Pending = 2,
}

impl Checked {
    /// The state `v` (`as u8`) stands for, if any.
    pub fn decode(v: u8) -> Option<Checked> {
        match v {
            0 => Some(Checked::In),
            1 => Some(Checked::Out),
            2 => Some(Checked::Pending),
            _ => None,
        }
    }

    /// How the admin API names it: `in`, `out` or `pending`.
    pub fn name(self) -> &'static str {
        match self {
            Checked::In => "in",
            Checked::Out => "out",
            Checked::Pending => "pending",
        }
    }

    fn from_u8(v: u8) -> Checked {
        Checked::decode(v).unwrap_or(Checked::Pending)
    }
}

/// The endpoints of one cluster taken out by active health checks, in the cluster's
/// endpoint order. Written by the data plane's health checker, read by every worker's
/// picks (relaxed loads: a pick may see a change a moment late, as it may see an
/// ejection a moment late). Each endpoint's state is one atomic, so a reader never sees
/// half of a change.
#[derive(Debug)]
pub struct Health {
    state: Box<[AtomicU8]>,
    /// The snapshot version from which each endpoint has been checked without a break
    /// (it was new to the checks then): its checks in a later version go on from what
    /// they found.
    since: Box<[u64]>,
    /// Endpoints not in.
    count: AtomicUsize,
}

impl Health {
    /// `n` endpoints, all in.
    pub fn new(n: usize) -> Self {
        Health::with((0..n).map(|_| (Checked::In, 0)))
    }

    /// Endpoints in these states, checked since these versions.
    pub fn with(endpoints: impl IntoIterator<Item = (Checked, u64)>) -> Self {
        let (state, since): (Vec<AtomicU8>, Vec<u64>) = endpoints
            .into_iter()
            .map(|(c, v)| (AtomicU8::new(c as u8), v))
            .unzip();
        let count = state.iter().filter(|s| s.load(Relaxed) != 0).count();
        Health {
            state: state.into(),
            since: since.into(),
            count: AtomicUsize::new(count),
        }
    }

    /// The number of endpoints it follows.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether it follows no endpoint.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Endpoint `i`'s state (in, for an index out of range).
    pub fn get(&self, i: usize) -> Checked {
        self.state
            .get(i)
            .map_or(Checked::In, |s| Checked::from_u8(s.load(Relaxed)))
    }

    /// Whether endpoint `i` is out (false for an index out of range).
    pub fn is_down(&self, i: usize) -> bool {
        self.get(i) != Checked::In
    }

    /// Whether endpoint `i` waits for its first check.
    pub fn is_pending(&self, i: usize) -> bool {
        self.get(i) == Checked::Pending
    }

    /// The snapshot version from which endpoint `i` has been checked (0 out of range).
    pub fn since(&self, i: usize) -> u64 {
        self.since.get(i).copied().unwrap_or(0)
    }

    /// Takes endpoint `i` out or brings it back; whether that changed it.
    pub fn set(&self, i: usize, down: bool) -> bool {
        self.put(i, if down { Checked::Out } else { Checked::In })
    }

    /// Puts endpoint `i` in state `to`; whether that changed it.
    pub fn put(&self, i: usize, to: Checked) -> bool {
        let Some(s) = self.state.get(i) else {
            return false;
        };
        let was = Checked::from_u8(s.swap(to as u8, Relaxed));
        match (was == Checked::In, to == Checked::In) {
            (true, false) => {
                self.count.fetch_add(1, Relaxed);
            }
            (false, true) => {
                self.count.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
        was != to
    }

    /// How many endpoints are out (pending ones included).
    pub fn down_count(&self) -> usize {
        self.count.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{Checked, Health};

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
        assert!(h.put(0, Checked::Pending));
        assert!(h.is_pending(0) && h.is_down(0) && h.down_count() == 2);
        assert!(h.put(0, Checked::Out) && !h.is_pending(0) && h.is_down(0));
        assert_eq!(
            h.down_count(),
            2,
            "pending to out is no change of the count"
        );
    }

    #[test]
    fn endpoints_start_as_given() {
        let h = Health::with([(Checked::Pending, 7), (Checked::In, 3), (Checked::Out, 3)]);
        assert_eq!(h.down_count(), 2);
        assert_eq!(
            (0..3).map(|i| (h.get(i), h.since(i))).collect::<Vec<_>>(),
            [(Checked::Pending, 7), (Checked::In, 3), (Checked::Out, 3)]
        );
    }
}
