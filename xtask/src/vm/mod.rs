//! `cargo xtask vm-test`: boots real Debian kernels in qemu and runs the kernel-facing
//! tests inside, printing a kernel × test matrix.
//!
//! - [`kernels`]: the list of kernels (one place), fetched with `apt-get download`,
//!   unpacked with `dpkg-deb -x`, modules resolved through `modules.dep`.
//! - [`initramfs`] and [`cpio`]: the image: this xtask binary as `/init`, the test
//!   binaries with their shared libraries, `ip`, the modules and the plan.
//! - [`guest`]: what `/init` does inside (mounts, modules, loopback, tests, power off).
//! - [`qemu`]: the VM, KVM when it works here and TCG otherwise, console captured.
//! - [`results`]: console lines to matrix rows; panic and stall detection.
//!
//! Kernels are cached in `~/.cache/omnirelay/vm/` (see [`kernels::cache_dir`]); each
//! run's images and console logs are in `target/vm/<kernel>/`.

pub mod cpio;
pub mod guest;
pub mod initramfs;
pub mod kernels;
pub mod qemu;
pub mod results;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    packages,
    run::{self, step},
};
use kernels::{KERNELS, KernelSpec, MODULES, ModuleDb};
use qemu::{Accel, AccelChoice, End};
use results::{Column, Counts, Row, Status};

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VmTestArgs {
    /// Boot only this kernel (a name from the list; repeatable). Default: every kernel.
    #[arg(long = "kernel", value_name = "NAME")]
    pub kernels: Vec<String>,
    /// Run only this test (repeatable). Default: every test.
    #[arg(long = "test", value_name = "NAME")]
    pub tests: Vec<String>,
    /// The first kernel and the XDP test only: the smoke run of `cargo xtask test`.
    #[arg(long)]
    pub quick: bool,
    /// Add a test that fails on purpose, to see the harness report it: `exit` (a test
    /// that exits 1, the default) or `panic` (a test that crashes the guest kernel).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "exit")]
    pub plant_failure: Option<Plant>,
    /// Accelerator: `auto` tries KVM briefly and falls back to TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Option<AccelChoice>,
    /// Extra kernel command line (e.g. `loglevel=7` for every boot message).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Echo every console line, not only init and test results.
    #[arg(long)]
    pub verbose: bool,
    /// List the kernels and tests, then exit.
    #[arg(long)]
    pub list: bool,
}

/// The kinds of planted failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Plant {
    /// A test binary that exits with status 1.
    Exit,
    /// A test that crashes the guest kernel (SysRq `c`).
    Panic,
}

