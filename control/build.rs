//! Builds the eBPF programs in `ebpf/omnirelay-ebpf` with the pinned nightly and the
//! project's bpf-linker (both installed by `cargo xtask setup`), and leaves the object in
//! `OUT_DIR` for `include_bytes_aligned!`.

use std::path::Path;

include!("../ebpf/toolchain.rs");

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let workspace = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("control/ has no parent folder"))?;
    let ebpf_dir = workspace.join("ebpf").join("omnirelay-ebpf");
    let common_dir = workspace.join("ebpf").join("omnirelay-ebpf-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("ebpf/toolchain.rs").display()
    );
    for var in ["OMNIRELAY_TOOLS_DIR", "XDG_CACHE_HOME", "HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let linker = bpf_linker_path();
    if !linker.is_file() {
        anyhow::bail!(
            "bpf-linker {BPF_LINKER_VERSION} for {EBPF_NIGHTLY} is not installed (looked for {}).\n\
             Run `cargo xtask setup` once; it installs the pinned nightly and builds bpf-linker \
             against that nightly's LLVM.",
            linker.display()
        );
    }
    println!("cargo:rerun-if-changed={}", linker.display());
    check_nightly()?;

    // rustc finds the BPF linker through PATH; put the project's copy first.
    let bin_dir = linker.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs)?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
    unsafe {
        std::env::set_var("PATH", joined);
        // aya-build turns every line the inner cargo prints into a cargo warning; keep only
        // real diagnostics.
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }

    let ebpf_dir = ebpf_dir.to_string_lossy().into_owned();
    let package = aya_build::Package {
        name: "omnirelay-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_NIGHTLY)).map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs with {EBPF_NIGHTLY} failed: {e:#}\n\
             If the toolchain is missing, run `cargo xtask setup`."
        )
    })
}

/// Fails early, with the command that fixes it, when the pinned nightly or its `rust-src`
/// is missing (aya-build would otherwise fail deep inside `-Z build-std`).
fn check_nightly() -> anyhow::Result<()> {
    let out = std::process::Command::new("rustup")
        .args(["run", EBPF_NIGHTLY, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output();
    let sysroot = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => anyhow::bail!(
            "the eBPF toolchain {EBPF_NIGHTLY} is not installed. Run `cargo xtask setup` once."
        ),
    };
    let library = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
    if !library.is_dir() {
        anyhow::bail!(
            "{EBPF_NIGHTLY} lacks the rust-src component ({} missing). Run `cargo xtask setup`.",
            library.display()
        );
    }
    Ok(())
}
