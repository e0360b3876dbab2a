//! `xdp-cost`: `omnirelay-control xdp-cost` runs each program 1,000,000 times per sample in
//! the kernel (`BPF_PROG_TEST_RUN`) and prints the kernel's mean nanoseconds per run: the
//! floor (a program that only returns `XDP_DROP`), the limiter's pass path (a SYN within
//! budget: parse, listener lookup, bucket compare-and-swap, pass), its drop path (a SYN
//! over budget) and a frame for no budgeted listener. Samples of the four alternate within
//! each invocation. Ratios are to the floor; the target is the limiter within 2×.

use std::{path::Path, process::Command, time::Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::super::series::{self, Series};

/// Repeats per program per sample.
pub const REPEAT: u32 = 1_000_000;

/// Runs the scenario: `samples` invocations of `omnirelay-control xdp-cost`, pinned to
/// `core`.
pub fn run(omnirelay_dir: &Path, core: usize, samples: u32) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut s = Series::new(
        &format!("Nanoseconds per packet (BPF_PROG_TEST_RUN, {REPEAT} repeats)"),
        "ns, lower is better",
        true,
        "floor",
    );
    let control = omnirelay_dir.join("omnirelay-control");
    for _ in 0..samples {
        let out = Command::new("taskset")
            .args(["-c", &core.to_string()])
            .arg(&control)
            .args(["xdp-cost", "--repeat", &REPEAT.to_string(), "--runs", "1"])
            .output()
            .with_context(|| format!("running {} xdp-cost", control.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            for label in ["floor", "limiter-pass", "limiter-drop", "limiter-unlisted"] {
                s.fail(label, &why);
            }
            break;
        }
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line).context("xdp-cost output")?;
            for (label, key) in [
                ("floor", "floor_ns"),
                ("limiter-pass", "pass_ns"),
                ("limiter-drop", "drop_ns"),
                ("limiter-unlisted", "unlisted_ns"),
            ] {
                let ns = v[key].as_f64().context("xdp-cost: missing field")?;
                s.push(label, ns);
            }
        }
    }
    let floor = s.median("floor");
    let pass = s.median("limiter-pass");
    let notes = match (floor, pass) {
        (Some(f), Some(p)) => vec![format!(
            "limiter pass path {:.0} ns = {:.2}× the floor ({:.0} ns); target ≤ 2×",
            p,
            p / f,
            f
        )],
        _ => vec![],
    };
    Ok(series::scenario_json(
        super::XDP_COST,
        started.elapsed().as_secs_f64(),
        json!({ "repeat": REPEAT, "samples": samples, "core": core }),
        &[s],
        &notes,
    ))
}
