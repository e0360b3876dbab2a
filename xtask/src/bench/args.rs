//! The options of `cargo xtask bench` and the plan (knobs) they give.

use anyhow::Context as _;

use super::{keepalive, peers::Peer};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (default: all that have landed: http1-keepalive, http1-large-body,
    /// xdp-cost, flood, snapshot-propagation).
    pub scenarios: Vec<String>,
    /// Fewer, shorter runs (3 × 5 s per proxy and case; 20 config changes per route count
    /// and trigger); all scenarios in under 10 minutes.
    #[arg(long)]
    pub quick: bool,
    /// One 2 s run of http1-keepalive (or of the scenarios named) with OmniRelay and nginx;
    /// results and dashboard into a temp dir only.
    #[arg(long, conflicts_with = "quick")]
    pub smoke: bool,
    /// Measured runs per proxy and body size (default 5; --quick 3).
    #[arg(long)]
    pub runs: Option<u32>,
    /// Seconds per measured run (default 10; --quick 5).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Seconds of warm-up per proxy and body size (default 3; --quick 2).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Proxies, comma-separated (default: omnirelay,nginx,haproxy,envoy).
    #[arg(long, value_delimiter = ',')]
    pub proxies: Vec<String>,
    /// http1-keepalive: response body sizes in bytes, comma-separated (default: 100,16384).
    #[arg(long, value_delimiter = ',')]
    pub bodies: Vec<usize>,
    /// snapshot-propagation: route counts, comma-separated (default: 10,1000,10000).
    #[arg(long, value_delimiter = ',')]
    pub routes: Vec<usize>,
    /// snapshot-propagation: config changes per route count and trigger (default 60;
    /// --quick 20; --smoke 3).
    #[arg(long)]
    pub changes: Option<u32>,
    /// Idle keep-alive connections for the memory test (default 10000; 0 skips it).
    #[arg(long)]
    pub idle_conns: Option<u32>,
    /// Core of the proxies under test.
    #[arg(long, default_value_t = 0)]
    pub proxy_core: usize,
    /// Core of wrk and the upstream.
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// OmniRelay data plane: io_uring submission queue entries (`--ring-entries`).
    #[arg(long)]
    pub ring_entries: Option<u32>,
    /// OmniRelay data plane: io_uring completion mode (`--uring-mode`: default, coop, defer).
    #[arg(long)]
    pub uring_mode: Option<String>,
    /// Also run OmniRelay built from this git revision (as `omnirelay-baseline`), its runs
    /// alternating with the work tree's build: an A/B of a change, reported as the paired
    /// CPU ratio of the two. Built once per revision under `target/bench-baseline/`.
    #[arg(long, value_name = "REV")]
    pub baseline: Option<String>,
    /// Run nothing: check every result file against the schema, regenerate the dashboard.
    #[arg(long)]
    pub report: bool,
}

/// The mode recorded with the run: smoke, quick, full, or custom when a knob was set.
pub fn mode(args: &BenchArgs) -> &'static str {
    let custom = args.runs.is_some()
        || args.duration.is_some()
        || args.warmup.is_some()
        || args.idle_conns.is_some()
        || !args.proxies.is_empty()
        || !args.bodies.is_empty()
        || !args.routes.is_empty()
        || args.changes.is_some()
        || args.connections != 64
        || args.ring_entries.is_some()
        || args.uring_mode.is_some()
        || args.baseline.is_some();
    match (args.smoke, args.quick, custom) {
        (true, _, _) => "smoke",
        (_, _, true) => "custom",
        (_, true, _) => "quick",
        _ => "full",
    }
}

/// The knobs of the run: the mode's defaults, overridden by the options given.
pub fn plan(args: &BenchArgs) -> anyhow::Result<keepalive::Plan> {
    let (runs, duration, warmup, idle, changes) = match (args.smoke, args.quick) {
        (true, _) => (1, 2, 1, 1_000, 3),
        (_, true) => (3, 5, 2, 10_000, 20),
        _ => (5, 10, 3, 10_000, 60),
    };
    let mut peers = if !args.proxies.is_empty() {
        args.proxies
            .iter()
            .map(|p| Peer::parse(p))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else if args.smoke {
        vec![Peer::OmniRelay, Peer::Nginx]
    } else {
        Peer::ALL.to_vec()
    };
    if args.baseline.is_some() {
        // Right after the work tree's build, so each pair of their runs is adjacent.
        let at = peers
            .iter()
            .position(|p| *p == Peer::OmniRelay)
            .context("--baseline compares with omnirelay: add it to --proxies")?;
        peers.insert(at + 1, Peer::Baseline);
    }
    let bodies = match (&args.bodies, args.smoke) {
        (b, _) if !b.is_empty() => b.clone(),
        (_, true) => vec![100],
        _ => vec![100, 16 * 1024],
    };
    Ok(keepalive::Plan {
        peers,
        bodies,
        runs: args.runs.unwrap_or(runs).max(1),
        duration_s: args.duration.unwrap_or(duration).max(1),
        warmup_s: args.warmup.unwrap_or(warmup),
        connections: args.connections.max(1),
        idle_conns: args.idle_conns.unwrap_or(idle),
        proxy_core: args.proxy_core,
        load_core: args.load_core,
        route_counts: if args.routes.is_empty() {
            vec![10, 1_000, 10_000]
        } else {
            args.routes.clone()
        },
        changes: args.changes.unwrap_or(changes).max(1),
        omni: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn args_of(argv: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn a_baseline_runs_right_after_omnirelay() {
        let args = args_of(&["--baseline", "HEAD~1", "--proxies", "nginx,omnirelay,envoy"]);
        assert_eq!(mode(&args), "custom");
        assert_eq!(
            plan(&args).unwrap().peers,
            [Peer::Nginx, Peer::OmniRelay, Peer::Baseline, Peer::Envoy]
        );
        let without = args_of(&["--baseline", "HEAD~1", "--proxies", "nginx"]);
        let err = plan(&without).unwrap_err().to_string();
        assert!(err.contains("add it to --proxies"), "{err}");
    }
}
