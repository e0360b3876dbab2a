//! `cargo xtask test`: the one test command (README, CI). Format check, clippy with
//! `-D warnings`, rustdoc with `-D warnings`, then every test tier this host can run; tests that need what the host
//! lacks print a SKIP line, and all skips are listed at the end. Last, a VM smoke run
//! (the first kernel of the VM harness, the XDP test) keeps `cargo xtask vm-test` from
//! rotting; it is skipped, with a SKIP line, only where qemu cannot be installed or run.

use std::path::PathBuf;

use omnirelay_test_support::skip::SKIP_LOG_ENV;

use crate::{
    run::{self, step},
    setup, vm,
};

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip `cargo fmt --check`, clippy and rustdoc (for a quick local loop; CI never does
    /// this).
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for `cargo test` (a test-name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// One file per run, so two test runs at once (two worktrees' CI, a developer and CI) never
/// mix their skip lists.
fn skip_log() -> PathBuf {
    run::workspace_root()
        .join("target")
        .join(format!("omnirelay-skips-{}.log", std::process::id()))
}

/// Runs the whole suite.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::print_capabilities();
    if !args.no_lint {
        step("format check");
        run::run(run::cargo().args(["fmt", "--all", "--", "--check"]))?;
        step("clippy (all targets, -D warnings)");
        run::run(run::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        step("clippy of the eBPF programs (pinned nightly, bpfel-unknown-none, -D warnings)");
        crate::toolchain::clippy_ebpf()?;
        step("rustdoc (private items too, -D warnings: no broken links)");
        run::run(
            run::cargo()
                .args(["doc", "--no-deps", "--document-private-items"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
    }

    step("headless Chromium (the dashboard test opens the page in it)");
    if let Err(e) = crate::bench::ensure_browser() {
        println!("    missing   chromium: {e:#} (the dashboard test fails without it)");
    }

    step("unit and integration tests");
    let log = skip_log();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&log, "")?;
    let mut cmd = run::cargo();
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    cmd.args(["test", "--no-fail-fast"])
        .args(&args.cargo_test_args)
        .env(SKIP_LOG_ENV, &log);
    let (result, mut totals) = run_counting(&mut cmd);

    step("fuzz smoke (each cargo-fuzz target for 20 s)");
    let fuzz_result = crate::fuzz::run(&crate::fuzz::FuzzArgs {
        seconds: 20,
        target: None,
    });
    match &fuzz_result {
        Ok(()) => totals.passed += crate::fuzz::TARGETS.len() as u64,
        Err(_) => totals.failed += 1,
    }

    step("VM smoke (cargo xtask vm-test --quick: first kernel, XDP test)");
    let smoke_result = match vm::smoke() {
        vm::Smoke::Skipped(why) => {
            let line = format!("SKIP vm-test smoke: {why}");
            println!("{line}");
            append_skip(&log, &line);
            Ok(())
        }
        vm::Smoke::Ran(Ok(summary)) => {
            totals.passed += (summary.counts.passed + summary.counts.skipped) as u64;
            totals.failed += summary.counts.failed as u64;
            for line in &summary.skips {
                append_skip(&log, line);
            }
            if summary.failed {
                Err(anyhow::anyhow!(
                    "VM smoke failed: {} failed (matrix above)",
                    summary.counts.failed
                ))
            } else {
                Ok(())
            }
        }
        vm::Smoke::Ran(Err(e)) => {
            totals.failed += 1;
            Err(e.context("VM smoke could not run"))
        }
    };

    step("bench smoke (cargo xtask bench --smoke)");
    let bench_result = match std::env::current_exe() {
        Ok(me) => run::run(
            std::process::Command::new(me)
                .args(["bench", "--smoke"])
                .env(SKIP_LOG_ENV, &log),
        ),
        Err(e) => Err(anyhow::anyhow!("cannot find the xtask binary: {e}")),
    };
    match &bench_result {
        Ok(()) => totals.passed += 1,
        Err(_) => totals.failed += 1,
    }

    let skips = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let skipped = skips.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    step("skipped tests");
    if skipped == 0 {
        println!("    none: every test ran");
    } else {
        for line in skips.lines() {
            println!("    {line}");
        }
    }
    println!(
        "\nomnirelay: {} passed, {} failed, {skipped} skipped",
        totals.passed.saturating_sub(skipped),
        totals.failed
    );
    result.and(fuzz_result).and(smoke_result).and(bench_result)
}

/// Adds a line to the skip log, so the summary lists it with the libtest skips.
fn append_skip(log: &std::path::Path, line: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Sums of libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Adds one `test result: ok. 3 passed; 0 failed; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout line by line while summing libtest's result lines.
fn run_counting(cmd: &mut std::process::Command) -> (anyhow::Result<()>, Totals) {
    use std::io::BufRead as _;
    let line = run::describe(cmd);
    println!("    $ {line}");
    let mut totals = Totals::default();
    let mut child = match cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return (
                Err(anyhow::anyhow!("could not start `{line}`: {e}")),
                totals,
            );
        }
    };
    if let Some(out) = child.stdout.take() {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{l}");
            totals.add_line(&l);
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow::anyhow!("`{line}` failed ({status})")),
        Err(e) => Err(anyhow::anyhow!("waiting for `{line}`: {e}")),
    };
    (result, totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_libtest_result_lines_and_ignore_others() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("test foo ... ok");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 4,
                failed: 2
            }
        );
    }
}
