//! The eBPF toolchain: the pinned nightly with `rust-src`, and bpf-linker built against that
//! nightly's own libLLVM (there is no prebuilt download here, and the distro's LLVM is older).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::run::{self, output};

include!("../../ebpf/toolchain.rs");

/// What `ensure_*` did, for the summary line.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already in place; nothing changed.
    Present(String),
    /// Installed or built now.
    Installed(String),
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    // Never let a rustup proxy install a toolchain behind our back: we do it explicitly.
    cmd.env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

/// The pinned nightly's sysroot, if that toolchain is installed.
fn nightly_sysroot() -> Option<PathBuf> {
    output(rustup().args(["run", EBPF_NIGHTLY, "rustc", "--print", "sysroot"])).map(PathBuf::from)
}

fn has_rust_src(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib/src/rust/library/core").is_dir()
}

/// Whether the pinned nightly has clippy (the test command lints the eBPF programs with it).
fn has_clippy() -> bool {
    output(rustup().args(["run", EBPF_NIGHTLY, "cargo-clippy", "--version"])).is_some()
}

/// Installs the pinned nightly with `rust-src` and clippy unless they are already there.
pub fn ensure_nightly() -> anyhow::Result<Outcome> {
    if output(Command::new("rustup").arg("--version")).is_none() {
        bail!("rustup is not installed; OmniRelay's eBPF build needs it to install {EBPF_NIGHTLY}");
    }
    let what = format!("{EBPF_NIGHTLY} with rust-src and clippy");
    if let Some(sysroot) = nightly_sysroot()
        && has_rust_src(&sysroot)
        && has_clippy()
    {
        return Ok(Outcome::Present(what));
    }
    if nightly_sysroot().is_none() {
        println!("    installing {EBPF_NIGHTLY} (minimal profile + rust-src + clippy, about 30 s)");
        run::run(rustup().args([
            "toolchain",
            "install",
            EBPF_NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--component",
            "clippy",
        ]))?;
    }
    let sysroot = nightly_sysroot().context("the nightly is still not usable after install")?;
    if !has_rust_src(&sysroot) {
        run::run(rustup().args(["component", "add", "rust-src", "--toolchain", EBPF_NIGHTLY]))?;
    }
    if !has_clippy() {
        run::run(rustup().args(["component", "add", "clippy", "--toolchain", EBPF_NIGHTLY]))?;
    }
    Ok(Outcome::Installed(what))
}

/// Lints the eBPF programs: clippy of the pinned nightly for their target, `-D warnings`
/// (the workspace's clippy skips them: they build only for `bpfel-unknown-none`).
pub fn clippy_ebpf() -> anyhow::Result<()> {
    let mut cmd = rustup();
    cmd.args(["run", EBPF_NIGHTLY, "cargo", "clippy", "--quiet", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .current_dir(run::workspace_root().join("ebpf").join("omnirelay-ebpf"))
        .env(
            "CARGO_TARGET_DIR",
            run::workspace_root().join("target").join("ebpf-clippy"),
        );
    // The outer cargo's toolchain settings must not leak into the nightly's.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    run::run(&mut cmd)
}

/// The LLVM major version of the pinned nightly (`LLVM version: 23.1.1` gives 23).
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let vv = output(rustup().args(["run", EBPF_NIGHTLY, "rustc", "-vV"]))
        .context("`rustc -vV` of the eBPF nightly failed")?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc -vV` printed no LLVM version")?;
    version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("unparsable LLVM version {version:?}"))
}

/// The nightly's shared libLLVM (`libLLVM.so.<ver>-rust-<ver>-nightly`).
fn nightly_libllvm(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let lib = sysroot.join("lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("read {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("libLLVM.so."))
                .unwrap_or(false)
        });
    found.with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn linker_works(path: &Path) -> bool {
    output(Command::new(path).arg("--version")).is_some()
}

/// Builds bpf-linker against the nightly's libLLVM into the project's tools folder, unless
/// a working one is already there.
pub fn ensure_bpf_linker() -> anyhow::Result<Outcome> {
    let linker = bpf_linker_path();
    if linker.is_file() && linker_works(&linker) {
        return Ok(Outcome::Present(format!(
            "bpf-linker {BPF_LINKER_VERSION} at {}",
            linker.display()
        )));
    }
    let sysroot = nightly_sysroot().context("the eBPF nightly must be installed first")?;
    let major = nightly_llvm_major()?;
    let libllvm = nightly_libllvm(&sysroot)?;

    // bpf-linker's build finds LLVM through LLVM_PREFIX/lib/libLLVM.so.
    let prefix = tools_dir().join(format!("llvm-{EBPF_NIGHTLY}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("create {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("symlink {} -> {}", link.display(), libllvm.display()))?;

    println!(
        "    building bpf-linker {BPF_LINKER_VERSION} with feature llvm-{major} against {}",
        libllvm.display()
    );
    println!("    (one-time, about 1-3 minutes on 2 cores; cargo's progress follows)");
    let started = Instant::now();
    let root = bpf_linker_root();
    let mut cmd = run::cargo();
    cmd.args([
        "install",
        "bpf-linker",
        "--force",
        "--version",
        BPF_LINKER_VERSION,
    ])
    .args([
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ])
    .arg("--root")
    .arg(&root)
    .env("LLVM_PREFIX", &prefix)
    // The binary loads libLLVM from the nightly's sysroot at run time.
    .env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", sysroot.join("lib").display()),
    )
    .env_remove("RUSTC_WRAPPER")
    .current_dir(tools_dir());
    run::run(&mut cmd)?;
    if !linker_works(&linker) {
        bail!(
            "bpf-linker was built but `{} --version` fails",
            linker.display()
        );
    }
    Ok(Outcome::Installed(format!(
        "bpf-linker {BPF_LINKER_VERSION} (llvm-{major}) in {:.0?}",
        started.elapsed()
    )))
}

/// Makes sure the host toolchain has rustfmt and clippy (the test command needs both).
pub fn ensure_host_components() -> anyhow::Result<Outcome> {
    let fmt_ok = output(run::cargo().args(["fmt", "--version"])).is_some();
    let clippy_ok = output(run::cargo().args(["clippy", "--version"])).is_some();
    if fmt_ok && clippy_ok {
        return Ok(Outcome::Present("rustfmt and clippy".into()));
    }
    run::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    Ok(Outcome::Installed("rustfmt and clippy".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask test` runs setup before the tests, so here everything is in place and a
    /// second setup must find it all and change nothing.
    #[test]
    fn setup_is_idempotent_once_installed() {
        if output(Command::new("rustup").arg("--version")).is_none() {
            omnirelay_test_support::skip::report("needs rustup");
            return;
        }
        if !bpf_linker_path().is_file() {
            omnirelay_test_support::skip::report("needs `cargo xtask setup` to have run once");
            return;
        }
        assert!(matches!(ensure_nightly().unwrap(), Outcome::Present(_)));
        assert!(matches!(ensure_bpf_linker().unwrap(), Outcome::Present(_)));
        assert!(matches!(
            ensure_host_components().unwrap(),
            Outcome::Present(_)
        ));
    }

    #[test]
    fn libllvm_is_found_in_the_nightly_sysroot() {
        let Some(sysroot) = nightly_sysroot() else {
            omnirelay_test_support::skip::report("needs the eBPF nightly (cargo xtask setup)");
            return;
        };
        let lib = nightly_libllvm(&sysroot).unwrap();
        assert!(lib.is_file(), "{}", lib.display());
        assert!(nightly_llvm_major().unwrap() >= 19);
    }
}
