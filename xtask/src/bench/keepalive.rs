//! Scenario `http1-keepalive`: each proxy with one worker pinned to the proxy core, as a
//! reverse proxy with upstream keep-alive to one nginx upstream; wrk (one thread, 64
//! keep-alive connections) and the upstream share the load core. Per body size: a warm-up
//! of every proxy, then runs alternating A B C D A B C D; per run the proxy's CPU time over
//! the wrk window. Then resident memory idle and with N idle client connections.
//!
//! [`run_spec`] is that machinery for any set of request kinds ([`Case`]s); other HTTP/1.1
//! scenarios (`http1-large-body`) are a [`Spec`] for it.

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
    /// `snapshot-propagation`: route counts, and changes per count and trigger.
    pub route_counts: Vec<usize>,
    pub changes: u32,
    /// OmniRelay's io_uring knobs (settled once its binary is built).
    pub omni: knobs::OmniKnobs,
}

/// One kind of request of a scenario: what wrk sends through each proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The case's name in the result (`body-100`, `upload-1048576`).
    pub name: String,
    pub path: String,
    /// Bytes of the response body.
    pub response_bytes: usize,
    /// Bytes of the request body: 0 for a GET, else a POST of this many bytes.
    pub upload_bytes: usize,
}

impl Case {
    /// A GET of one of the upstream's fixed bodies.
    pub fn get(body: usize) -> Case {
        Case {
            name: format!("body-{body}"),
            path: configs::body_path(body),
            response_bytes: body,
            upload_bytes: 0,
        }
    }

    /// A POST of `bytes` to the upstream's upload location.
    pub fn post(bytes: usize) -> Case {
        Case {
            name: format!("upload-{bytes}"),
            path: configs::UPLOAD_PATH.into(),
            response_bytes: configs::UPLOAD_REPLY.len(),
            upload_bytes: bytes,
        }
    }

    pub fn method(&self) -> &'static str {
        if self.upload_bytes > 0 { "POST" } else { "GET" }
    }

    /// Body bytes through the proxy per request, both directions.
    pub fn payload_bytes(&self) -> u64 {
        (self.response_bytes + self.upload_bytes) as u64
    }
}

/// An HTTP/1.1 scenario for [`run_spec`].
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub cases: Vec<Case>,
    /// Proxy settings for large bodies (nginx streams request bodies and never spools
    /// responses to disk).
    pub large_bodies: bool,
    /// Idle keep-alive connections for the memory test (0: no memory test).
    pub idle_conns: u32,
    /// wrk's `--timeout` in seconds (None: wrk's 2 s); a response later than this counts
    /// as a wrk error and fails the proxy.
    pub wrk_timeout_s: Option<u64>,
    /// The knobs recorded with the scenario.
    pub knobs: Value,
}

/// One proxy's samples for one case.
#[derive(Debug)]
pub struct ProxyCase {
    pub peer: Peer,
    pub samples: Vec<Sample>,
    pub error: Option<String>,
}

/// Runs the scenario; returns its JSON object for the result file.
pub fn run(plan: &Plan, bins: &Binaries) -> anyhow::Result<Value> {
    run_spec(
        &Spec {
            name: NAME,
            cases: plan.bodies.iter().map(|&b| Case::get(b)).collect(),
            large_bodies: false,
            idle_conns: plan.idle_conns,
            wrk_timeout_s: None,
            knobs: Value::Null,
        },
        plan,
        bins,
    )
}

