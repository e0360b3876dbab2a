//! Kernel steering of new connections between workers: the control daemon pins a
//! `sk_reuseport` program (`steer_reuseport`) and its maps under `/sys/fs/bpf/omnirelay`;
//! the data plane registers its worker sockets in the pinned socket array and attaches the
//! program to each listener's `SO_REUSEPORT` group. The program then picks the worker for
//! each new connection by the 4-tuple hash in proportion to the weights in the snapshot
//! (`[kernel].worker_weights`): weight 0 drains a worker (no new connections; its open
//! ones finish), for a graceful restart.
//!
//! Layout of the socket array: each listener takes a free block `b` when its first socket
//! registers, worker `w` sits at index `b * MAX_WORKERS + w`; the port map, keyed by a
//! listener's bound address and port, tells the program where its workers start. Listeners a snapshot adds at run time are
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
    limiter::{MAX_STEER_PORTS, MAX_WORKERS, SteerKey, SteerPort},
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
    /// Writing a socket into the array or a listener into the port map failed.
    #[error("registering {what}: {reason}")]
    Register {
        /// Which socket or listener.
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
    kernel: Pinned,
    groups: Groups,
}

/// The pinned kernel objects the groups are written into.
struct Pinned {
    program: SkReuseport,
    sockets: ReusePortSockArray<MapData>,
    ports: HashMap<MapData, SteerKey, SteerPort>,
}

