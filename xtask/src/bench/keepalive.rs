//! Scenario `http1-keepalive`: each proxy with one worker pinned to the proxy core, as a
//! reverse proxy with upstream keep-alive to one nginx upstream; wrk (one thread, 64
//! keep-alive connections) and the upstream share the load core. Per body size: a warm-up
//! of every proxy, then runs alternating A B C D A B C D; per run the proxy's CPU time over
//! the wrk window. Then resident memory idle and with N idle client connections.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    configs, idle,
    idle::RssReport,
    knobs,
    peers::{self, Binaries, Peer, Running},
    procs, results,
    stats::Sample,
    upstream, wrk,
};

pub const NAME: &str = "http1-keepalive";

/// The knobs of one run of the scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    pub peers: Vec<Peer>,
    pub bodies: Vec<usize>,
    pub runs: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: u32,
    pub idle_conns: u32,
    pub proxy_core: usize,
    pub load_core: usize,
    /// OmniRelay's io_uring knobs (settled once its binary is built).
    pub omni: knobs::OmniKnobs,
}

/// One proxy's samples for one body size.
#[derive(Debug)]
pub struct ProxyCase {
    pub peer: Peer,
    pub samples: Vec<Sample>,
    pub error: Option<String>,
}

/// Runs the scenario; returns its JSON object for the result file.
pub fn run(plan: &Plan, bins: &Binaries) -> anyhow::Result<Value> {
    let started = Instant::now();
    let upstream = upstream::start(plan.load_core, &plan.bodies, bins.nofile)?;
    let probe = plan.bodies.first().copied().unwrap_or(100);
    let mut live: Vec<Running> = Vec::new();
    let mut start_errors: Vec<(Peer, String)> = Vec::new();
    let mut idle_kib: Vec<(Peer, u64)> = Vec::new();
    for &peer in &plan.peers {
        match peers::start(
            peer,
            bins,
            &plan.omni.args,
            plan.proxy_core,
            plan.load_core,
            upstream.port,
            probe,
        ) {
            Ok(r) => {
                std::thread::sleep(Duration::from_millis(300));
                let kib = r.proxy.rss_kib();
                println!(
                    "    started {:<10} on {} (idle RSS {kib} KiB)",
                    peer.name(),
                    r.addr
                );
                idle_kib.push((peer, kib));
                live.push(r);
            }
            Err(e) => {
                println!("    FAILED  {:<10} {e:#}", peer.name());
                start_errors.push((peer, format!("{e:#}")));
            }
        }
    }
    let io_drivers = live.iter().find_map(|r| r.io_drivers.clone());

    let mut cases = Vec::new();
    for &body in &plan.bodies {
        let path = configs::body_path(body);
        let mut results: Vec<ProxyCase> = plan
            .peers
            .iter()
            .map(|&peer| ProxyCase {
                peer,
                samples: Vec::new(),
                error: start_errors
                    .iter()
                    .find(|(p, _)| *p == peer)
                    .map(|(_, e)| e.clone()),
            })
            .collect();
        println!("    body {body} B: warm-up {} s each", plan.warmup_s);
        for r in live.iter_mut().filter(|_| plan.warmup_s > 0) {
            let mut cmd = wrk::command(
                plan.load_core,
                plan.connections,
                plan.warmup_s,
                r.addr,
                &path,
            );
            if let Err(e) = wrk::run(&mut cmd) {
                set_error(&mut results, r.peer, format!("warm-up: {e:#}"));
            }
        }
        for run in 0..plan.runs {
            for r in &mut live {
                let Some(case) = results.iter_mut().find(|c| c.peer == r.peer) else {
                    continue;
                };
                // Nothing to measure once a proxy failed before its first sample or died.
                if (case.error.is_some() && case.samples.is_empty()) || !r.proxy.alive() {
                    continue;
                }
                match sample(plan, r, &path, run) {
                    Ok(s) => {
                        print_sample(r.peer, body, plan.runs, &s);
                        if let Some(p) = s.problem()
                            && case.error.is_none()
                        {
                            case.error = Some(format!("run {}: {p}", run + 1));
                        }
                        case.samples.push(s);
                    }
                    Err(e) => {
                        println!(
                            "    {:<10} {body:>6} B run {}: FAILED {e:#}",
                            r.peer.name(),
                            run + 1
                        );
                        case.error
                            .get_or_insert_with(|| format!("run {}: {e:#}", run + 1));
                    }
                }
                if !r.proxy.alive() {
                    let e = format!("the proxy exited:\n{}", r.proxy.log_tail(10));
                    case.error = Some(case.error.take().map_or(e.clone(), |p| format!("{p}; {e}")));
                }
            }
        }
        cases.push(results::case_json(body, &path, &results));
    }

    let mut rss: Vec<RssReport> = Vec::new();
    if plan.idle_conns > 0 {
        println!(
            "    resident memory with {} idle keep-alive connections",
            plan.idle_conns
        );
        for r in &mut live {
            let idle = idle_kib
                .iter()
                .find(|(p, _)| *p == r.peer)
                .map_or(0, |(_, k)| *k);
            let rep = idle::measure(r, plan.idle_conns, &configs::body_path(probe), idle);
            println!(
                "    {:<10} idle {} KiB, before {} KiB, with {} conns {} KiB: {} KiB/conn{}",
                rep.peer,
                rep.idle_kib,
                rep.before_kib,
                rep.opened,
                rep.with_conns_kib,
                rep.kib_per_conn().map_or("-".into(), |k| format!("{k:.2}")),
                rep.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" FAILED {e}"))
            );
            if let Some(note) = &rep.note {
                println!("               note: {note}");
            }
            rss.push(rep);
        }
    }
    for (peer, e) in &start_errors {
        rss.push(RssReport {
            peer: peer.name().into(),
            wanted: plan.idle_conns,
            error: Some(e.clone()),
            ..Default::default()
        });
    }
    drop(live);
    drop(upstream);
    Ok(results::scenario_json(
        NAME,
        knobs::knobs(plan, bins.nofile, io_drivers),
        cases,
        &rss,
        started.elapsed().as_secs_f64(),
    ))
}

