//! `cargo xtask bench`: OmniRelay side by side with nginx, haproxy and Envoy, each proxy
//! configured equivalently by this harness, pinned to one core with the load generator on
//! the other; per-core figures from the proxy's own CPU time. Writes one result file per
//! run to `bench/results/`, checks it against `bench/schema/result.schema.json`, and
//! regenerates `bench/dashboard/index.html` from every result file.
//!
//! `--smoke` (for `cargo xtask test`): one 2 s run of `http1-keepalive` with OmniRelay and
//! nginx, 1,000 idle connections; result and dashboard go to a temp dir, not `bench/`.

mod args;
mod browser;
mod configs;
mod dashboard;
mod http;
mod idle;
mod keepalive;
mod kernel;
mod knobs;
mod large_body;
mod peers;
mod procs;
mod propagation;
mod results;
mod schema;
mod series;
mod stats;
mod summary;
mod tools;
mod upstream;
mod wrk;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::run::{self, step};
pub use args::BenchArgs;
use peers::{Binaries, Peer};

/// Every scenario that has landed.
const SCENARIOS: &[&str] = &[
    keepalive::NAME,
    large_body::NAME,
    kernel::XDP_COST,
    kernel::FLOOD,
    propagation::NAME,
];

fn results_dir() -> PathBuf {
    run::workspace_root().join("bench/results")
}

fn dashboard_dir() -> PathBuf {
    run::workspace_root().join("bench/dashboard")
}

/// Installs headless Chromium when it is missing (the dashboard test opens the page in
/// it; `cargo xtask test` calls this before the tests).
pub fn ensure_browser() -> anyhow::Result<()> {
    browser::ensure().map(|_| ())
}