/// What registering and releasing listener groups asks of the kernel (the pinned program
/// and maps; a recording stand-in in the unit tests).
trait SteerMaps {
    /// Attaches the program to the `SO_REUSEPORT` group of `socket`.
    fn attach(&mut self, socket: BorrowedFd<'_>) -> Result<(), String>;
    /// Puts `socket` at `index` of the socket array.
    fn set_socket(&mut self, index: u32, socket: BorrowedFd<'_>) -> Result<(), String>;
    /// Writes the listener's port entry.
    fn insert_port(&mut self, addr: SocketAddr, entry: SteerPort) -> Result<(), String>;
    /// The block start of the listener's port entry, if there is one.
    fn port_base(&self, addr: SocketAddr) -> Option<u32>;
    /// Removes the listener's port entry.
    fn remove_port(&mut self, addr: SocketAddr) -> Result<(), String>;
}

impl SteerMaps for Pinned {
    fn attach(&mut self, socket: BorrowedFd<'_>) -> Result<(), String> {
        self.program.attach(socket).map_err(|e| reason(&e))
    }

    fn set_socket(&mut self, index: u32, socket: BorrowedFd<'_>) -> Result<(), String> {
        self.sockets.set(index, &socket, 0).map_err(|e| reason(&e))
    }

    fn insert_port(&mut self, addr: SocketAddr, entry: SteerPort) -> Result<(), String> {
        self.ports
            .insert(SteerKey::from(addr), entry, 0)
            .map_err(|e| reason(&e))
    }

    fn port_base(&self, addr: SocketAddr) -> Option<u32> {
        self.ports
            .get(&SteerKey::from(addr), 0)
            .ok()
            .map(|e| e.base)
    }

    fn remove_port(&mut self, addr: SocketAddr) -> Result<(), String> {
        self.ports
            .remove(&SteerKey::from(addr))
            .map_err(|e| reason(&e))
    }
}

/// The listener groups of a data plane of `workers` workers.
#[derive(Debug)]
struct Groups {
    workers: usize,
    list: Vec<Group>,
    /// Listeners left to the kernel's hash, so that each is logged once, not per worker.
    unsteered: Vec<SocketAddr>,
}

/// One listener's `SO_REUSEPORT` group: its block of the socket array and which workers'
/// sockets are in it.
#[derive(Debug)]
struct Group {
    addr: SocketAddr,
    /// Block index: worker `w`'s socket sits at [`Group::base`] `+ w`.
    slot: u32,
    /// Whether worker `w` has registered its socket.
    registered: Vec<bool>,
    /// The port entry is written (every worker registered): the program steers the
    /// listener.
    published: bool,
}

impl Group {
    /// Where the group's block starts in the socket array.
    fn base(&self) -> u32 {
        self.slot * MAX_WORKERS
    }
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
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

fn open_map(path: &Path) -> Result<MapData, SteeringError> {
    MapData::from_pin(path).map_err(|e| SteeringError::Open {
        path: path.to_path_buf(),
        reason: reason(&e),
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
                    reason: reason(&e),
                }
            })?;
        let maps = pin_dir.join("maps");
        let sockets = ReusePortSockArray::try_from(aya::maps::Map::ReusePortSockArray(open_map(
            &maps.join(STEER_SOCKETS_MAP),
        )?))
        .map_err(|e| SteeringError::Open {
            path: maps.join(STEER_SOCKETS_MAP),
            reason: reason(&e),
        })?;
        let ports = HashMap::try_from(aya::maps::Map::HashMap(open_map(
            &maps.join(STEER_PORTS_MAP),
        )?))
        .map_err(|e| SteeringError::Open {
            path: maps.join(STEER_PORTS_MAP),
            reason: reason(&e),
        })?;
        let mut steering = Steering {
            pin_dir: pin_dir.to_path_buf(),
            kernel: Pinned {
                program,
                sockets,
                ports,
            },
            groups: Groups::new(workers),
        };
        steering.forget_previous_ports();
        Ok(steering)
    }

    /// Removes the port entries a previous data plane left (one data plane per host uses
    /// the maps): until this one publishes a port, an old entry would point the program at
    /// a block of the socket array this data plane may give to another listener.
    fn forget_previous_ports(&mut self) {
        let ports = &mut self.kernel.ports;
        let mut stale = Vec::new();
        for key in ports.keys() {
            match key {
                Ok(key) => stale.push(key),
                Err(e) => {
                    tracing::warn!(error = %reason(&e), "listing the steering port map; entries left by a previous data plane may remain");
                    break;
                }
            }
        }
        for key in stale {
            let listener = std::net::SocketAddr::new(
                std::net::Ipv6Addr::from(key.addr).to_canonical(),
                key.port,
            );
            match ports.remove(&key) {
                Ok(()) => tracing::info!(
                    %listener,
                    "removed the steering entry a previous data plane left"
                ),
                Err(e) => {
                    tracing::warn!(%listener, error = %reason(&e), "removing a previous data plane's entry from the steering map")
                }
            }
        }
    }

    /// Registers worker `worker`'s listening socket `socket` for `addr`; true when the
    /// listener is steered, false when it is left to the kernel's hash (logged once): port
    /// 0 (each worker's socket has its own port), or an address the program cannot tell
    /// from another listener's (`1.2.3.4` and `::ffff:1.2.3.4`, or IPv6 scopes, on one
    /// port). The first socket of a listener takes a free block of the socket array and
    /// attaches the program to the group; the last one (every worker registered) writes
    /// the listener's entry, from which on the program steers it (until then the kernel's
    /// hash spreads it). Calling it again for a socket already registered only retries
    /// what failed after it.
    pub fn add(
        &mut self,
        addr: SocketAddr,
        worker: usize,
        socket: BorrowedFd<'_>,
    ) -> Result<bool, SteeringError> {
        self.groups.add(&mut self.kernel, addr, worker, socket)
    }

    /// Worker `worker` stops listening on `addr`: the port entry goes with the first
    /// worker that leaves (the remaining sockets are spread by the kernel's hash until
    /// they close too), the block with the last. The kernel drops a closed socket from the
    /// array by itself.
    pub fn remove(&mut self, addr: SocketAddr, worker: usize) {
        self.groups.remove(&mut self.kernel, addr, worker);
    }
}

impl Groups {
    fn new(workers: usize) -> Groups {
        Groups {
            workers,
            list: Vec::new(),
            unsteered: Vec::new(),
        }
    }

