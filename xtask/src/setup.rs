//! `cargo xtask setup`: everything the project needs, installed idempotently, then a table
//! of what this host can do.

use std::time::Instant;

use omnirelay_test_support::caps::{self, Capability};

use crate::{packages, run::step, toolchain, toolchain::Outcome};

fn report(what: &str, outcome: anyhow::Result<Outcome>) -> anyhow::Result<()> {
    match outcome? {
        Outcome::Present(d) => println!("    ok        {what}: {d}"),
        Outcome::Installed(d) => println!("    installed {what}: {d}"),
    }
    Ok(())
}

/// The toolchain part, run before every other command.
pub fn run_toolchain() -> anyhow::Result<()> {
    let started = Instant::now();
    step("toolchain");
    report("host components", toolchain::ensure_host_components())?;
    report("eBPF nightly", toolchain::ensure_nightly())?;
    report("bpf-linker", toolchain::ensure_bpf_linker())?;
    report("system packages", packages::ensure())?;
    // The VM harness's tools are wanted but not required: without them only the VM
    // smoke of `cargo xtask test` is skipped (with a SKIP line) and vm-test fails.
    if let Err(e) = report("VM packages", packages::ensure_vm()) {
        println!("    missing   VM packages: {e:#} (cargo xtask vm-test needs them)");
    }
    println!("    toolchain ready in {:.1?}", started.elapsed());
    Ok(())
}

/// Toolchain plus the host capability table.
pub fn run_full() -> anyhow::Result<()> {
    run_toolchain()?;
    // Only `test` and `fuzz` need it, so other commands do not pay for its first install.
    report("cargo-fuzz", crate::fuzz::ensure_cargo_fuzz())?;
    print_capabilities();
    Ok(())
}

/// Prints one line per capability: present or missing, and why.
pub fn print_capabilities() {
    step("host capabilities");
    for cap in Capability::ALL {
        let p = caps::probe(cap);
        let mark = if p.available { "yes" } else { "no " };
        println!("    {mark}  {:<36} {}", cap.name(), p.detail);
    }
}