/// Runs an HTTP/1.1 scenario: every proxy started once, then per case a warm-up of each
/// and runs alternating between them; then the memory test when the spec asks for it.
pub fn run_spec(spec: &Spec, plan: &Plan, bins: &Binaries) -> anyhow::Result<Value> {
    let started = Instant::now();
    let bodies: Vec<usize> = spec
        .cases
        .iter()
        .filter(|c| c.upload_bytes == 0)
        .map(|c| c.response_bytes)
        .collect();
    let uploads = spec.cases.iter().any(|c| c.upload_bytes > 0);
    let upstream = upstream::start(plan.load_core, &bodies, uploads, bins.nofile)?;
    let scripts = omnirelay_test_support::process::TempDir::new("bench-wrk");
    let probe = bodies.first().copied().unwrap_or(100);
    let launch = peers::Launch {
        omnirelay_args: &plan.omni.args,
        core: plan.proxy_core,
        aux_core: plan.load_core,
        upstream: upstream.port,
        probe_bytes: probe,
        large_bodies: spec.large_bodies,
    };
    let mut live: Vec<Running> = Vec::new();
    let mut start_errors: Vec<(Peer, String)> = Vec::new();
    let mut idle_kib: Vec<(Peer, u64)> = Vec::new();
    for &peer in &plan.peers {
        match peers::start(peer, bins, &launch) {
            Ok(r) => {
                std::thread::sleep(Duration::from_millis(300));
                let kib = r.proxy.rss_kib();
                println!(
                    "    started {:<18} on {} (idle RSS {kib} KiB)",
                    peer.name(),
                    r.addr
                );
                idle_kib.push((peer, kib));
                live.push(r);
            }
            Err(e) => {
                println!("    FAILED  {:<18} {e:#}", peer.name());
                start_errors.push((peer, format!("{e:#}")));
            }
        }
    }
    let io_drivers = live.iter().find_map(|r| r.io_drivers.clone());

    let mut cases = Vec::new();
    for case in &spec.cases {
        let script = wrk::script(scripts.path(), case.upload_bytes)?;
        let wrk_cmd = |seconds: u64, r: &Running| {
            wrk::command(
                plan.load_core,
                plan.connections,
                seconds,
                r.addr,
                &case.path,
                script.as_deref(),
                spec.wrk_timeout_s,
            )
        };
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
        println!(
            "    {} {}: warm-up {} s each",
            case.method(),
            case.path,
            plan.warmup_s
        );
        for r in live.iter_mut().filter(|_| plan.warmup_s > 0) {
            if let Err(e) = wrk::run(&mut wrk_cmd(plan.warmup_s, r)) {
                set_error(&mut results, r.peer, format!("warm-up: {e:#}"));
            }
        }
        for run in 0..plan.runs {
            for r in &mut live {
                let Some(pc) = results.iter_mut().find(|c| c.peer == r.peer) else {
                    continue;
                };
                // Nothing to measure once a proxy failed before its first sample or died.
                if (pc.error.is_some() && pc.samples.is_empty()) || !r.proxy.alive() {
                    continue;
                }
                match sample(plan, r, &mut wrk_cmd(plan.duration_s, r), case, run) {
                    Ok(s) => {
                        print_sample(r.peer, &case.name, plan.runs, &s);
                        if let Some(p) = s.problem()
                            && pc.error.is_none()
                        {
                            pc.error = Some(format!("run {}: {p}", run + 1));
                        }
                        pc.samples.push(s);
                    }
                    Err(e) => {
                        println!(
                            "    {:<18} {:>14} run {}: FAILED {e:#}",
                            r.peer.name(),
                            case.name,
                            run + 1
                        );
                        pc.error
                            .get_or_insert_with(|| format!("run {}: {e:#}", run + 1));
                    }
                }
                if !r.proxy.alive() {
                    let e = format!("the proxy exited:\n{}", r.proxy.log_tail(10));
                    pc.error = Some(pc.error.take().map_or(e.clone(), |p| format!("{p}; {e}")));
                }
            }
        }
        cases.push(results::case_json(case, &results));
    }

    let mut rss: Vec<RssReport> = Vec::new();
    if spec.idle_conns > 0 {
        println!(
            "    resident memory with {} idle keep-alive connections",
            spec.idle_conns
        );
        // Each proxy is measured fresh: after the load runs, its allocator keeps freed
        // memory that new connections would reuse, and the growth would read near zero.
        let peers_run: Vec<Peer> = live.iter().map(|r| r.peer).collect();
        live.clear();
        for peer in peers_run {
            let mut r = match peers::start(peer, bins, &launch) {
                Ok(r) => r,
                Err(e) => {
                    rss.push(RssReport {
                        peer: peer.name().into(),
                        wanted: spec.idle_conns,
                        error: Some(format!("restart for the memory test: {e:#}")),
                        ..Default::default()
                    });
                    continue;
                }
            };
            std::thread::sleep(Duration::from_millis(300));
            let idle = idle_kib
                .iter()
                .find(|(p, _)| *p == r.peer)
                .map_or(0, |(_, k)| *k);
            let rep = idle::measure(&mut r, spec.idle_conns, &configs::body_path(probe), idle);
            println!(
                "    {:<18} idle {} KiB, before {} KiB, with {} conns {} KiB: {} KiB/conn{}",
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
    for (peer, e) in start_errors.iter().filter(|_| spec.idle_conns > 0) {
        rss.push(RssReport {
            peer: peer.name().into(),
            wanted: spec.idle_conns,
            error: Some(e.clone()),
            ..Default::default()
        });
    }
    drop(live);
    drop(upstream);
    let mut knobs = knobs::knobs(plan, bins.nofile, io_drivers);
    if let (Some(k), Some(extra)) = (knobs.as_object_mut(), spec.knobs.as_object()) {
        k.extend(extra.clone());
    }
    Ok(results::scenario_json(
        spec.name,
        knobs,
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

/// One measured wrk run (`cmd`) against `r`: its report and the proxy's CPU time over it.
fn sample(
    plan: &Plan,
    r: &Running,
    cmd: &mut std::process::Command,
    case: &Case,
    run: u32,
) -> anyhow::Result<Sample> {
    let cores0 = procs::core_times();
    let cpu0 = r.proxy.cpu();
    let t0 = Instant::now();
    let report = wrk::run(cmd)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu = r.proxy.cpu().since(cpu0);
    let cores1 = procs::core_times();
    Ok(Sample {
        run,
        wrk: report,
        payload_bytes: case.payload_bytes(),
        cpu_us: cpu.total_us(),
        user_us: cpu.user_us,
        wall_s,
        proxy_core_busy: procs::core_busy(&cores0, &cores1, plan.proxy_core),
        load_core_busy: procs::core_busy(&cores0, &cores1, plan.load_core),
    })
}

fn print_sample(peer: Peer, case: &str, runs: u32, s: &Sample) {
    use super::stats::Metric;
    println!(
        "    {:<18} {case:>14} run {}/{runs}: {:>8.0} req/s {:>7.1} MB/s {:>6.1} us/req {:>7.0} req/core-s  p50 {:>6.0} us  p99 {:>6.0} us  cpu {:>3.0}% (cores {:>3.0}% {:>3.0}%){}",
        peer.name(),
        s.run + 1,
        s.value(Metric::Rps),
        s.value(Metric::MbPerS),
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