    /// Leaves `addr` to the kernel's hash, saying why the first time a worker asks.
    fn unsteered(&mut self, addr: SocketAddr, why: &str) -> Result<bool, SteeringError> {
        if !self.unsteered.contains(&addr) {
            self.unsteered.push(addr);
            tracing::warn!(%addr, "{why}; its connections are not steered");
        }
        Ok(false)
    }

    /// See [`Steering::add`].
    fn add(
        &mut self,
        maps: &mut impl SteerMaps,
        addr: SocketAddr,
        worker: usize,
        socket: BorrowedFd<'_>,
    ) -> Result<bool, SteeringError> {
        if worker >= self.workers {
            return Err(SteeringError::Limits(format!(
                "worker {worker} of a data plane started with {} workers",
                self.workers
            )));
        }
        if addr.port() == 0 {
            return self.unsteered(addr, "a listener on port 0 has a different port per worker");
        }
        // Found again when added before every worker released it.
        let index = match self.list.iter().position(|g| g.addr == addr) {
            Some(i) => i,
            None => {
                let key = SteerKey::from(addr);
                if let Some(other) = self.list.iter().find(|g| SteerKey::from(g.addr) == key) {
                    let why = format!(
                        "listener {} has the same address and port as the steering program sees them",
                        other.addr
                    );
                    return self.unsteered(addr, &why);
                }
                let slot = (0..MAX_STEER_PORTS)
                    .find(|s| self.list.iter().all(|g| g.slot != *s))
                    .ok_or_else(|| {
                        SteeringError::Limits(format!(
                            "{addr}: {} listeners steered already; steering handles at most {MAX_STEER_PORTS}",
                            self.list.len()
                        ))
                    })?;
                maps.attach(socket)
                    .map_err(|reason| SteeringError::Attach { addr, reason })?;
                self.list.push(Group {
                    addr,
                    slot,
                    registered: vec![false; self.workers],
                    published: false,
                });
                self.list.len() - 1
            }
        };
        let group = &mut self.list[index];
        let base = group.base();
        if !group.registered[worker] {
            // Once only: the kernel refuses a socket that is in the array already.
            maps.set_socket(base + worker as u32, socket)
                .map_err(|reason| SteeringError::Register {
                    what: format!("worker {worker} socket of {addr}"),
                    reason,
                })?;
            group.registered[worker] = true;
        }
        if !group.published && group.registered.iter().all(|r| *r) {
            // Sockets first, then the port: the program never picks an empty slot.
            let entry = SteerPort {
                base,
                workers: self.workers as u32,
            };
            maps.insert_port(addr, entry)
                .map_err(|reason| SteeringError::Register {
                    what: format!("port {} of {addr}", addr.port()),
                    reason,
                })?;
            group.published = true;
            tracing::info!(%addr, workers = self.workers, base, "worker sockets registered for kernel steering");
        }
        Ok(true)
    }

