//! Snapshots on the data plane: verified ([`SnapshotVerifier`]), compiled
//! ([`RuntimeConfig`]) and swapped in atomically ([`SnapshotHolder`]). Workers load the
//! current snapshot per request without locks; a request keeps the `Arc` it started with,
//! so in-flight requests finish on their snapshot. A rejected snapshot changes nothing.

mod client;
mod runtime;
mod verify;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use arc_swap::ArcSwapOption;
use omnirelay_proto::v1;

use crate::lb::Strategies;

pub use client::{ControlClient, spawn_control_client};
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
        }
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
        let compiled = RuntimeConfig::build(snapshot, &self.strategies)?;
        let version = compiled.version;
        self.current.store(Some(Arc::new(compiled)));
        Ok(version)
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
