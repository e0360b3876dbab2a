//! Kernel steering of new connections between workers: the control daemon pins a
//! `sk_reuseport` program (`steer_reuseport`) and its maps under `/sys/fs/bpf/omnirelay`;
//! the data plane registers its worker sockets in the pinned socket array and attaches the
//! program to each listener's `SO_REUSEPORT` group. The program then picks the worker for
//! each new connection by the 4-tuple hash in proportion to the weights in the snapshot
//! (`[kernel].worker_weights`): weight 0 drains a worker (no new connections; its open
//! ones finish), for a graceful restart.
//!
//! Layout of the socket array: each listener takes a free block `b` when its first socket
//! registers, worker `w` sits at index `b * MAX_WORKERS + w`; the port map tells the
//! program where a port's workers start. Listeners a snapshot adds at run time are
//! registered the same way, removed ones release their block. One data plane per host
//! uses the pinned maps.

use std::{
    net::SocketAddr,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData, ReusePortSockArray},
    programs::{SkReuseport, sk_reuseport::SkReuseportAttachType},
};
use omnirelay_ebpf_common::{
    limiter::{MAX_STEER_PORTS, MAX_WORKERS, SteerPort},
    names::{STEER_PORTS_MAP, STEER_PROGRAM, STEER_SOCKETS_MAP},
};

/// Why steering could not be set up; names the pin, socket or map involved.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    /// A pinned object is missing or unreadable (is the control daemon running with
    /// `[kernel].steering = true`?).
    #[error(
        "opening {path}: {reason} (is omnirelay-control running with [kernel] steering = true and the same pin_dir?)"
    )]
    Open {
        /// The pin path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// More workers or listeners than the maps hold.
    #[error("{0}")]
    Limits(String),
    /// Writing a socket into the array or a port into the port map failed.
    #[error("registering {what}: {reason}")]
    Register {
        /// Which socket or port.
        what: String,
        /// The map error.
        reason: String,
    },
    /// Attaching the program to a listener's group failed.
    #[error("attaching {STEER_PROGRAM} to the SO_REUSEPORT group of {addr}: {reason}")]
    Attach {
        /// The listener address.
        addr: SocketAddr,
        /// The setsockopt error.
        reason: String,
    },
}

/// The pinned steering program and maps, opened by the data plane, and the listener
/// groups registered in them. Shared by the workers ([`SharedSteering`]): each registers
/// its socket of a listener when it binds one (at start or when a snapshot adds it) and
/// unregisters it when the listener is removed.
pub struct Steering {
    pin_dir: PathBuf,
    program: SkReuseport,
    sockets: ReusePortSockArray<MapData>,
    ports: HashMap<MapData, u32, SteerPort>,
    workers: usize,
    groups: Vec<Group>,
}

/// One listener's `SO_REUSEPORT` group: its block of the socket array and which workers'
/// sockets are in it.
#[derive(Debug)]
struct Group {
    addr: SocketAddr,
    /// Block index: worker `w`'s socket sits at `slot * MAX_WORKERS + w`.
    slot: u32,
    /// Whether worker `w` has registered its socket.
    registered: Vec<bool>,
    /// The port entry is written (every worker registered): the program steers the port.
    published: bool,
}

/// Steering shared between the workers of a data plane.
pub type SharedSteering = std::sync::Arc<std::sync::Mutex<Steering>>;

/// Locks the shared steering; a worker that panicked holding it left nothing half-written
/// that the next caller could not redo, so a poisoned lock is taken over.
pub fn lock(steering: &SharedSteering) -> std::sync::MutexGuard<'_, Steering> {
    steering
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("pin_dir", &self.pin_dir)
            .field("workers", &self.workers)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

