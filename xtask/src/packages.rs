//! Debian packages the tests and the demo need, installed with apt-get when missing.

use std::process::Command;

use anyhow::bail;
use omnirelay_test_support::caps::find_in_path;

use crate::{run, toolchain::Outcome};

/// Each entry: a program the project runs, and the Debian package that provides it.
/// The one list of system tools; add to it when a test starts needing a new one.
pub const REQUIRED: &[(&str, &str)] = &[
    ("ip", "iproute2"),        // network namespaces and veth pairs
    ("setpriv", "util-linux"), // running a test binary without privileges
    ("nginx", "nginx-light"),  // upstream of the proxy tests (with the echo module)
    ("curl", "curl"),          // independent HTTP client in tests and the demo
    ("wrk", "wrk"),            // load under live config changes
    ("haproxy", "haproxy"),    // an upstream that sends 103 Early Hints
];

/// What the VM harness (`cargo xtask vm-test`, and its smoke run in `cargo xtask test`)
/// needs besides [`REQUIRED`]: qemu, depmod to generate the `modules.dep` that kernel
/// packages leave to their postinst, and GNU cpio, which its test reads the harness's
/// initramfs archives back with.
pub const VM_REQUIRED: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
];

/// Installs the packages of every missing program in [`REQUIRED`].
pub fn ensure() -> anyhow::Result<Outcome> {
    ensure_list(REQUIRED, "system tools", find_in_path)
}

/// Installs the packages of every missing program in [`VM_REQUIRED`].
pub fn ensure_vm() -> anyhow::Result<Outcome> {
    // depmod is only ever run by absolute path, so /usr/sbin need not be in PATH.
    ensure_list(VM_REQUIRED, "VM tools", find_program)
}

/// Finds `program` in PATH or in the sbin folders (not in every user's PATH).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    find_in_path(program).or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(program))
            .find(|p| p.is_file())
    })
}

fn ensure_list(
    list: &[(&str, &str)],
    what: &str,
    find: fn(&str) -> Option<std::path::PathBuf>,
) -> anyhow::Result<Outcome> {
    let missing: Vec<&str> = list
        .iter()
        .filter(|(program, _)| find(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = list.iter().map(|(p, _)| *p).collect();
        return Ok(Outcome::Present(format!("{what}: {}", names.join(", "))));
    }
    if !nix_is_root() {
        bail!(
            "missing Debian packages {}; install them as root: apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("    installing Debian packages: {}", missing.join(" "));
    run::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(Outcome::Installed(format!(
        "Debian packages: {}",
        missing.join(", ")
    )))
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