fn set_error(results: &mut [ProxyCase], peer: Peer, e: String) {
    if let Some(c) = results.iter_mut().find(|c| c.peer == peer) {
        c.error.get_or_insert(e);
    }
}

/// One measured wrk run against `r`: its report and the proxy's CPU time over it.
fn sample(plan: &Plan, r: &Running, path: &str, run: u32) -> anyhow::Result<Sample> {
    let mut cmd = wrk::command(
        plan.load_core,
        plan.connections,
        plan.duration_s,
        r.addr,
        path,
    );
    let cores0 = procs::core_times();
    let cpu0 = r.proxy.cpu_us();
    let t0 = Instant::now();
    let report = wrk::run(&mut cmd)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu1 = r.proxy.cpu_us();
    let cores1 = procs::core_times();
    Ok(Sample {
        run,
        wrk: report,
        cpu_us: cpu1.saturating_sub(cpu0),
        wall_s,
        proxy_core_busy: procs::core_busy(&cores0, &cores1, plan.proxy_core),
        load_core_busy: procs::core_busy(&cores0, &cores1, plan.load_core),
    })
}

fn print_sample(peer: Peer, body: usize, runs: u32, s: &Sample) {
    use super::stats::Metric;
    println!(
        "    {:<10} {body:>6} B run {}/{runs}: {:>8.0} req/s  {:>6.1} us/req  {:>7.0} req/core-s  p50 {:>6.0} us  p99 {:>6.0} us  cpu {:>3.0}% (cores {:>3.0}% {:>3.0}%){}",
        peer.name(),
        s.run + 1,
        s.value(Metric::Rps),
        s.value(Metric::CpuUsPerReq),
        s.value(Metric::ReqPerCoreS),
        s.value(Metric::P50Us),
        s.value(Metric::P99Us),
        s.cpu_us as f64 / 1e4 / s.wall_s.max(1e-9),
        s.proxy_core_busy.unwrap_or(0.0) * 100.0,
        s.load_core_busy.unwrap_or(0.0) * 100.0,
        s.problem()
            .map_or(String::new(), |p| format!("  ERRORS {p}"))
    );
}