fn open_map(path: &Path) -> Result<MapData, SteeringError> {
    MapData::from_pin(path).map_err(|e| SteeringError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Steering {
    /// Opens the pins the control daemon made under `pin_dir`, for a data plane of
    /// `workers` workers.
    pub fn open(pin_dir: &Path, workers: usize) -> Result<Self, SteeringError> {
        if workers > MAX_WORKERS as usize {
            return Err(SteeringError::Limits(format!(
                "{workers} workers; steering handles at most {MAX_WORKERS}"
            )));
        }
        let prog_path = pin_dir.join(STEER_PROGRAM);
        let program =
            SkReuseport::from_pin(&prog_path, SkReuseportAttachType::Select).map_err(|e| {
                SteeringError::Open {
                    path: prog_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        let maps = pin_dir.join("maps");
        let sockets = ReusePortSockArray::try_from(aya::maps::Map::ReusePortSockArray(open_map(
            &maps.join(STEER_SOCKETS_MAP),
        )?))
        .map_err(|e| SteeringError::Open {
            path: maps.join(STEER_SOCKETS_MAP),
            reason: e.to_string(),
        })?;
        let ports = HashMap::try_from(aya::maps::Map::HashMap(open_map(
            &maps.join(STEER_PORTS_MAP),
        )?))
        .map_err(|e| SteeringError::Open {
            path: maps.join(STEER_PORTS_MAP),
            reason: e.to_string(),
        })?;
        let mut steering = Steering {
            pin_dir: pin_dir.to_path_buf(),
            program,
            sockets,
            ports,
            workers,
            groups: Vec::new(),
        };
        steering.forget_previous_ports();
        Ok(steering)
    }

    /// Removes the port entries a previous data plane left (one data plane per host uses
    /// the maps): until this one publishes a port, an old entry would point the program at
    /// a block of the socket array this data plane may give to another listener.
    fn forget_previous_ports(&mut self) {
        let stale: Vec<u32> = self.ports.keys().filter_map(Result::ok).collect();
        for port in stale {
            if let Err(e) = self.ports.remove(&port) {
                tracing::warn!(port, error = %e, "removing a previous data plane's port from the steering map");
            }
        }
    }

    /// Registers worker `worker`'s listening socket `socket` for `addr`. The first socket
    /// of a listener takes a free block of the socket array and attaches the program to
    /// the group; the last one (every worker registered) writes the port entry, from which
    /// on the program steers the port (until then the kernel's own hash spreads it).
    /// A listener whose port another listener already has is left to the kernel's hash
    /// (logged); the port map is keyed by port.
    pub fn add(
        &mut self,
        addr: SocketAddr,
        worker: usize,
        socket: BorrowedFd<'_>,
    ) -> Result<(), SteeringError> {
        if worker >= self.workers {
            return Err(SteeringError::Limits(format!(
                "worker {worker} of a data plane started with {} workers",
                self.workers
            )));
        }
        let index = match self.groups.iter().position(|g| g.addr == addr) {
            Some(i) => i,
            None => {
                if let Some(other) = self.groups.iter().find(|g| g.addr.port() == addr.port()) {
                    tracing::warn!(%addr, other = %other.addr, "another listener has this port; its connections are not steered");
                    return Ok(());
                }
                let slot = (0..MAX_STEER_PORTS)
                    .find(|s| self.groups.iter().all(|g| g.slot != *s))
                    .ok_or_else(|| {
                        SteeringError::Limits(format!(
                            "{} listeners steered; steering handles at most {MAX_STEER_PORTS}",
                            self.groups.len()
                        ))
                    })?;
                self.program
                    .attach(socket)
                    .map_err(|e| SteeringError::Attach {
                        addr,
                        reason: e.to_string(),
                    })?;
                self.groups.push(Group {
                    addr,
                    slot,
                    registered: vec![false; self.workers],
                    published: false,
                });
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        let base = group.slot * MAX_WORKERS;
        self.sockets
            .set(base + worker as u32, &socket, 0)
            .map_err(|e| SteeringError::Register {
                what: format!("worker {worker} socket of {addr}"),
                reason: e.to_string(),
            })?;
        group.registered[worker] = true;
        if !group.published && group.registered.iter().all(|r| *r) {
            // Sockets first, then the port: the program never picks an empty slot.
            let entry = SteerPort {
                base,
                workers: self.workers as u32,
            };
            self.ports
                .insert(u32::from(addr.port()), entry, 0)
                .map_err(|e| SteeringError::Register {
                    what: format!("port {}", addr.port()),
                    reason: e.to_string(),
                })?;
            group.published = true;
            tracing::info!(%addr, workers = self.workers, base, "worker sockets registered for kernel steering");
        }
        Ok(())
    }

    /// Worker `worker` stops listening on `addr`: the port entry goes with the first
    /// worker that leaves (the remaining sockets are spread by the kernel's hash until
    /// they close too), the block with the last. The kernel drops a closed socket from the
    /// array by itself.
    pub fn remove(&mut self, addr: SocketAddr, worker: usize) {
        let Some(index) = self.groups.iter().position(|g| g.addr == addr) else {
            return;
        };
        let group = &mut self.groups[index];
        if let Some(r) = group.registered.get_mut(worker) {
            *r = false;
        }
        if group.published {
            group.published = false;
            if let Err(e) = self.ports.remove(&u32::from(addr.port())) {
                tracing::warn!(%addr, error = %e, "removing the port of a removed listener from the steering map");
            }
        }
        if group.registered.iter().all(|r| !*r) {
            self.groups.swap_remove(index);
        }
    }
}