/// How a test binary is built.
#[derive(Debug, Clone, Copy)]
enum Build {
    /// An integration test of a package (`cargo test -p P --test T --no-run`).
    IntegrationTest {
        package: &'static str,
        test: &'static str,
    },
    /// A binary of a package (`cargo build -p P --bin B`).
    Bin {
        package: &'static str,
        bin: &'static str,
    },
    /// This xtask binary with a hidden subcommand (the planted failures).
    Xtask(&'static str),
}

/// A test binary the guest runs.
#[derive(Debug, Clone, Copy)]
struct TestDef {
    name: &'static str,
    build: Build,
    /// Seconds before the guest init kills it (generous: TCG emulates every instruction).
    timeout_secs: u64,
    about: &'static str,
}

/// THE list of tests that run inside the VMs. The first is the `--quick` smoke.
const TESTS: &[TestDef] = &[
    TestDef {
        name: "xdp_counter",
        build: Build::IntegrationTest {
            package: "omnirelay-control",
            test: "xdp_counter",
        },
        timeout_secs: 300,
        about: "the XDP counter end to end on a veth pair (control/tests/xdp_counter.rs)",
    },
    TestDef {
        name: "xdp_limiter_verdicts",
        build: Build::IntegrationTest {
            package: "omnirelay-control",
            test: "xdp_limiter_verdicts",
        },
        timeout_secs: 300,
        about: "the XDP limiter's verdicts under the guest kernel's verifier, via BPF_PROG_TEST_RUN \
                (control/tests/xdp_limiter_verdicts.rs)",
    },
    TestDef {
        name: "steer_log",
        build: Build::IntegrationTest {
            package: "omnirelay-control",
            test: "steer_log",
        },
        timeout_secs: 300,
        about: "the steering program under the guest kernel's verifier: a loopback connection \
                finds its listener, picks a worker with no socket and logs it \
                (control/tests/steer_log.rs)",
    },
    TestDef {
        name: "ktls_check",
        build: Build::Bin {
            package: "ktls-check",
            bin: "ktls-check",
        },
        timeout_secs: 300,
        about: "rustls handshake, keys to the kernel, data both ways (vm-tests/ktls-check)",
    },
];

const PLANTED_EXIT: TestDef = TestDef {
    name: "planted_failure",
    build: Build::Xtask("vm-planted-failure"),
    timeout_secs: 60,
    about: "exits 1 on purpose (--plant-failure)",
};

const PLANTED_PANIC: TestDef = TestDef {
    name: "planted_panic",
    build: Build::Xtask("vm-planted-panic"),
    timeout_secs: 60,
    about: "crashes the guest kernel on purpose (--plant-failure panic)",
};

/// Boot timeout while finding out whether KVM works (a KVM guest boots in a second or
/// two; on hosts where KVM guests hang they never print anything).
const KVM_PROBE_BOOT: Duration = Duration::from_secs(20);
/// Boot timeout under TCG (about 5 s unloaded; the machine may be busy building).
const TCG_BOOT: Duration = Duration::from_secs(120);
/// Console lines shown when a kernel's run fails.
const LOG_TAIL: usize = 40;

/// The result of a whole `vm-test` run.
#[derive(Debug)]
pub struct Summary {
    /// Cell counts of the matrix.
    pub counts: Counts,
    /// Whether anything failed.
    pub failed: bool,
    /// `SKIP [kernel] test: reason` for every skipped cell.
    pub skips: Vec<String>,
}

fn select_kernels(args: &VmTestArgs) -> anyhow::Result<Vec<KernelSpec>> {
    if args.quick && args.kernels.is_empty() {
        return Ok(vec![KERNELS[0]]);
    }
    if args.kernels.is_empty() {
        return Ok(KERNELS.to_vec());
    }
    args.kernels
        .iter()
        .map(|name| {
            KERNELS
                .iter()
                .copied()
                .find(|k| k.name == name || k.package == name)
                .with_context(|| {
                    let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                    format!("unknown kernel {name}; known: {}", known.join(", "))
                })
        })
        .collect()
}

fn select_tests(args: &VmTestArgs) -> anyhow::Result<Vec<TestDef>> {
    let mut tests = if !args.tests.is_empty() {
        args.tests
            .iter()
            .map(|name| {
                TESTS
                    .iter()
                    .copied()
                    .find(|t| t.name == name)
                    .with_context(|| {
                        let known: Vec<&str> = TESTS.iter().map(|t| t.name).collect();
                        format!("unknown test {name}; known: {}", known.join(", "))
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else if args.quick {
        vec![TESTS[0]]
    } else {
        TESTS.to_vec()
    };
    match args.plant_failure {
        Some(Plant::Exit) => tests.push(PLANTED_EXIT),
        Some(Plant::Panic) => tests.push(PLANTED_PANIC),
        None => {}
    }
    Ok(tests)
}

fn print_list() {
    step("kernels (xtask/src/vm/kernels.rs)");
    for k in KERNELS {
        println!(
            "    {:<6} newest Debian package matching {}",
            k.name, k.package
        );
    }
    println!("    modules loaded in the guest: {}", MODULES.join(", "));
    step("tests (xtask/src/vm/mod.rs)");
    for t in TESTS.iter().chain([&PLANTED_EXIT, &PLANTED_PANIC]) {
        println!("    {:<16} {}", t.name, t.about);
    }
}

/// The workspace's `target/vm`.
fn work_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| run::workspace_root().join("target"))
        .join("vm")
}

/// Runs `cargo` with JSON messages and returns the executable of the artifact whose
/// target is `target_name`.
fn cargo_executable(args: &[&str], target_name: &str) -> anyhow::Result<PathBuf> {
    let mut cmd = run::cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit());
    println!("    $ {}", run::describe(&cmd));
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .context("run cargo")?;
    if !out.status.success() {
        bail!("`{}` failed ({})", run::describe(&cmd), out.status);
    }
    find_executable(&String::from_utf8_lossy(&out.stdout), target_name)
        .with_context(|| format!("cargo reported no executable for {target_name}"))
}

/// Finds the `executable` of the `compiler-artifact` message for `target_name`.
fn find_executable(json_lines: &str, target_name: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target_name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next()
}

/// A stable copy of this running xtask binary, the guest's init. Copied from
/// `/proc/self/exe`, which still reads the running image after cargo relinks
/// `target/debug/xtask` underneath us (as `cargo test` of the workspace does, with other
/// feature unification, while `cargo xtask test` runs). Rewritten only when it differs,
/// so an unchanged binary leaves the initramfs cache valid.
fn init_binary() -> anyhow::Result<PathBuf> {
    let image = std::fs::read("/proc/self/exe").context("read /proc/self/exe")?;
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join("omnirelay-vm-init");
    if std::fs::read(&dest).ok().as_deref() != Some(&image[..]) {
        let tmp = dir.join(".omnirelay-vm-init.partial");
        std::fs::write(&tmp, &image).with_context(|| format!("write {}", tmp.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &dest)?;
    }
    Ok(dest)
}

/// Builds (or finds) each test's executable; `me` is [`init_binary`].
fn build_tests(tests: &[TestDef], me: &Path) -> anyhow::Result<Vec<(TestDef, PathBuf)>> {
    tests
        .iter()
        .map(|t| {
            let exe = match t.build {
                Build::IntegrationTest { package, test } => {
                    cargo_executable(&["test", "-p", package, "--test", test, "--no-run"], test)?
                }
                Build::Bin { package, bin } => {
                    cargo_executable(&["build", "-p", package, "--bin", bin], bin)?
                }
                Build::Xtask(_) => me.to_owned(),
            };
            println!("    {:<16} {}", t.name, exe.display());
            Ok((*t, exe))
        })
        .collect()
}

/// The guest path and arguments of a test.
fn guest_command(t: &TestDef) -> (String, Vec<String>) {
    match t.build {
        Build::Xtask(sub) => (INIT_GUEST_PATH.to_owned(), vec![sub.to_owned()]),
        _ => (format!("/omnirelay/bin/{}", t.name), Vec::new()),
    }
}

/// Where this xtask binary sits in the guest (the kernel runs it as `rdinit=/init`).
const INIT_GUEST_PATH: &str = "/init";

/// The plan the init follows: modules in load order, then tests.
fn plan(kernel: &kernels::Kernel, modules: &[String], tests: &[TestDef]) -> String {
    let mut steps: Vec<guest::Step> = modules
        .iter()
        .map(|m| guest::Step::Module(initramfs::module_guest_path(kernel, m)))
        .collect();
    for t in tests {
        let (program, args) = guest_command(t);
        steps.push(guest::Step::Test {
            name: t.name.to_owned(),
            timeout_secs: t.timeout_secs,
            program,
            args,
        });
    }
    let mut text: String = steps.iter().map(|s| s.to_line() + "\n").collect();
    text.shrink_to_fit();
    text
}

/// Picks the first accelerator to use.
fn initial_accel(choice: AccelChoice) -> (Accel, bool) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, false),
        AccelChoice::Kvm => (Accel::Kvm, false),
        AccelChoice::Auto => {
            if let Err(why) = qemu::kvm_device_usable() {
                println!("    accelerator: TCG ({why})");
                return (Accel::Tcg, false);
            }
            if let Some(why) = qemu::kvm_known_bad() {
                println!(
                    "    accelerator: TCG (KVM not tried: {why}; remembered in {}; \
                     `--accel kvm` tries it anyway)",
                    qemu::kvm_verdict_file().display()
                );
                return (Accel::Tcg, false);
            }
            println!(
                "    accelerator: trying KVM (falls back to TCG if the guest prints nothing \
                 within {} s)",
                KVM_PROBE_BOOT.as_secs()
            );
            (Accel::Kvm, true)
        }
    }
}

/// Prints the last lines of a console log.
fn print_tail(lines: &[String], log: &Path) {
    let from = lines.len().saturating_sub(LOG_TAIL);
    println!(
        "    --- last {} console lines (full log: {}) ---",
        lines.len() - from,
        log.display()
    );
    for line in &lines[from..] {
        println!("    | {line}");
    }
    println!("    ---");
}

/// Runs the matrix. Returns the summary; the caller decides what a failure means.
pub fn run(args: &VmTestArgs) -> anyhow::Result<Summary> {
    if args.list {
        print_list();
        return Ok(Summary {
            counts: Counts::default(),
            failed: false,
            skips: Vec::new(),
        });
    }
    let started = Instant::now();
    let kernels = select_kernels(args)?;
    let tests = select_tests(args)?;
    step("VM tools");
    match packages::ensure_vm()? {
        crate::toolchain::Outcome::Present(d) | crate::toolchain::Outcome::Installed(d) => {
            println!("    {d}")
        }
    }

    step("test binaries");
    let me = init_binary()?;
    let built = build_tests(&tests, &me)?;
    let mut payload = initramfs::Payload::default();
    payload.add_executable(INIT_GUEST_PATH, &me)?;
    let ip = omnirelay_test_support::caps::find_in_path("ip")
        .or_else(|| Some(PathBuf::from("/usr/sbin/ip")).filter(|p| p.is_file()))
        .context("iproute2's `ip` is not installed")?;
    payload.add_executable("/usr/sbin/ip", &ip)?;
    // Tests that drive the daemon binary look for it in PATH when its host path (which may
    // lie under the guest's tmpfs /tmp) is absent; building the control tests built it.
    let control = crate::run::workspace_root().join("target/debug/omnirelay-control");
    if control.is_file() {
        payload.add_executable("/omnirelay/bin/omnirelay-control", &control)?;
    }
    for (t, exe) in &built {
        if !matches!(t.build, Build::Xtask(_)) {
            payload.add_executable(&guest_command(t).0, exe)?;
        }
    }
    println!("    image payload: {} files", payload.len());

    let accel_choice = args.accel.unwrap_or(AccelChoice::Auto);
    let (mut accel, mut probing_kvm) = initial_accel(accel_choice);
    let mut columns = Vec::new();
    let mut headers = Vec::new();
    let mut any_failed = false;
    for spec in &kernels {
        step(&format!("kernel {}", spec.name));
        let kernel = kernels::ensure(spec)?;
        let db = ModuleDb::load(&kernel)?;
        let resolved = db
            .resolve(MODULES)
            .with_context(|| format!("modules of {}", kernel.release))?;
        let compressed = resolved.load_order.iter().any(|m| !m.ends_with(".ko"));
        if compressed
            && kernel
                .config()?
                .get("CONFIG_MODULE_DECOMPRESS")
                .map(String::as_str)
                != Some("y")
        {
            bail!(
                "{} ships compressed modules but lacks CONFIG_MODULE_DECOMPRESS; \
                 the guest cannot load them",
                kernel.describe()
            );
        }
        println!(
            "    {}: {} module files to load{}",
            kernel.describe(),
            resolved.load_order.len(),
            if resolved.builtin.is_empty() {
                String::new()
            } else {
                format!(" (built in: {})", resolved.builtin.join(", "))
            }
        );
        let dir = work_dir().join(spec.name);
        std::fs::create_dir_all(&dir)?;
        let initrd = dir.join("initramfs.cpio");
        let part = initramfs::KernelPart {
            kernel: &kernel,
            modules: &resolved.load_order,
            plan: plan(&kernel, &resolved.load_order, &tests),
        };
        let built_now = initramfs::build(&payload, &part, &initrd)?;
        println!(
            "    initramfs {} ({:.1} MiB, {})",
            initrd.display(),
            std::fs::metadata(&initrd)?.len() as f64 / (1024.0 * 1024.0),
            if built_now { "built" } else { "unchanged" }
        );

        let log_path = dir.join("console.log");
        let test_budget: u64 = tests.iter().map(|t| t.timeout_secs).sum();
        let vm_run = loop {
            let boot_timeout = if probing_kvm {
                KVM_PROBE_BOOT
            } else {
                TCG_BOOT
            };
            let cfg = qemu::VmConfig {
                kernel: &kernel,
                initrd: &initrd,
                accel,
                boot_timeout,
                total_timeout: boot_timeout + Duration::from_secs(test_budget + 30),
                log_path: &log_path,
                extra_cmdline: &args.cmdline,
                verbose: args.verbose,
            };
            println!("    booting under {} ...", accel.name().to_uppercase());
            let vm_run = qemu::run(&cfg)?;
            if probing_kvm {
                probing_kvm = false;
                // Either failure mode seen on hosts with broken nested KVM: the guest
                // hangs before printing anything, or qemu aborts setting up the vCPU.
                if vm_run.boot_secs.is_none()
                    && matches!(vm_run.end, End::BootTimeout(_) | End::QemuExited(_))
                {
                    let why = match &vm_run.end {
                        End::QemuExited(e) => format!(
                            "qemu with KVM exited before the guest booted ({})",
                            e.lines().next().unwrap_or_default()
                        ),
                        _ => format!(
                            "a KVM guest printed nothing within {} s",
                            KVM_PROBE_BOOT.as_secs()
                        ),
                    };
                    println!("    {why}; using TCG from now on");
                    qemu::record_kvm_bad(&why);
                    accel = Accel::Tcg;
                    continue;
                }
            }
            break vm_run;
        };

        let planned: Vec<String> = tests.iter().map(|t| t.name.to_owned()).collect();
        let report = results::parse(&vm_run.lines);
        let booted = report.booted.is_some();
        let warnings = report.warnings.clone();
        let mut rows = results::finalize(report, &planned, &vm_run.end.describe());
        if vm_run.end != End::PoweredOff {
            rows.push(Row {
                test: "(vm)".into(),
                case: None,
                status: Status::Fail(vm_run.end.describe()),
            });
        }
        let failed = rows.iter().any(|r| matches!(r.status, Status::Fail(_)));
        println!(
            "    {} under {}: {}, {:.1} s in the VM{}",
            spec.name,
            accel.name().to_uppercase(),
            match (&vm_run.end, booted) {
                (End::PoweredOff, _) => "powered off".to_owned(),
                (end, _) => end.describe(),
            },
            vm_run.elapsed.as_secs_f64(),
            vm_run
                .boot_secs
                .map(|b| format!(" (booted in {b:.1} s)"))
                .unwrap_or_default()
        );
        for w in &warnings {
            println!("    kernel warning [{}]: {w}", spec.name);
        }
        if failed {
            any_failed = true;
            print_tail(&vm_run.lines, &log_path);
        }
        headers.push(format!(
            "{} = {} under {}, console log {}",
            spec.name,
            kernel.describe(),
            accel.name().to_uppercase(),
            log_path.display()
        ));
        columns.push(Column {
            kernel: spec.name.to_owned(),
            rows,
        });
    }

    step("VM test matrix");
    for h in &headers {
        println!("    {h}");
    }
    println!();
    print!("{}", results::render(&columns));
    let counts = results::count(&columns);
    println!(
        "\nvm-test: {} passed, {} failed, {} skipped ({} kernels, {:.0} s)",
        counts.passed,
        counts.failed,
        counts.skipped,
        columns.len(),
        started.elapsed().as_secs_f64()
    );
    let skips = columns
        .iter()
        .flat_map(|c| {
            c.rows.iter().filter_map(move |r| match &r.status {
                Status::Skip(why) => Some(format!("SKIP [vm {}] {}: {why}", c.kernel, r.label())),
                _ => None,
            })
        })
        .collect();
    Ok(Summary {
        counts,
        failed: any_failed,
        skips,
    })
}

/// `cargo xtask vm-test`: the matrix, failing the command if any cell failed.
pub fn command(args: &VmTestArgs) -> anyhow::Result<()> {
    let summary = run(args)?;
    if summary.failed {
        bail!(
            "vm-test: {} failed (see the matrix above)",
            summary.counts.failed
        );
    }
    Ok(())
}

/// What the smoke step of `cargo xtask test` found.
#[derive(Debug)]
pub enum Smoke {
    /// qemu cannot be installed or started here; the reason.
    Skipped(String),
    /// It ran.
    Ran(anyhow::Result<Summary>),
}

/// The smoke run of `cargo xtask test`: the first kernel, the XDP test.
pub fn smoke() -> Smoke {
    if let Err(e) = packages::ensure_vm() {
        return Smoke::Skipped(format!("VM tools cannot be installed: {e:#}"));
    }
    let Some(qemu) = qemu::binary() else {
        return Smoke::Skipped("qemu-system-x86_64 not installed".into());
    };
    if run::output(std::process::Command::new(&qemu).arg("--version")).is_none() {
        return Smoke::Skipped(format!("{} --version fails", qemu.display()));
    }
    Smoke::Ran(run(&VmTestArgs {
        quick: true,
        accel: Some(AccelChoice::Auto),
        ..VmTestArgs::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_the_first_kernel_and_the_xdp_test() {
        let args = VmTestArgs {
            quick: true,
            ..VmTestArgs::default()
        };
        let kernels = select_kernels(&args).unwrap();
        assert_eq!(kernels, [KERNELS[0]]);
        let tests = select_tests(&args).unwrap();
        assert_eq!(
            tests.iter().map(|t| t.name).collect::<Vec<_>>(),
            ["xdp_counter"]
        );
    }

    #[test]
    fn full_run_covers_at_least_two_kernels_and_every_test_plus_planted() {
        let args = VmTestArgs {
            plant_failure: Some(Plant::Exit),
            ..VmTestArgs::default()
        };
        assert!(select_kernels(&args).unwrap().len() >= 2);
        let names: Vec<&str> = select_tests(&args)
            .unwrap()
            .iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            names,
            [
                "xdp_counter",
                "xdp_limiter_verdicts",
                "steer_log",
                "ktls_check",
                "planted_failure"
            ]
        );
        let bad = VmTestArgs {
            kernels: vec!["2.6".into()],
            ..VmTestArgs::default()
        };
        assert!(
            select_kernels(&bad)
                .unwrap_err()
                .to_string()
                .contains("2.6")
        );
        let bad = VmTestArgs {
            tests: vec!["nope".into()],
            ..VmTestArgs::default()
        };
        assert!(
            select_tests(&bad)
                .unwrap_err()
                .to_string()
                .contains("known")
        );
    }

    #[test]
    fn cargo_json_gives_the_executable_of_the_named_target() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"xdp_counter","kind":["test"]},"executable":"/t/debug/deps/xdp_counter-1"}
{"reason":"compiler-artifact","target":{"name":"omnirelay_control","kind":["lib"]},"executable":null}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            find_executable(json, "xdp_counter"),
            Some(PathBuf::from("/t/debug/deps/xdp_counter-1"))
        );
        assert_eq!(find_executable(json, "omnirelay_control"), None);
    }

    #[test]
    fn plan_loads_modules_first_and_runs_planted_tests_through_the_init_binary() {
        let kernel = kernels::Kernel {
            spec: KERNELS[0],
            package: "p".into(),
            version: "v".into(),
            release: "6.1.0-x".into(),
            root: PathBuf::from("/nonexistent"),
        };
        let text = plan(
            &kernel,
            &["kernel/net/tls/tls.ko".into()],
            &[TESTS[0], PLANTED_EXIT],
        );
        let steps: Vec<guest::Step> = text
            .lines()
            .map(|l| guest::Step::parse(l).unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                guest::Step::Module("/lib/modules/6.1.0-x/kernel/net/tls/tls.ko".into()),
                guest::Step::Test {
                    name: "xdp_counter".into(),
                    timeout_secs: 300,
                    program: "/omnirelay/bin/xdp_counter".into(),
                    args: vec![],
                },
                guest::Step::Test {
                    name: "planted_failure".into(),
                    timeout_secs: 60,
                    program: "/init".into(),
                    args: vec!["vm-planted-failure".into()],
                },
            ]
        );
    }
}