/// Runs the command.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.report {
        return report(&results_dir(), &dashboard_dir()).map(|_| ());
    }
    for s in &args.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; landed: {}", SCENARIOS.join(", "));
        }
    }
    let mut plan = args::plan(args)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.smoke && cores < 2 {
        // The test command's smoke: a visible skip, never a silent pass.
        let line =
            format!("SKIP bench smoke: needs 2 cores (proxy and load generator), has {cores}");
        println!("{line}");
        if let Some(log) = std::env::var_os(omnirelay_test_support::skip::SKIP_LOG_ENV) {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            writeln!(f, "{line}")?;
        }
        return Ok(());
    }
    if plan.proxy_core >= cores || plan.load_core >= cores || plan.proxy_core == plan.load_core {
        bail!("need two distinct cores below {cores} for --proxy-core and --load-core");
    }
    let started = Instant::now();
    let started_at = results::now_secs();
    let load_at_start = load_average();
    let nofile = procs::raise_nofile(200_000)?;
    if u64::from(plan.idle_conns) + 1000 > nofile {
        bail!(
            "the open-file limit is {nofile}: too low for {} idle connections (--idle-conns)",
            plan.idle_conns
        );
    }

    step("tools and binaries");
    let mut wanted = vec!["nginx", "wrk", "taskset"];
    if plan.peers.contains(&Peer::Haproxy) {
        wanted.push("haproxy");
    }
    if !args.smoke {
        wanted.push("h2load");
    }
    tools::ensure_packages(&wanted)?;
    let envoy = if plan.peers.contains(&Peer::Envoy) {
        tools::ensure_envoy()
            .map_err(|e| println!("    envoy unavailable (its runs will be marked failed): {e:#}"))
            .ok()
    } else {
        None
    };
    let bins = Binaries {
        omnirelay_dir: tools::build_omnirelay()?,
        baseline: args
            .baseline
            .as_deref()
            .map(tools::build_baseline)
            .transpose()?,
        envoy,
        nofile,
    };
    plan.omni = knobs::omnirelay(
        &bins.omnirelay_dir.join("omnirelay-dataplane"),
        args.ring_entries,
        args.uring_mode.as_deref(),
    )?;
    let load_before = load_average();

    let mut scenarios = Vec::new();
    let names: Vec<&str> = if args.smoke && args.scenarios.is_empty() {
        // The test command's smoke is one short run of one scenario.
        vec![keepalive::NAME]
    } else if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    for name in names {
        step(&format!("scenario {name}"));
        let result = match name {
            kernel::XDP_COST => {
                kernel::cost::run(&bins.omnirelay_dir, plan.proxy_core, plan.runs.max(3) * 2)
            }
            kernel::FLOOD => kernel::flood::run(
                &bins.omnirelay_dir,
                &kernel::flood::FloodPlan {
                    runs: plan.runs.min(3),
                    duration_s: plan.duration_s,
                    connections: plan.connections,
                    proxy_core: plan.proxy_core,
                    load_core: plan.load_core,
                },
                bins.nofile,
            ),
            large_body::NAME => large_body::run(&plan, &bins),
            propagation::NAME => propagation::run(&plan, &bins),
            _ => keepalive::run(&plan, &bins),
        };
        let sc = result.unwrap_or_else(|e| {
            println!("    FAILED {e:#}");
            results::scenario_error(
                name,
                &format!("{e:#}"),
                knobs::knobs(&plan, bins.nofile, None),
            )
        });
        scenarios.push(sc);
    }

    let mode = args::mode(args);
    let doc = json!({
        "schema_version": results::SCHEMA_VERSION,
        "id": format!("{}-{mode}", results::utc(started_at).replace(':', "-")),
        "mode": mode,
        "command": std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        "started_at": results::utc(started_at),
        "finished_at": results::utc(results::now_secs()),
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": results::machine(),
        "load_average": {
            "at_start": load_at_start,
            "before": load_before,
            "after": load_average(),
        },
        "versions": tools::versions(&bins, &plan.peers),
        "scenarios": scenarios,
    });
    summary::print(&doc);

    let scratch = omnirelay_test_support::process::TempDir::new("bench-smoke");
    let (res_dir, dash_dir) = if args.smoke {
        (
            scratch.path().join("results"),
            scratch.path().join("dashboard"),
        )
    } else {
        (results_dir(), dashboard_dir())
    };
    let path = results::write(&res_dir, &doc)?;
    println!("\n    result: {}", path.display());
    let html = if args.smoke {
        // The committed results must stay valid too; the page is built from them and the
        // smoke's result, into the temp dir.
        let mut all = check_all(&results_dir())?;
        all.extend(check_all(&res_dir)?);
        dashboard::write(&all, &dash_dir)?
    } else {
        report(&res_dir, &dash_dir)?
    };
    println!(
        "    dashboard: {} ({:.0?} in all)",
        html.display(),
        started.elapsed()
    );
    verdict(&doc, args.smoke, &html)
}

/// Checks every result in `res` against the schema, writes the dashboard into `dash`.
fn report(res: &std::path::Path, dash: &std::path::Path) -> anyhow::Result<PathBuf> {
    let all = check_all(res)?;
    let html = dashboard::write(&all, dash)?;
    println!(
        "    {} result file(s) match the schema; dashboard {}",
        all.len(),
        html.display()
    );
    Ok(html)
}

fn check_all(dir: &std::path::Path) -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let schema = schema::load()?;
    let all = results::load_all(dir)?;
    for (p, v) in &all {
        schema::check(&schema, v, p)?;
    }
    Ok(all)
}

/// Fails when OmniRelay failed (and, for the smoke, when anything failed or the page
/// holds no data points).
fn verdict(doc: &Value, smoke: bool, html: &std::path::Path) -> anyhow::Result<()> {
    let statuses: Vec<(&str, &str)> = doc["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?"),
                s["status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    for (name, status) in &statuses {
        if *status == "failed" || (smoke && *status != "ok") {
            bail!("scenario {name}: {status} (details above and in the result file)");
        }
        if *status == "partial" {
            println!("    scenario {name}: a peer failed; it has no ratio (see above)");
        }
    }
    if smoke {
        let page = std::fs::read_to_string(html).context("read the dashboard")?;
        let bars = page.matches("class=\"bar\"").count();
        let points = page.matches("class=\"point\"").count();
        if bars == 0 || points == 0 {
            bail!("the dashboard has {bars} bars and {points} history points");
        }
        println!(
            "    smoke ok: result matches the schema; dashboard has {bars} bars, {points} points"
        );
    }
    Ok(())
}

fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}