    /// See [`Steering::remove`].
    fn remove(&mut self, maps: &mut impl SteerMaps, addr: SocketAddr, worker: usize) {
        self.unsteered.retain(|a| *a != addr);
        let Some(index) = self.list.iter().position(|g| g.addr == addr) else {
            return;
        };
        let group = &mut self.list[index];
        if let Some(r) = group.registered.get_mut(worker) {
            *r = false;
        }
        if group.published {
            group.published = false;
            // Only the entry this group wrote (another writer of the pinned maps may have
            // replaced it).
            if maps.port_base(addr) == Some(group.base())
                && let Err(e) = maps.remove_port(addr)
            {
                tracing::warn!(%addr, error = %e, "removing the port of a removed listener from the steering map");
            }
        }
        if group.registered.iter().all(|r| !*r) {
            self.list.swap_remove(index);
        }
    }
}

/// An error with its sources ("bpf_map_update_elem failed: Device or resource busy"):
/// aya keeps the system error as the source.
fn reason(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::{
        collections::HashMap,
        fs::File,
        os::fd::{AsFd as _, AsRawFd as _},
    };

    use super::*;

    /// Records what the kernel would hold. Like the kernel, refuses a socket that is in
    /// the array already. `fail` makes the named step fail once.
    #[derive(Default)]
    struct FakeMaps {
        attached: usize,
        sockets: HashMap<u32, i32>,
        /// Keyed as the kernel's map is: two addresses the program cannot tell apart
        /// share an entry.
        ports: HashMap<SteerKey, SteerPort>,
        fail: Option<&'static str>,
    }

    impl FakeMaps {
        fn failing(&mut self, step: &'static str) -> Result<(), String> {
            if self.fail == Some(step) {
                self.fail = None;
                return Err(format!("{step} failed (injected)"));
            }
            Ok(())
        }
    }

    impl SteerMaps for FakeMaps {
        fn attach(&mut self, _socket: BorrowedFd<'_>) -> Result<(), String> {
            self.failing("attach")?;
            self.attached += 1;
            Ok(())
        }

        fn set_socket(&mut self, index: u32, socket: BorrowedFd<'_>) -> Result<(), String> {
            self.failing("set_socket")?;
            let fd = socket.as_raw_fd();
            if self.sockets.values().any(|s| *s == fd) {
                return Err(format!("socket {fd} is in the array already"));
            }
            self.sockets.insert(index, fd);
            Ok(())
        }

        fn insert_port(&mut self, addr: SocketAddr, entry: SteerPort) -> Result<(), String> {
            self.failing("insert_port")?;
            self.ports.insert(key(addr), entry);
            Ok(())
        }

        fn port_base(&self, addr: SocketAddr) -> Option<u32> {
            self.ports.get(&key(addr)).map(|e| e.base)
        }

        fn remove_port(&mut self, addr: SocketAddr) -> Result<(), String> {
            self.ports.remove(&key(addr));
            Ok(())
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(a: SocketAddr) -> SteerKey {
        SteerKey::from(a)
    }

    /// A distinct open descriptor per (listener, worker), standing in for the sockets.
    fn sockets(n: usize) -> Vec<File> {
        (0..n).map(|_| File::open("/dev/null").unwrap()).collect()
    }

    fn groups(workers: usize) -> Groups {
        Groups::new(workers)
    }

    #[test]
    fn a_port_is_published_once_every_worker_registered_and_unpublished_by_the_first_to_leave() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(2), sockets(2));
        let a = addr("127.0.0.1:8080");
        assert!(g.add(&mut maps, a, 1, fds[1].as_fd()).unwrap());
        assert!(maps.ports.is_empty(), "published with worker 0 missing");
        assert_eq!(maps.attached, 1);
        assert!(g.add(&mut maps, a, 0, fds[0].as_fd()).unwrap());
        assert_eq!(maps.ports[&key(a)].base, 0);
        assert_eq!(maps.ports[&key(a)].workers, 2);
        assert_eq!(maps.sockets[&0], fds[0].as_raw_fd());
        assert_eq!(maps.sockets[&1], fds[1].as_raw_fd());
        assert_eq!(maps.attached, 1, "attached once per group");

        g.remove(&mut maps, a, 0);
        assert!(
            maps.ports.is_empty(),
            "the first worker to leave unpublishes"
        );
        assert_eq!(g.list.len(), 1, "the block is kept while a worker is in it");
        g.remove(&mut maps, a, 1);
        assert!(g.list.is_empty());
    }

    #[test]
    fn an_address_moved_on_its_port_is_steered_again_whatever_the_workers_order() {
        let (old, new) = (addr("127.0.0.1:8080"), addr("127.0.0.2:8080"));
        // Each worker removes the old address before it adds the new one; the two workers
        // interleave in any order.
        let orders: [&[(bool, usize)]; 3] = [
            &[(false, 0), (true, 0), (false, 1), (true, 1)],
            &[(false, 0), (false, 1), (true, 0), (true, 1)],
            &[(false, 1), (true, 1), (false, 0), (true, 0)],
        ];
        for order in orders {
            let (mut maps, mut g) = (FakeMaps::default(), groups(2));
            let (old_fds, new_fds) = (sockets(2), sockets(2));
            for (w, fd) in old_fds.iter().enumerate() {
                g.add(&mut maps, old, w, fd.as_fd()).unwrap();
            }
            for &(adding, w) in order {
                if adding {
                    assert!(
                        g.add(&mut maps, new, w, new_fds[w].as_fd()).unwrap(),
                        "{order:?}: worker {w}'s socket was left to the kernel's hash"
                    );
                } else {
                    g.remove(&mut maps, old, w);
                }
            }
            let entry = maps
                .ports
                .get(&key(new))
                .unwrap_or_else(|| panic!("{order:?}: the moved listener is not published"));
            assert!(
                !maps.ports.contains_key(&key(old)),
                "{order:?}: the old address is still published"
            );
            let base = entry.base;
            assert_eq!(maps.sockets[&base], new_fds[0].as_raw_fd(), "{order:?}");
            assert_eq!(
                maps.sockets[&(base + 1)],
                new_fds[1].as_raw_fd(),
                "{order:?}"
            );
            assert_eq!(g.list.len(), 1, "{order:?}: the old group was not freed");
        }
    }

    #[test]
    fn a_failed_step_is_retried_without_putting_a_socket_in_twice() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(2), sockets(2));
        let a = addr("127.0.0.1:8080");
        g.add(&mut maps, a, 0, fds[0].as_fd()).unwrap();
        maps.fail = Some("insert_port");
        let err = g.add(&mut maps, a, 1, fds[1].as_fd()).unwrap_err();
        assert!(
            err.to_string().contains("port 8080 of 127.0.0.1:8080"),
            "{err}"
        );
        assert!(maps.ports.is_empty());
        // The retry only writes the port: setting the socket again would fail.
        assert!(g.add(&mut maps, a, 1, fds[1].as_fd()).unwrap());
        assert_eq!(maps.ports[&key(a)].base, 0);

