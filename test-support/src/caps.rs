//! Probes of what this host can do, each answered by trying the real thing once per process
//! (a syscall, a socket option, a namespace), never by guessing from version numbers.

use std::{fmt, os::fd::FromRawFd as _, os::fd::OwnedFd, sync::OnceLock};

use crate::netns::{NetNs, VethPair};

/// Something a test may need from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Effective CAP_NET_ADMIN and CAP_SYS_ADMIN (in practice: running as root).
    Root,
    /// The `bpf(2)` syscall works (a BPF array map can be created).
    BpfSyscall,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux`.
    Btf,
    /// `io_uring_setup(2)` works.
    IoUring,
    /// Kernel TLS: `setsockopt(TCP_ULP, "tls")` finds the TLS module.
    Ktls,
    /// Network namespaces can be created and entered (needs iproute2 and privileges).
    NetNs,
    /// An XDP program can be attached (generic mode) to a veth inside a namespace.
    XdpVeth,
    /// `qemu-system-x86_64` is installed.
    Qemu,
    /// `/dev/kvm` can be opened (whether guests actually run is left to the VM harness).
    Kvm,
    /// A program in `PATH` (nginx, wrk, curl, ...), installed by `cargo xtask setup`.
    Program(&'static str),
}

impl Capability {
    /// Every capability, in the order the setup table prints them.
    pub const ALL: [Capability; 9] = [
        Capability::Root,
        Capability::BpfSyscall,
        Capability::Btf,
        Capability::IoUring,
        Capability::Ktls,
        Capability::NetNs,
        Capability::XdpVeth,
        Capability::Qemu,
        Capability::Kvm,
    ];

    /// A short name for tables and skip lines.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Root => "root (CAP_NET_ADMIN+CAP_SYS_ADMIN)",
            Capability::BpfSyscall => "bpf syscall",
            Capability::Btf => "kernel BTF",
            Capability::IoUring => "io_uring",
            Capability::Ktls => "kTLS (TCP_ULP tls)",
            Capability::NetNs => "network namespaces",
            Capability::XdpVeth => "XDP on veth",
            Capability::Qemu => "qemu-system-x86_64",
            Capability::Kvm => "KVM (/dev/kvm)",
            Capability::Program(p) => p,
        }
    }
}

/// The outcome of one probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Whether the capability is there.
    pub available: bool,
    /// What was found: the reason it is missing, or a detail of what works.
    pub detail: String,
}

impl Probe {
    fn yes(detail: impl Into<String>) -> Self {
        Probe {
            available: true,
            detail: detail.into(),
        }
    }
    fn no(detail: impl Into<String>) -> Self {
        Probe {
            available: false,
            detail: detail.into(),
        }
    }
}

/// Probes `cap`, once per process; later calls return the cached answer.
pub fn probe(cap: Capability) -> Probe {
    static CACHE: [OnceLock<Probe>; Capability::ALL.len()] = [const { OnceLock::new() }; 9];
    match Capability::ALL.iter().position(|c| *c == cap) {
        Some(idx) => CACHE[idx].get_or_init(|| run_probe(cap)).clone(),
        None => run_probe(cap),
    }
}

/// The capabilities a test needs that this host lacks.
#[derive(Debug)]
pub struct Missing(Vec<(Capability, String)>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(cap, why)| format!("needs {}: {why}", cap.name()))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// Checks that every capability in `caps` is present.
pub fn require(caps: &[Capability]) -> Result<(), Missing> {
    let missing: Vec<_> = caps
        .iter()
        .filter_map(|&cap| {
            let p = probe(cap);
            (!p.available).then_some((cap, p.detail))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Missing(missing))
    }
}

fn run_probe(cap: Capability) -> Probe {
    match cap {
        Capability::Root => probe_root(),
        Capability::BpfSyscall => probe_bpf_syscall(),
        Capability::Btf => probe_btf(),
        Capability::IoUring => probe_io_uring(),
        Capability::Ktls => probe_ktls(),
        Capability::NetNs => probe_netns(),
        Capability::XdpVeth => probe_xdp_veth(),
        Capability::Qemu => probe_qemu(),
        Capability::Kvm => probe_kvm(),
        Capability::Program(p) => match find_in_path(p) {
            Some(path) => Probe::yes(path.display().to_string()),
            None => Probe::no(format!(
                "{p} is not installed (cargo xtask setup installs it)"
            )),
        },
    }
}

/// Effective capability bits of this process, from `/proc/self/status`.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

fn probe_root() -> Probe {
    let Some(eff) = effective_caps() else {
        return Probe::no("cannot read CapEff from /proc/self/status");
    };
    let has = |bit: u32| eff & (1 << bit) != 0;
    match (has(CAP_NET_ADMIN), has(CAP_SYS_ADMIN)) {
        (true, true) => Probe::yes(format!("euid {}", nix::unistd::geteuid())),
        (net, sys) => Probe::no(format!(
            "euid {} lacks{}{} (run as root)",
            nix::unistd::geteuid(),
            if net { "" } else { " CAP_NET_ADMIN" },
            if sys { "" } else { " CAP_SYS_ADMIN" },
        )),
    }
}

/// `bpf(2)` commands and attribute layouts used by the probes (see `union bpf_attr`).
mod bpf {
    pub const BPF_MAP_CREATE: libc::c_long = 0;
    pub const BPF_PROG_LOAD: libc::c_long = 5;
    pub const BPF_LINK_CREATE: libc::c_long = 28;
    pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
    pub const BPF_PROG_TYPE_XDP: u32 = 6;
    pub const BPF_XDP: u32 = 37;
    pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

    /// Calls `bpf(cmd, attr)`, returning the new fd or the errno.
    pub fn call(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<i32, std::io::Error> {
        // SAFETY: `attr` is a zero-initialised buffer at least as large as every `bpf_attr`
        // variant used here, and its size is passed alongside it.
        let ret =
            unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
        if ret < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(ret as i32)
        }
    }

    pub fn put_u32(attr: &mut [u8; 128], offset: usize, value: u32) {
        attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    pub fn put_u64(attr: &mut [u8; 128], offset: usize, value: u64) {
        attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn probe_bpf_syscall() -> Probe {
    let mut attr = [0u8; 128];
    bpf::put_u32(&mut attr, 0, bpf::BPF_MAP_TYPE_ARRAY);
    bpf::put_u32(&mut attr, 4, 4); // key_size
    bpf::put_u32(&mut attr, 8, 8); // value_size
    bpf::put_u32(&mut attr, 12, 1); // max_entries
    match bpf::call(bpf::BPF_MAP_CREATE, &mut attr) {
        Ok(fd) => {
            drop(owned(fd));
            Probe::yes("BPF_MAP_CREATE works")
        }
        Err(e) => Probe::no(format!("BPF_MAP_CREATE failed: {e}")),
    }
}

/// Loads `r0 = XDP_PASS; exit` as an XDP program and returns its fd.
fn load_trivial_xdp() -> Result<OwnedFd, String> {
    // mov64 r0, 2 (XDP_PASS); exit
    let insns: [u64; 2] = [0xb7 | (2u64 << 32), 0x95];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    bpf::put_u32(&mut attr, 0, bpf::BPF_PROG_TYPE_XDP);
    bpf::put_u32(&mut attr, 4, insns.len() as u32);
    bpf::put_u64(&mut attr, 8, insns.as_ptr() as u64);
    bpf::put_u64(&mut attr, 16, license.as_ptr() as u64);
    bpf::put_u32(&mut attr, 68, bpf::BPF_XDP); // expected_attach_type
    bpf::call(bpf::BPF_PROG_LOAD, &mut attr)
        .map(owned)
        .map_err(|e| format!("BPF_PROG_LOAD of a trivial XDP program failed: {e}"))
}

fn probe_xdp_veth() -> Probe {
    if let Err(m) = require(&[Capability::NetNs, Capability::BpfSyscall]) {
        return Probe::no(m.to_string());
    }
    let attempt = || -> Result<String, String> {
        let ns = NetNs::new("probe").map_err(|e| e.to_string())?;
        let _pair = VethPair::new(&ns, &ns).map_err(|e| e.to_string())?;
        let ifname = _pair.a.ifname.clone();
        ns.run(move || {
            let prog = load_trivial_xdp()?;
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .map_err(|e| format!("if_nametoindex({ifname}): {e}"))?;
            let mut attr = [0u8; 128];
            use std::os::fd::AsRawFd as _;
            bpf::put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
            bpf::put_u32(&mut attr, 4, ifindex);
            bpf::put_u32(&mut attr, 8, bpf::BPF_XDP);
            bpf::put_u32(&mut attr, 12, bpf::XDP_FLAGS_SKB_MODE);
            let link = bpf::call(bpf::BPF_LINK_CREATE, &mut attr)
                .map(owned)
                .map_err(|e| format!("BPF_LINK_CREATE (XDP, skb mode) on veth failed: {e}"))?;
            drop(link);
            Ok("generic (skb) mode attach via bpf_link works".to_owned())
        })
        .map_err(|e| e.to_string())?
    };
    match attempt() {
        Ok(detail) => Probe::yes(detail),
        Err(why) => Probe::no(why),
    }
}

fn probe_btf() -> Probe {
    match std::fs::metadata("/sys/kernel/btf/vmlinux") {
        Ok(m) => Probe::yes(format!("/sys/kernel/btf/vmlinux, {} KiB", m.len() / 1024)),
        Err(e) => Probe::no(format!("/sys/kernel/btf/vmlinux: {e}")),
    }
}

fn probe_io_uring() -> Probe {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes `params`, which is large enough.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        let hint = match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            Ok(v) if v.trim() != "0" => format!(" (kernel.io_uring_disabled = {})", v.trim()),
            _ => String::new(),
        };
        Probe::no(format!("io_uring_setup failed: {e}{hint}"))
    } else {
        drop(owned(ret as i32));
        Probe::yes("io_uring_setup works")
    }
}

fn probe_ktls() -> Probe {
    let sock = match nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(s) => s,
        Err(e) => return Probe::no(format!("socket(AF_INET, SOCK_STREAM): {e}")),
    };
    use std::os::fd::AsRawFd as _;
    let ulp = b"tls";
    // SAFETY: valid socket fd; option value pointer and length describe `ulp`.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            ulp.len() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    match (ret, err.raw_os_error()) {
        (0, _) => Probe::yes("TCP_ULP tls accepted"),
        // The module exists; it only refuses an unconnected socket.
        (_, Some(libc::ENOTCONN)) => Probe::yes("tls ULP present"),
        (_, Some(libc::ENOENT)) => {
            Probe::no("setsockopt(TCP_ULP, \"tls\") = ENOENT: kernel built without CONFIG_TLS")
        }
        _ => Probe::no(format!("setsockopt(TCP_ULP, \"tls\"): {err}")),
    }
}

fn probe_netns() -> Probe {
    if find_in_path("ip").is_none() {
        return Probe::no("iproute2's `ip` is not installed");
    }
    // unshare(2) is per thread, so the probe's thread leaves the test's namespace alone.
    let unshare = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET))
        .join()
        .unwrap_or(Err(nix::Error::EINVAL));
    if let Err(e) = unshare {
        return Probe::no(format!("unshare(CLONE_NEWNET): {e}"));
    }
    match NetNs::new("probe") {
        Ok(_) => Probe::yes("ip netns add and setns work"),
        Err(e) => Probe::no(format!("ip netns add: {e}")),
    }
}

fn probe_qemu() -> Probe {
    match find_in_path("qemu-system-x86_64") {
        Some(p) => Probe::yes(p.display().to_string()),
        None => Probe::no("qemu-system-x86_64 not in PATH (package qemu-system-x86)"),
    }
}

fn probe_kvm() -> Probe {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Probe::yes("/dev/kvm opens; guest boot is checked by the VM harness"),
        Err(e) => Probe::no(format!("/dev/kvm: {e}")),
    }
}

/// Finds `program` in `PATH`.
pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_probes_without_panicking_and_explains_itself() {
        for cap in Capability::ALL {
            let p = probe(cap);
            assert!(!p.detail.is_empty(), "{} has no detail", cap.name());
        }
    }

    #[test]
    fn missing_names_each_capability_and_reason() {
        let m = Missing(vec![
            (Capability::Ktls, "ENOENT".into()),
            (Capability::Root, "euid 1000".into()),
        ]);
        let text = m.to_string();
        assert!(text.contains("needs kTLS (TCP_ULP tls): ENOENT"), "{text}");
        assert!(text.contains("needs root"), "{text}");
    }

    #[test]
    fn root_probe_agrees_with_euid() {
        // The probe reads CapEff: it must say yes exactly when both bits are set, and a
        // non-root user without file capabilities never has them.
        let p = probe(Capability::Root);
        let eff = effective_caps().expect("CapEff readable");
        let both = eff & (1 << CAP_NET_ADMIN) != 0 && eff & (1 << CAP_SYS_ADMIN) != 0;
        assert_eq!(p.available, both, "{}", p.detail);
        if !nix::unistd::geteuid().is_root() {
            assert!(!p.available, "{}", p.detail);
        }
    }
}
