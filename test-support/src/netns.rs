//! Network namespaces and veth pairs for tests, created with iproute2 and removed by RAII
//! guards (also on panic).
//!
//! Names embed the creating process id and a sequence number, so tests in parallel threads
//! and processes never collide; namespaces left behind by a killed test process are swept
//! the next time any test process creates one.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

use nix::sched::{CloneFlags, setns};

/// Where iproute2 keeps its named network namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Prefix of every namespace this crate creates.
const NAME_PREFIX: &str = "omnirelay-t";

static SEQ: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Errors from setting up or entering a test namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// An `ip` command failed; carries the command line and what it printed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Spawning a command or opening a namespace file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("setns into network namespace {name}: {errno}")]
    Setns {
        /// The namespace name.
        name: String,
        /// The errno from the syscall.
        errno: nix::Error,
    },
}

/// Runs a command and turns a non-zero exit into [`NetnsError::Command`].
pub fn run_checked(cmd: &mut Command) -> Result<Output, NetnsError> {
    let line = format!("{cmd:?}").replace('"', "");
    let output = cmd.output().map_err(|source| NetnsError::Io {
        what: format!("spawn `{line}`"),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(NetnsError::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    run_checked(Command::new("ip").args(args))
}

/// A named network namespace, deleted when dropped. Loopback is up from the start.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace; `tag` (a few letters) makes the name readable in `ip netns`.
    pub fn new(tag: &str) -> Result<Self, NetnsError> {
        SWEEP.call_once(sweep_stale);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}-{}-{seq}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, usable with `setns(2)`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n <this namespace> <args>` and returns its standard output.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = ip(&full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// A panic in `f` is resumed on the caller's thread, so assertions inside work as usual.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = std::fs::File::open(self.path()).map_err(|source| NetnsError::Io {
            what: format!("open {}", self.path().display()),
            source,
        })?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Setns {
                    name: self.name.clone(),
                    errno,
                })?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Makes `cmd` start inside this namespace by `setns(2)` alone. Unlike `ip netns exec`
    /// it keeps the caller's mount namespace, so `/sys/fs/bpf` pins stay shared with the
    /// host (what a daemon restart test needs).
    pub fn enter(&self, cmd: &mut Command) -> Result<(), NetnsError> {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let file = std::fs::File::open(self.path()).map_err(|source| NetnsError::Io {
            what: format!("open {}", self.path().display()),
            source,
        })?;
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; `file` is moved in and outlives the call.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// A command that runs `program` inside this namespace (through `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also destroys every interface inside it.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "omnirelay-test-support: could not delete netns {}: {e}",
                self.name
            );
        }
    }
}

/// Deletes namespaces left by test processes that no longer exist (killed mid-test).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{NAME_PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// One end of a veth pair: its interface name, namespace and addresses.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// Interface name inside its namespace.
    pub ifname: String,
    /// Name of the namespace holding this end.
    pub netns: String,
    /// IPv4 address (prefix length 24).
    pub ipv4: Ipv4Addr,
    /// IPv6 address (prefix length 64, no duplicate address detection).
    pub ipv6: Ipv6Addr,
}

/// A veth pair joining two namespaces, both ends up and addressed in a subnet of their own:
/// IPv4 in 198.18.0.0/15 (reserved for benchmarking, never routed) and IPv6 in fd00::/8.
#[derive(Debug)]
pub struct VethPair {
    /// The end in the first namespace (`.1` / `::1`).
    pub a: VethEnd,
    /// The end in the second namespace (`.2` / `::2`).
    pub b: VethEnd,
}

impl VethPair {
    /// Creates a pair with end `a` in `ns_a` and end `b` in `ns_b`.
    pub fn new(ns_a: &NetNs, ns_b: &NetNs) -> Result<Self, NetnsError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Addresses only need to be unique inside the two namespaces, but distinct subnets
        // keep captures readable when several pairs exist.
        let subnet = seq % 250 + 1;
        let tag = format!("{}{}", std::process::id() % 100_000, seq % 1000);
        let a = VethEnd {
            ifname: format!("orv{tag}a"),
            netns: ns_a.name().to_owned(),
            ipv4: Ipv4Addr::new(198, 18, subnet as u8, 1),
            ipv6: Ipv6Addr::new(0xfd00, 0x0e1a, 0, subnet as u16, 0, 0, 0, 1),
        };
        let b = VethEnd {
            ifname: format!("orv{tag}b"),
            netns: ns_b.name().to_owned(),
            ipv4: Ipv4Addr::new(198, 18, subnet as u8, 2),
            ipv6: Ipv6Addr::new(0xfd00, 0x0e1a, 0, subnet as u16, 0, 0, 0, 2),
        };
        ip(&[
            "link", "add", &a.ifname, "netns", &a.netns, "type", "veth", "peer", "name", &b.ifname,
            "netns", &b.netns,
        ])?;
        for (ns, end) in [(ns_a, &a), (ns_b, &b)] {
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", end.ipv4),
                "dev",
                &end.ifname,
            ])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", end.ipv6),
                "dev",
                &end.ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", &end.ifname, "up"])?;
        }
        Ok(VethPair { a, b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capability, require_caps};

    #[test]
    fn namespace_is_isolated_and_removed_on_drop() {
        require_caps!(Capability::NetNs);
        let ns = NetNs::new("iso").unwrap();
        let path = ns.path();
        assert!(path.exists());
        // Inside, only loopback exists.
        let links = ns.ip(&["-o", "link", "show"]).unwrap();
        assert_eq!(links.lines().count(), 1, "unexpected links: {links}");
        drop(ns);
        assert!(!path.exists(), "namespace file still present after drop");
    }

    #[test]
    fn namespace_is_removed_when_the_test_panics() {
        require_caps!(Capability::NetNs);
        let mut path = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ns = NetNs::new("pan").unwrap();
            path = Some(ns.path());
            panic!("planted");
        }));
        assert!(result.is_err());
        assert!(!path.unwrap().exists());
    }

    #[test]
    fn veth_pair_carries_traffic_between_namespaces() {
        require_caps!(Capability::NetNs);
        let (left, right) = (NetNs::new("l").unwrap(), NetNs::new("r").unwrap());
        let pair = VethPair::new(&left, &right).unwrap();
        let listener = right
            .run(|| std::net::UdpSocket::bind((pair.b.ipv4, 0)).unwrap())
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        left.run(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.send_to(b"hello", (pair.b.ipv4, port)).unwrap();
        })
        .unwrap();
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = listener.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.ip(), std::net::IpAddr::V4(pair.a.ipv4));
    }

    #[test]
    fn run_propagates_panics_from_inside_the_namespace() {
        require_caps!(Capability::NetNs);
        let ns = NetNs::new("prop").unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = ns.run(|| panic!("inside"));
        }));
        assert!(result.is_err());
    }

    #[test]
    fn command_runs_inside_the_namespace() {
        require_caps!(Capability::NetNs);
        let ns = NetNs::new("cmd").unwrap();
        let out = run_checked(ns.command("ip").args(["-o", "link", "show"])).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "expected only lo, got: {text}");
        assert!(text.contains("lo:"));
    }
}
