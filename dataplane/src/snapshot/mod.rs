//! Snapshots on the data plane: verified ([`SnapshotVerifier`]), compiled
//! ([`RuntimeConfig`]) and swapped in atomically ([`SnapshotHolder`]). Workers load the
//! current snapshot per request without locks; a request keeps the `Arc` it started with,
//! so in-flight requests finish on their snapshot. A rejected snapshot changes nothing.

mod client;
mod runtime;
mod verify;

use std::{
    io::Write as _,
    os::unix::net::UnixStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwapOption;
use omnirelay_proto::v1;

use crate::lb::Strategies;

pub use client::{ControlClient, ControlTlsFiles, save_snapshot, spawn_control_client};
pub use runtime::*;
pub use verify::{CAPABILITIES, MAX_SNAPSHOT_BYTES, RejectReason, SnapshotVerifier};

/// The current snapshot of this data plane, and counters of what was applied or rejected.
#[derive(Debug)]
pub struct SnapshotHolder {
    current: ArcSwapOption<RuntimeConfig>,
    verifier: SnapshotVerifier,
    strategies: Strategies,
    rejected: [AtomicU64; RejectReason::LABELS.len()],
    applied: AtomicU64,
    // Serializes verify-then-swap so two sources cannot interleave version checks.
    apply: Mutex<()>,
    /// Write ends of the sockets handed out by [`SnapshotHolder::subscribe`].
    watchers: Mutex<Vec<UnixStream>>,
    /// Runs on each compiled snapshot before it is swapped in.
    warmer: Option<Warmer>,
}

/// Work done on a compiled snapshot before it is swapped in, while the one before keeps
/// serving (the data plane's binary warms new health-checked clusters with it; see
/// [`SnapshotHolder::with_warmer`]); what it returns runs once the snapshot is current.
pub struct Warmer(Box<WarmFn>);

/// What a [`Warmer`] runs.
type WarmFn = dyn Fn(&RuntimeConfig) -> Option<AfterSwap> + Send + Sync;

/// What a [`Warmer`] leaves to do once its snapshot is current.
pub type AfterSwap = Box<dyn FnOnce() + Send>;

impl Warmer {
    /// A warmer that runs `f`.
    pub fn new(f: impl Fn(&RuntimeConfig) -> Option<AfterSwap> + Send + Sync + 'static) -> Self {
        Warmer(Box::new(f))
    }
}

impl std::fmt::Debug for Warmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warmer")
    }
}

impl SnapshotHolder {
    /// An empty holder that accepts snapshots signed for `verifier` and builds the tables
    /// of hash-based clusters with `strategies` (the providers its binary wired in).
    pub fn new(verifier: SnapshotVerifier, strategies: Strategies) -> Self {
        SnapshotHolder {
            current: ArcSwapOption::empty(),
            verifier,
            strategies,
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            applied: AtomicU64::new(0),
            apply: Mutex::new(()),
            watchers: Mutex::new(Vec::new()),
            warmer: None,
        }
    }

    /// The holder, running `warmer` on each compiled snapshot before it is swapped in
    /// (the snapshot's version becomes current only after it).
    pub fn with_warmer(mut self, warmer: Warmer) -> Self {
        self.warmer = Some(warmer);
        self
    }

    /// The current snapshot (one atomic load and reference-count increment).
    pub fn current(&self) -> Option<Arc<RuntimeConfig>> {
        self.current.load_full()
    }

    /// `f` of the current snapshot, read in place (no reference-count change).
    pub fn peek<R>(&self, f: impl FnOnce(Option<&RuntimeConfig>) -> R) -> R {
        f(self.current.load().as_deref())
    }

    /// The running version (0 before the first snapshot).
    pub fn version(&self) -> u64 {
        self.peek(|c| c.map_or(0, |c| c.version))
    }

