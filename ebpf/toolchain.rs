// The pinned eBPF toolchain, in one place. `include!`d by `xtask` (which installs it) and by
// `control/build.rs` (which builds the eBPF programs with it), so both always agree.
// See DESIGN.md §6 for why these exact versions.

/// The nightly that builds the eBPF programs (needs `rust-src` for `-Z build-std=core`).
pub const EBPF_NIGHTLY: &str = "nightly-2026-10-01";

/// The bpf-linker release, built against the libLLVM of `EBPF_NIGHTLY`.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where project-owned tools live: `$OMNIRELAY_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/omnirelay/tools`, else `$HOME/.cache/omnirelay/tools`. Outside the
/// work tree on purpose: a fresh clone reuses the bpf-linker an earlier clone built.
pub fn tools_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("OMNIRELAY_TOOLS_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache"));
    cache.join("omnirelay").join("tools")
}

/// The folder whose `bin/bpf-linker` is the project's linker for `EBPF_NIGHTLY`.
pub fn bpf_linker_root() -> std::path::PathBuf {
    tools_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-{EBPF_NIGHTLY}"))
}

/// The project's bpf-linker binary (it may not exist yet).
pub fn bpf_linker_path() -> std::path::PathBuf {
    bpf_linker_root().join("bin").join("bpf-linker")
}
