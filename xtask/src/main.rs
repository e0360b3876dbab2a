//! `cargo xtask`: the one entry point for developers, CI and kernel engineers.
//!
//! - `setup`: installs what the project needs (eBPF nightly, bpf-linker built against its
//!   LLVM, Debian packages) idempotently, and prints what this host can do.
//! - `test`: format check, clippy with `-D warnings`, then every test tier this host can run.
//! - `demo`: OmniRelay on its embedded defaults, with a live config change (`--xdp`: the XDP
//!   counter on a veth pair in two network namespaces).
//! - `fuzz`: the cargo-fuzz targets of the parsers of untrusted bytes.
//! - `vm-test`: boots Debian kernels in qemu and runs the kernel-facing tests inside
//!   (XDP, kTLS), printing a kernel × test matrix. Inside those VMs this same binary is
//!   the init (PID 1).
//! - `bench`: OmniRelay beside nginx, haproxy and Envoy; results in `bench/results/`, the
//!   dashboard in `bench/dashboard/`.
//!
//! Every command except `setup` first runs the toolchain part of setup, which is quick when
//! everything is in place.

mod bench;
mod demo;
mod fuzz;
mod packages;
mod run;
mod setup;
mod test;
mod toolchain;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "OmniRelay developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install the eBPF toolchain, bpf-linker and system packages; print host capabilities.
    Setup,
    /// Format check, clippy (-D warnings), and all tests this host can run.
    Test(test::TestArgs),
    /// Run the demo: control daemon, data plane and upstreams on the embedded defaults, with a
    /// live config change (`--xdp`: the XDP counter on live traffic instead).
    Demo(demo::DemoArgs),
    /// Run the cargo-fuzz targets (parsers of untrusted bytes) with the pinned nightly.
    Fuzz(fuzz::FuzzArgs),
    /// Boot Debian kernels in qemu and run the kernel-facing tests inside: a kernel × test
    /// matrix (pass / fail / skipped with reason).
    VmTest(vm::VmTestArgs),
    /// Benchmark OmniRelay against nginx, haproxy and Envoy (per-core CPU, latency, memory);
    /// writes bench/results/ and regenerates bench/dashboard/.
    Bench(bench::BenchArgs),
    /// Inside a vm-test guest: the planted failing test (exits 1).
    #[command(hide = true)]
    VmPlantedFailure,
    /// Inside a vm-test guest: the planted kernel crash.
    #[command(hide = true)]
    VmPlantedPanic,
}

fn main() -> std::process::ExitCode {
    // In a vm-test guest the kernel starts this binary as /init: PID 1 is only ever that.
    if std::process::id() == 1 {
        vm::guest::main();
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, without a backtrace: these are operator-facing errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup => setup::run_full(),
        Command::Test(args) => {
            setup::run_toolchain()?;
            test::run(&args)
        }
        Command::Fuzz(args) => {
            setup::run_toolchain()?;
            fuzz::run(&args)
        }
        Command::Demo(args) => {
            setup::run_toolchain()?;
            demo::run(&args)
        }
        Command::VmTest(args) => {
            if !args.list {
                setup::run_toolchain()?;
            }
            vm::command(&args)
        }
        Command::Bench(args) => {
            if !args.report {
                setup::run_toolchain()?;
            }
            bench::run(&args)
        }
        Command::VmPlantedFailure => vm::guest::planted_failure(),
        Command::VmPlantedPanic => vm::guest::planted_panic(),
    }
}