    /// A socket that turns readable each time a snapshot is swapped in (a byte per swap;
    /// when the reader is far behind, the bytes stop at the socket's buffer, and it stays
    /// readable): a worker on another runtime waits on it for a new version instead of
    /// polling. Dropping it unsubscribes (found at the next swap).
    pub fn subscribe(&self) -> std::io::Result<UnixStream> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(write);
        Ok(read)
    }

    /// Snapshots applied since start.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Rejections by reason label (see [`RejectReason::LABELS`]).
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        RejectReason::LABELS
            .iter()
            .zip(&self.rejected)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Verifies, compiles and swaps in an encoded `SignedSnapshot`.
    pub fn apply_bytes(&self, bytes: &[u8]) -> Result<u64, RejectReason> {
        let _serial = self.apply.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .verifier
            .verify_bytes(bytes, self.version())
            .and_then(|s| self.swap(&s));
        self.account(result)
    }

    /// Verifies, compiles and swaps in a `SignedSnapshot`.
    pub fn apply_signed(&self, signed: &v1::SignedSnapshot) -> Result<u64, RejectReason> {
        let _serial = self.apply.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .verifier
            .verify(signed, self.version())
            .and_then(|s| self.swap(&s));
        self.account(result)
    }

    fn swap(&self, snapshot: &v1::Snapshot) -> Result<u64, RejectReason> {
        let prev = self.current.load_full();
        let compiled = RuntimeConfig::build_after(snapshot, &self.strategies, prev.as_deref())?;
        let version = compiled.version;
        let after = self
            .warmer
            .as_ref()
            .and_then(|warmer| (warmer.0)(&compiled));
        self.current.store(Some(Arc::new(compiled)));
        self.notify();
        if let Some(after) = after {
            after();
        }
        Ok(version)
    }

    /// Wakes every subscriber without a swap, to look again at what else it follows (a
    /// worker's listener follower: the start of a drain).
    pub fn wake_subscribers(&self) {
        self.notify();
    }

    /// Tells every subscriber a new snapshot is in; drops those whose reader is gone.
    fn notify(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|mut w| match w.write(&[1]) {
            Ok(_) => true,
            // Full: the reader has bytes to read already.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
    }

    fn account(&self, result: Result<u64, RejectReason>) -> Result<u64, RejectReason> {
        match &result {
            Ok(v) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(version = v, "snapshot applied");
            }
            Err(reason) => {
                let idx = RejectReason::LABELS
                    .iter()
                    .position(|l| *l == reason.label())
                    .unwrap_or_default();
                self.rejected[idx].fetch_add(1, Ordering::Relaxed);
                let keeping = self.version();
                tracing::warn!(
                    reason = reason.label(),
                    keeping_version = keeping,
                    "snapshot rejected: {reason}"
                );
            }
        }
        result
    }
}

/// Snapshots for the data plane's unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use omnirelay_proto::v1;

    /// One listener, one route (prefix `/`) to one cluster of one endpoint.
    pub(crate) fn minimal() -> v1::Snapshot {
        v1::Snapshot {
            version: 1,
            listeners: vec![v1::Listener {
                name: "l".into(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            routes: vec![v1::Route {
                name: "r".into(),
                path: Some(v1::route::Path::Prefix("/".into())),
                ..Default::default()
            }],
            clusters: vec![v1::Cluster {
                name: "c".into(),
                endpoints: vec![v1::Endpoint {
                    address: "127.0.0.1:2".into(),
                    weight: 1,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::io::Read as _;

    use super::{verify::tests::*, *};
    use crate::lb::test_util::strategies;

    /// A signed snapshot the data plane accepts (one listener).
    fn good(key: &ed25519_dalek::SigningKey, version: u64) -> v1::SignedSnapshot {
        let mut s = snap(version);
        s.listeners.push(v1::Listener {
            name: "l".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        });
        sign(key, &s)
    }

    /// The bytes waiting on a subscriber's socket (it is non-blocking).
    fn pending(socket: &mut UnixStream) -> usize {
        let mut buf = [0u8; 64];
        match socket.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn subscribers_hear_of_each_swap_not_of_a_rejection_and_dropped_ones_are_forgotten() {
        let (key, verifier) = setup();
        let holder = SnapshotHolder::new(verifier, strategies());
        let mut first = holder.subscribe().unwrap();
        let second = holder.subscribe().unwrap();
        assert_eq!(pending(&mut first), 0);

        holder.apply_signed(&good(&key, 1)).unwrap();
        assert_eq!(pending(&mut first), 1);
        assert_eq!(pending(&mut first), 0, "one byte per swap");

        // A stale version changes nothing, and says nothing.
        assert!(holder.apply_signed(&good(&key, 1)).is_err());
        assert_eq!(pending(&mut first), 0);

        drop(second);
        holder.apply_signed(&good(&key, 2)).unwrap();
        holder.apply_signed(&good(&key, 3)).unwrap();
        assert_eq!(
            pending(&mut first),
            2,
            "swaps the reader has not read yet add up"
        );
        assert_eq!(
            holder.watchers.lock().unwrap().len(),
            1,
            "the dropped subscriber is still written to"
        );

        // A reader far behind (the notifications of many swaps): its socket fills up, and
        // it stays subscribed and readable.
        for _ in 0..5000 {
            holder.notify();
        }
        assert_eq!(holder.watchers.lock().unwrap().len(), 1);
        let mut behind = 0;
        loop {
            match pending(&mut first) {
                0 => break,
                n => behind += n,
            }
        }
        assert!(
            (1..5000).contains(&behind),
            "{behind} bytes: the socket never filled"
        );
        holder.apply_signed(&good(&key, 4)).unwrap();
        assert_eq!(pending(&mut first), 1);
    }
}
