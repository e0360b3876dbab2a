//! The daemon's kernel side: starts the limiter from `[kernel]`, writes every published
//! snapshot into the maps, and renders the limiter's counters for `/metrics`.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use omnirelay_ebpf_common::limiter::Reason;
use omnirelay_proto::v1;
use prost::Message as _;
use tokio::sync::watch;

use super::publish::Published;
use crate::{
    config::{KernelSection, XdpAttach},
    kernel::{
        AttachMode, CountersReader, KernelError, KernelLimiter, KernelPlan, LimiterSettings, plan,
    },
};

/// The running limiter and what the daemon knows about it.
#[derive(Debug)]
pub struct KernelService {
    limiter: Mutex<KernelLimiter>,
    /// The counters, read by `/metrics` without taking `limiter`.
    counters: CountersReader,
    /// Listener names by id of the plan the programs read (copied from it at each
    /// generation switch).
    names: Mutex<Vec<String>>,
    /// Snapshots written into the maps.
    pub applied: AtomicU64,
    /// Snapshots whose kernel part could not be written (the previous set stays active).
    pub failed: AtomicU64,
    /// Version of the snapshot the maps hold.
    pub version: AtomicU64,
}

impl KernelService {
    /// Starts the limiter when `[kernel]` asks for it (interfaces or steering); `None`
    /// otherwise. `current`, the published snapshot, is written into the maps before the
    /// programs are attached. Errors name the interface, mode and errno.
    pub fn start(
        section: &KernelSection,
        current: Option<&Published>,
    ) -> Result<Option<Arc<Self>>, KernelError> {
        if section.interfaces.is_empty() && !section.steering {
            return Ok(None);
        }
        // A snapshot without a valid kernel plan is logged, and the maps start as they are
        // (its version is then retried by `follow` like any other).
        let initial = current.and_then(|p| match plan_of(p) {
            Ok(plan) => Some(plan),
            Err(e) => {
                tracing::error!(version = p.version, error = %e, "no kernel plan for the published snapshot");
                None
            }
        });
        let limiter = KernelLimiter::start_with(
            LimiterSettings {
                interfaces: section.interfaces.clone(),
                mode: match section.attach_mode {
                    XdpAttach::Native => AttachMode::Native,
                    XdpAttach::Generic => AttachMode::Generic,
                },
                pin_dir: section.pin_dir.clone(),
                steering: section.steering,
            },
            initial.as_ref(),
        )?;
        let version = limiter.applied_version().unwrap_or(0);
        // The readiness line: maps written, programs attached (tests and the demo wait
        // for it).
        tracing::info!(
            version,
            interfaces = ?section.interfaces,
            steering = section.steering,
            "kernel limiter running"
        );
        Ok(Some(Arc::new(KernelService {
            counters: limiter.counters_reader()?,
            names: Mutex::new(limiter.listener_names()),
            limiter: Mutex::new(limiter),
            applied: AtomicU64::new(u64::from(version > 0)),
            failed: AtomicU64::new(0),
            version: AtomicU64::new(version),
        })))
    }

    /// Writes one published snapshot into the maps (blocking: map writes and the
    /// generation grace period).
    pub fn apply(&self, published: &Published) {
        let plan = match plan_of(published) {
            Ok(p) => p,
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(version = published.version, error = %e, "no kernel plan for the snapshot; the kernel keeps the previous one");
                return;
            }
        };
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        // The counters' labels and the version follow the programs as they switch to the
        // new generation, also when clearing the old one afterwards fails.
        let switched = |names: &[String]| {
            *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names.to_vec();
            self.version.store(published.version, Ordering::Relaxed);
        };
        match limiter.apply_with(&plan, switched) {
            Ok(()) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(version = published.version, error = %e, "writing the kernel maps failed; the kernel keeps the previous generation");
            }
        }
    }

    /// Follows the publisher: every new snapshot goes into the maps, in order (the one
    /// written at start is not written again).
    pub async fn follow(self: Arc<Self>, mut rx: watch::Receiver<Option<Arc<Published>>>) {
        let mut last = self.version.load(Ordering::Relaxed);
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(p) = current
                && p.version != last
            {
                last = p.version;
                let me = Arc::clone(&self);
                if let Err(e) = tokio::task::spawn_blocking(move || me.apply(&p)).await {
                    tracing::error!(error = %e, "kernel map writer panicked");
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Prometheus text for the limiter: packets by listener and reason, and map writes.
    /// Blocking (a map lookup per counter), but never waits for a map update.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP omnirelay_xdp_packets_total Packets seen by the XDP limiter, by listener and verdict reason.\n");
        out.push_str("# TYPE omnirelay_xdp_packets_total counter\n");
        match self.counters.read() {
            Ok(c) => {
                let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                for (slot, row) in c.slots.iter().enumerate() {
                    // Ids no listener holds are left out: a removed listener's series
                    // ends, and its id's counts restart from zero when it is reused.
                    let listener = match slot {
                        0 => "-",
                        n => match names.get(n - 1) {
                            Some(name) if !name.is_empty() => name.as_str(),
                            _ => continue,
                        },
                    };
                    for reason in Reason::ALL {
                        out.push_str(&format!(
                            "omnirelay_xdp_packets_total{{listener=\"{listener}\",reason=\"{}\"}} {}\n",
                            reason.name(),
                            row[reason as usize]
                        ));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the XDP counters failed"),
        }
        for (name, help, v) in [
            (
                "omnirelay_control_kernel_applies_total",
                "Snapshots written into the kernel maps.",
                &self.applied,
            ),
            (
                "omnirelay_control_kernel_apply_failures_total",
                "Snapshots whose kernel maps could not be written.",
                &self.failed,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP omnirelay_control_kernel_version Snapshot version held by the kernel maps.\n# TYPE omnirelay_control_kernel_version gauge\nomnirelay_control_kernel_version {}\n",
            self.version.load(Ordering::Relaxed)
        ));
        out
    }
}

/// The kernel plan of a published snapshot.
fn plan_of(published: &Published) -> Result<KernelPlan, String> {
    let snapshot = v1::Snapshot::decode(published.signed.payload.as_slice())
        .map_err(|e| format!("the snapshot does not decode: {e}"))?;
    plan(&snapshot).map_err(|e| e.to_string())
}
