//! `cargo xtask fuzz`: runs the cargo-fuzz targets of the parsers of untrusted bytes with
//! the pinned nightly (libFuzzer needs `-Z sanitizer`). cargo-fuzz is installed once into
//! the project's tools folder. `cargo xtask test` runs a short smoke of each target.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::bail;

use crate::{
    run::{self, step},
    toolchain::{EBPF_NIGHTLY, Outcome, tools_dir},
};

/// The cargo-fuzz release the project uses.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target: (crate folder holding `fuzz/`, target name).
pub const TARGETS: &[(&str, &str)] = &[("http1", "http1_request")];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target (default: all).
    pub target: Option<String>,
}

fn cargo_fuzz_path() -> PathBuf {
    tools_dir()
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"))
        .join("bin/cargo-fuzz")
}

/// Installs cargo-fuzz into the tools folder unless it is there.
pub fn ensure_cargo_fuzz() -> anyhow::Result<Outcome> {
    let path = cargo_fuzz_path();
    if path.is_file() {
        return Ok(Outcome::Present(format!("cargo-fuzz {CARGO_FUZZ_VERSION}")));
    }
    println!("    installing cargo-fuzz {CARGO_FUZZ_VERSION} (one-time, about a minute)");
    let root = path
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_else(tools_dir);
    let started = Instant::now();
    run::run(
        run::cargo()
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ])
            .arg("--root")
            .arg(&root),
    )?;
    Ok(Outcome::Installed(format!(
        "cargo-fuzz {CARGO_FUZZ_VERSION} in {:.0?}",
        started.elapsed()
    )))
}

/// Runs each selected target for `seconds`; fails on the first crash.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    match ensure_cargo_fuzz()? {
        Outcome::Present(d) | Outcome::Installed(d) => println!("    ok        {d}"),
    }
    let mut ran = 0;
    for (dir, target) in TARGETS {
        if args.target.as_deref().is_some_and(|t| t != *target) {
            continue;
        }
        ran += 1;
        step(&format!("fuzzing {target} for {} s", args.seconds));
        let crate_dir = run::workspace_root().join(dir);
        let mut cmd = Command::new("rustup");
        cmd.args(["run", EBPF_NIGHTLY])
            .arg(cargo_fuzz_path())
            .args([
                "run",
                target,
                "--",
                &format!("-max_total_time={}", args.seconds),
            ])
            .arg("-print_final_stats=1")
            .current_dir(&crate_dir)
            .env("RUSTUP_AUTO_INSTALL", "0");
        run::run(&mut cmd).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n    a crash input is saved under {}/fuzz/artifacts/{target}/",
                crate_dir.display()
            )
        })?;
    }
    if ran == 0 {
        bail!("no fuzz target named {:?}", args.target);
    }
    Ok(())
}