        // A socket that could not be set is set at the retry.
        let b = addr("127.0.0.1:9090");
        let more = sockets(2);
        g.add(&mut maps, b, 0, more[0].as_fd()).unwrap();
        maps.fail = Some("set_socket");
        assert!(g.add(&mut maps, b, 1, more[1].as_fd()).is_err());
        assert!(!maps.ports.contains_key(&key(b)));
        assert!(g.add(&mut maps, b, 1, more[1].as_fd()).unwrap());
        assert_eq!(maps.ports[&key(b)].base, MAX_WORKERS);
    }

    #[test]
    fn a_leaving_listener_never_removes_an_entry_it_did_not_write() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(1), sockets(1));
        let a = addr("127.0.0.1:8080");
        g.add(&mut maps, a, 0, fds[0].as_fd()).unwrap();
        // Another writer's entry for the listener (another process using the pins).
        maps.ports.insert(
            key(a),
            SteerPort {
                base: 7 * MAX_WORKERS,
                workers: 1,
            },
        );
        g.remove(&mut maps, a, 0);
        assert_eq!(maps.ports[&key(a)].base, 7 * MAX_WORKERS);
    }

    #[test]
    fn listeners_sharing_a_port_are_steered_apart_and_port_zero_is_left_to_the_kernel() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(1), sockets(4));
        let (a, b, any) = (
            addr("127.0.0.1:8080"),
            addr("127.0.0.2:8080"),
            addr("[::]:8080"),
        );
        assert!(g.add(&mut maps, a, 0, fds[0].as_fd()).unwrap());
        assert!(g.add(&mut maps, b, 0, fds[1].as_fd()).unwrap());
        assert!(g.add(&mut maps, any, 0, fds[2].as_fd()).unwrap());
        assert!(
            !g.add(&mut maps, addr("127.0.0.1:0"), 0, fds[3].as_fd())
                .unwrap()
        );
        assert_eq!(
            [a, b, any].map(|l| maps.ports[&key(l)].base),
            [0, MAX_WORKERS, 2 * MAX_WORKERS],
            "each listener its own block"
        );
        assert_eq!(maps.sockets.len(), 3);
        assert_eq!(maps.attached, 3);
        g.remove(&mut maps, a, 0);
        assert!(maps.ports.contains_key(&key(b)) && maps.ports.contains_key(&key(any)));
    }

    #[test]
    fn addresses_the_program_cannot_tell_apart_are_steered_once() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(1), sockets(4));
        let (v4, mapped) = (addr("1.2.3.4:8080"), addr("[::ffff:1.2.3.4]:8080"));
        let (scope2, scope3) = (addr("[fe80::1%2]:8080"), addr("[fe80::1%3]:8080"));
        assert!(g.add(&mut maps, v4, 0, fds[0].as_fd()).unwrap());
        assert!(!g.add(&mut maps, mapped, 0, fds[1].as_fd()).unwrap());
        assert!(g.add(&mut maps, scope2, 0, fds[2].as_fd()).unwrap());
        assert!(!g.add(&mut maps, scope3, 0, fds[3].as_fd()).unwrap());
        assert_eq!(g.unsteered, [mapped, scope3]);
        assert_eq!(maps.ports.len(), 2);
        assert_eq!(maps.ports[&key(v4)].base, 0, "the first keeps its entry");
        assert_eq!(maps.ports[&key(scope2)].base, MAX_WORKERS);
        // Removing one that was left to the kernel takes nothing from the steered one.
        g.remove(&mut maps, mapped, 0);
        assert_eq!(maps.ports[&key(v4)].base, 0);
    }

    #[test]
    fn an_unsteered_listener_is_noted_once_for_all_workers_until_it_is_removed() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(2), sockets(2));
        let zero = addr("127.0.0.1:0");
        for (w, fd) in fds.iter().enumerate() {
            assert!(!g.add(&mut maps, zero, w, fd.as_fd()).unwrap());
        }
        assert_eq!(g.unsteered, [zero], "one note for both workers' sockets");
        g.remove(&mut maps, zero, 0);
        assert!(g.unsteered.is_empty(), "a removed listener is forgotten");
        assert!(!g.add(&mut maps, zero, 0, fds[0].as_fd()).unwrap());
        assert_eq!(g.unsteered, [zero], "added again: noted again");
        assert!(maps.sockets.is_empty() && maps.attached == 0);
    }

    #[test]
    fn a_freed_block_is_taken_by_the_next_listener() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(1), sockets(3));
        let (a, b, c) = (
            addr("127.0.0.1:1001"),
            addr("127.0.0.1:1002"),
            addr("127.0.0.1:1003"),
        );
        g.add(&mut maps, a, 0, fds[0].as_fd()).unwrap();
        g.add(&mut maps, b, 0, fds[1].as_fd()).unwrap();
        assert_eq!(maps.ports[&key(b)].base, MAX_WORKERS);
        g.remove(&mut maps, a, 0);
        // The kernel drops a closed socket from the array.
        maps.sockets.remove(&0);
        g.add(&mut maps, c, 0, fds[2].as_fd()).unwrap();
        assert_eq!(maps.ports[&key(c)].base, 0);
        assert_eq!(maps.ports[&key(b)].base, MAX_WORKERS);
        assert!(!maps.ports.contains_key(&key(a)));
    }

    #[test]
    fn more_workers_than_the_maps_hold_is_refused() {
        let (mut maps, mut g, fds) = (FakeMaps::default(), groups(2), sockets(1));
        let err = g
            .add(&mut maps, addr("127.0.0.1:8080"), 2, fds[0].as_fd())
            .unwrap_err();
        assert!(err.to_string().contains("worker 2"), "{err}");
    }
}
