//! Kernel steering of new connections between workers: the control daemon pins a
//! `sk_reuseport` program (`steer_reuseport`) and its maps under `/sys/fs/bpf/omnirelay`;
//! the data plane registers its worker sockets in the pinned socket array and attaches the
//! program to each listener's `SO_REUSEPORT` group. The program then picks the worker for
//! each new connection by the 4-tuple hash in proportion to the weights in the snapshot
//! (`[kernel].worker_weights`): weight 0 drains a worker (no new connections; its open
//! ones finish), for a graceful restart.
//!
//! Layout of the socket array: listener `l` (in snapshot order), worker `w` sits at index
//! `l * MAX_WORKERS + w`; the port map tells the program where a port's workers start.
//! One data plane per host uses the pinned maps.

use std::{
    net::SocketAddr,
    os::fd::{BorrowedFd, RawFd},
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

/// The pinned steering program and maps, opened by the data plane.
pub struct Steering {
    pin_dir: PathBuf,
    program: SkReuseport,
    sockets: ReusePortSockArray<MapData>,
    ports: HashMap<MapData, u32, SteerPort>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("pin_dir", &self.pin_dir)
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
    /// Opens the pins the control daemon made under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, SteeringError> {
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
        Ok(Steering {
            pin_dir: pin_dir.to_path_buf(),
            program,
            sockets,
            ports,
        })
    }

    /// Registers every worker's socket of every listener, then attaches the program to
    /// each listener's group. `listeners[l].1[w]` is worker `w`'s socket for listener `l`;
    /// the fds must stay open for the process's life (they are the listening sockets).
    pub fn register(
        &mut self,
        listeners: &[(SocketAddr, Vec<RawFd>)],
    ) -> Result<(), SteeringError> {
        if listeners.len() > MAX_STEER_PORTS as usize {
            return Err(SteeringError::Limits(format!(
                "{} listeners; steering handles at most {MAX_STEER_PORTS}",
                listeners.len()
            )));
        }
        let mut seen_ports = std::collections::HashSet::new();
        for (l, (addr, fds)) in listeners.iter().enumerate() {
            if fds.len() > MAX_WORKERS as usize {
                return Err(SteeringError::Limits(format!(
                    "{} workers; steering handles at most {MAX_WORKERS}",
                    fds.len()
                )));
            }
            if !seen_ports.insert(addr.port()) {
                tracing::warn!(%addr, "another listener has this port; its connections are not steered");
                continue;
            }
            let base = l as u32 * MAX_WORKERS;
            for (w, fd) in fds.iter().enumerate() {
                self.sockets
                    .set(base + w as u32, fd, 0)
                    .map_err(|e| SteeringError::Register {
                        what: format!("worker {w} socket of {addr}"),
                        reason: e.to_string(),
                    })?;
            }
            // Sockets first, then the port: the program never picks an empty slot.
            let entry = SteerPort {
                base,
                workers: fds.len() as u32,
            };
            self.ports
                .insert(u32::from(addr.port()), entry, 0)
                .map_err(|e| SteeringError::Register {
                    what: format!("port {}", addr.port()),
                    reason: e.to_string(),
                })?;
            if let Some(first) = fds.first() {
                // SAFETY: the fd is one of this process's listening sockets, open for the
                // duration of this call (the caller keeps it open).
                let socket = unsafe { BorrowedFd::borrow_raw(*first) };
                self.program
                    .attach(socket)
                    .map_err(|e| SteeringError::Attach {
                        addr: *addr,
                        reason: e.to_string(),
                    })?;
            }
            tracing::info!(%addr, workers = fds.len(), base, "worker sockets registered for kernel steering");
        }
        Ok(())
    }
}
