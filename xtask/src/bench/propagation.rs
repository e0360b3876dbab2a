//! Scenario `snapshot-propagation`: how long a config change takes to reach every worker
//! of the data plane, for configs of 10, 1,000 and 10,000 routes.
//!
//! One control daemon watches `omnirelay.toml`; one data plane with a worker per core
//! subscribes to it. The config holds N routes: N − 2 fillers, a marker route `/vK/` to the
//! upstream `new`, and a catch-all `/` to the upstream `old`; the two upstreams answer
//! different bodies. Each change writes the file anew (temp file + rename, atomically) with
//! the marker renamed to the next K, and the clock starts when the rename returns. Keep-alive
//! probe connections, at least one held by every worker (checked on the data plane's
//! `omnirelay_worker_connections` gauge), then ask for `/vK/probe` round-robin until every
//! one of them is answered by `new`: the time of the last one is the time until the last
//! worker served the new version.
//!
//! Changes alternate between two triggers:
//! - `watch`: the daemon's file watch notices the change (it polls the file's metadata
//!   every 50 ms, so this includes 0–50 ms of waiting for the next poll);
//! - `reload`: `POST /control/reload` right after the rename; its round trip is the
//!   daemon's rebuild (its coalescing wait, then load, validate, compile, sign, store in
//!   SQLite), recorded as the rebuild series. Its load waits until the just-renamed file
//!   has been unchanged for 20 ms (the daemon does not read a file that may still be
//!   being written). Once the change is served, a second `POST /control/reload` finds the
//!   config unchanged (wait, load, hash, nothing else): the difference of the two is the
//!   time to validate, compile, sign and store plus that settle wait (the daemon reports
//!   its own build time, `omnirelay_control_last_build_microseconds`).
//!
//! Between changes a random pause of 50–300 ms keeps the changes from falling into step
//! with the watch's polls. Medians, p99 (nearest rank) and min–max
//! per route count; the target is p99 < 100 ms at 1,000 routes.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use omnirelay_test_support::process::{TempDir, free_port, wait_for_port};
use serde_json::{Value, json};

use super::{
    configs, http,
    keepalive::Plan,
    knobs,
    peers::{self, Binaries, OmniStart},
    procs::{self, Group},
    series::{self, Series},
    tools,
};

pub const NAME: &str = "snapshot-propagation";

/// How often the control daemon's config-file source looks at the file
/// (`POLL_INTERVAL` in `plugins/internal/config-file`; a unit test keeps them in sync).
pub const CONFIG_POLL_MS: u64 = 50;
/// The route count of the target, and the target.
const TARGET_ROUTES: usize = 1000;
const TARGET_P99_MS: f64 = 100.0;
/// Probe connections to start with, and at most (until every worker holds one).
const PROBES: usize = 8;
const MAX_PROBES: usize = 64;
/// Pause between two rounds of probes.
const PROBE_PAUSE: Duration = Duration::from_micros(500);
/// A change not served after this long fails the route count.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// What the two upstreams answer: `old` (the catch-all) and `new` (the marker route).
const OLD_BODY: &str = "a";
const NEW_BODY: &str = "bb";

/// Series titles (short: they head 460 px charts); [`SERIES_NOTE`] says what each is.
const WATCH: &str = "File change → last worker (file watch)";
const RELOAD: &str = "File change + reload → last worker";
const REBUILD: &str = "Rebuild (reload round trip)";
const UNCHANGED: &str = "Unchanged reload (round trip)";
const SERIES_NOTE: &str = "File change → last worker (file watch): from the rename of the new config file until every worker serves its new route; the daemon polls the file's metadata every 50 ms. File change + reload: the same with POST /control/reload sent right after the rename. Rebuild: that POST's round trip (the daemon's coalescing wait, then load, which waits until the file has been unchanged for 20 ms, validate, compile, sign, store). Unchanged reload: a POST /control/reload of the config already published (wait, load, hash only).";

/// `1,000` for 1000.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn label(routes: usize) -> String {
    format!("{} routes", thousands(routes))
}

/// Where everything listens.
#[derive(Debug, Clone, Copy)]
struct Ports {
    listener: u16,
    grpc: u16,
    admin: u16,
    old: u16,
    new: u16,
}

/// The config with `routes` routes, the marker being `/v{marker}/`.
fn config(p: Ports, routes: usize, marker: u64) -> String {
    let mut c = format!(
        r#"[control]
grpc_listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{admin}"

[[listeners]]
name = "bench"
address = "127.0.0.1:{listener}"
"#,
        grpc = p.grpc,
        admin = p.admin,
        listener = p.listener
    );
    for i in 0..routes.saturating_sub(2) {
        c.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\npath_prefix = \"/r{i}/\"\ncluster = \"old\"\n"
        ));
    }
    c.push_str(&format!(
        r#"
[[routes]]
name = "marker-{marker}"
path_prefix = "/v{marker}/"
cluster = "new"

[[routes]]
name = "rest"
path_prefix = "/"
cluster = "old"

[[clusters]]
name = "old"
endpoints = ["127.0.0.1:{old}"]

[[clusters]]
name = "new"
endpoints = ["127.0.0.1:{new}"]
"#,
        old = p.old,
        new = p.new
    ));
    c
}

/// Replaces `path` with `text` atomically (a watcher never reads half a file).
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// A small xorshift generator for the pauses between changes.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Jitter(seed | 1)
    }

    /// Uniform in `[lo, lo + span)` milliseconds.
    fn pause(&mut self, lo: u64, span: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % span.max(1))
    }
}

/// Open connections (HTTP/1.1 keep-alive) to the data plane, at least one on every worker.
struct Probes {
    addr: SocketAddr,
    conns: Vec<TcpStream>,
}

impl Probes {
    /// Opens [`PROBES`] connections, then more until the data plane's per-worker gauge
    /// shows each of its `workers` holding one.
    fn open(addr: SocketAddr, dp_admin: u16, workers: usize) -> anyhow::Result<Probes> {
        let mut p = Probes {
            addr,
            conns: Vec::new(),
        };
        p.add(PROBES)?;
        loop {
            let per_worker = worker_connections(dp_admin, workers)?;
            if per_worker.iter().all(|n| *n > 0) {
                return Ok(p);
            }
            if p.conns.len() >= MAX_PROBES {
                bail!(
                    "{} probe connections and still a worker without one: {per_worker:?}",
                    p.conns.len()
                );
            }
            p.add(4)?;
        }
    }

    fn add(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let mut s = http::connect(self.addr, Duration::from_secs(5))?;
            // One request, so the connection is accepted and owned by a worker.
            let reply = http::get(&mut s, "/")?;
            anyhow::ensure!(reply.status == 200, "probe connection: {reply:?}");
            self.conns.push(s);
        }
        Ok(())
    }

    /// Asks every connection for `/v{marker}/probe` until each is answered by the new
    /// route; returns the time from `t0` to the last of them.
    fn wait_new(&mut self, marker: u64, t0: Instant) -> anyhow::Result<Duration> {
        let path = format!("/v{marker}/probe");
        let mut pending: Vec<usize> = (0..self.conns.len()).collect();
        let mut last = Duration::ZERO;
        while !pending.is_empty() {
            let mut still = Vec::with_capacity(pending.len());
            for i in pending {
                let reply = http::get(&mut self.conns[i], &path)
                    .with_context(|| format!("probe connection {i}"))?;
                match (reply.status, reply.body_len) {
                    (200, n) if n == NEW_BODY.len() => last = t0.elapsed(),
                    (200, n) if n == OLD_BODY.len() => still.push(i),
                    _ => bail!("probe {path}: unexpected {reply:?}"),
                }
            }
            pending = still;
            if !pending.is_empty() {
                if t0.elapsed() > CHANGE_TIMEOUT {
                    bail!(
                        "{} of {} probe connections still served the old version after {CHANGE_TIMEOUT:?}",
                        pending.len(),
                        self.conns.len()
                    );
                }
                std::thread::sleep(PROBE_PAUSE);
            }
        }
        Ok(last)
    }
}

/// `omnirelay_worker_connections{worker="i"}` of the data plane, for i in 0..workers.
fn worker_connections(dp_admin: u16, workers: usize) -> anyhow::Result<Vec<u64>> {
    let text = crate::run::output(Command::new("curl").args([
        "-sf",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{dp_admin}/metrics"),
    ]))
    .context("the data plane's /metrics did not answer")?;
    let mut per = vec![0; workers];
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("omnirelay_worker_connections{worker=\"") else {
            continue;
        };
        let Some((worker, value)) = rest.split_once("\"} ") else {
            continue;
        };
        if let (Ok(w), Ok(v)) = (worker.parse::<usize>(), value.trim().parse::<u64>())
            && w < workers
        {
            per[w] = v;
        }
    }
    Ok(per)
}

/// What one change measured.
#[derive(Debug)]
struct Change {
    /// From the rename to the last worker serving the new version.
    served: Duration,
    /// The rebuild (`reload` trigger only; `None` when the file watch got there first and
    /// the reload found nothing to do).
    rebuild: Option<Duration>,
    /// A reload of the same config once it was served (`reload` trigger only).
    unchanged: Option<Duration>,
}

/// `POST /control/reload` on `s`: the outcome (`published`, `unchanged`) and the time
/// from `t0` to the answer.
fn post_reload(mut s: TcpStream, t0: Instant) -> anyhow::Result<(String, Duration)> {
    let (reply, body) = http::post_reading(&mut s, "/control/reload", b"")?;
    let took = t0.elapsed();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (reply.status, v["outcome"].as_str()) {
        (200, Some(o @ ("published" | "unchanged"))) => Ok((o.to_owned(), took)),
        _ => bail!(
            "POST /control/reload: {} {}",
            reply.status,
            String::from_utf8_lossy(&body)
        ),
    }
}

/// One change to `routes` routes with marker `marker`, triggered by the file watch or by
/// `POST /control/reload`.
fn change(
    conf: &Path,
    text: &str,
    marker: u64,
    reload: Option<SocketAddr>,
    probes: &mut Probes,
) -> anyhow::Result<Change> {
    // Connected before the clock starts; only the request is timed.
    let admin = reload
        .map(|a| http::connect(a, Duration::from_secs(30)))
        .transpose()?;
    replace(conf, text)?;
    let t0 = Instant::now();
    let request = admin.map(|s| std::thread::spawn(move || post_reload(s, t0)));
    let served = probes.wait_new(marker, t0);
    let mut c = Change {
        served: Duration::ZERO,
        rebuild: None,
        unchanged: None,
    };
    if let Some(h) = request {
        let (outcome, took) = h
            .join()
            .map_err(|_| anyhow::anyhow!("the reload request panicked"))??;
        c.rebuild = (outcome == "published").then_some(took);
    }
    c.served = served?;
    if let Some(a) = reload {
        // After the file watch has seen the rename and its own reload is over, so that the
        // two do not share the daemon's coalescing wait.
        let quiet = Duration::from_millis(CONFIG_POLL_MS + 150);
        std::thread::sleep(quiet.saturating_sub(t0.elapsed()));
        let s = http::connect(a, Duration::from_secs(30))?;
        let (outcome, took) = post_reload(s, Instant::now())?;
        anyhow::ensure!(
            outcome == "unchanged",
            "a second reload of the same config published a new version"
        );
        c.unchanged = Some(took);
    }
    Ok(c)
}

/// Bytes of the signed snapshot the daemon serves (its HTTP pull).
fn snapshot_bytes(admin: SocketAddr) -> Option<usize> {
    let mut s = http::connect(admin, Duration::from_secs(10)).ok()?;
    http::get(&mut s, "/v1/snapshot").ok().map(|r| r.body_len)
}

/// The version the data plane and the control daemon report.
fn versions(dp_admin: u16, admin: u16) -> (Option<u64>, Option<u64>) {
    let v = |port, path| peers::admin_json(port, path).and_then(|v| v["version"].as_u64());
    (v(dp_admin, "/snapshot"), v(admin, "/control/snapshot"))
}

/// Runs the scenario; returns its JSON object for the result file.
pub fn run(plan: &Plan, bins: &Binaries) -> anyhow::Result<Value> {
    let started = Instant::now();
    let counts = &plan.route_counts;
    anyhow::ensure!(
        counts.iter().all(|n| *n >= 2),
        "route counts must be at least 2 (a marker and a catch-all)"
    );
    let dir = TempDir::new("bench-propagation");
    let p = Ports {
        listener: free_port(),
        grpc: free_port(),
        admin: free_port(),
        old: free_port(),
        new: free_port(),
    };
    let up_conf = dir.path().join("upstream.conf");
    std::fs::write(
        &up_conf,
        configs::upstream_pair(
            dir.path(),
            (p.old, OLD_BODY),
            (p.new, NEW_BODY),
            bins.nofile,
        ),
    )?;
    let mut cmd = procs::pinned(plan.load_core, &tools::program("nginx")?);
    cmd.arg("-c").arg(&up_conf).arg("-p").arg(dir.path());
    let upstream = Group::spawn(cmd, &dir.path().join("upstream.log"))?;
    for port in [p.old, p.new] {
        if !wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        ) {
            bail!("the upstreams did not start:\n{}", upstream.log_tail(20));
        }
    }

    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut marker: u64 = 1;
    let first = counts.first().copied().unwrap_or(10);
    let mut omni = peers::start_omnirelay(
        &bins.omnirelay_dir,
        &OmniStart {
            dir: dir.path(),
            config: &config(p, first, marker),
            grpc: p.grpc,
            admin: p.admin,
            control_core: plan.load_core,
            dataplane_core: None,
            workers,
            extra_args: &plan.omni.args,
        },
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], p.listener));
    let admin = SocketAddr::from(([127, 0, 0, 1], p.admin));
    if !wait_for_port(addr, Duration::from_secs(20)) {
        bail!(
            "the data plane did not start listening on {addr}:\n{}",
            omni.dataplane.log_tail(20)
        );
    }
    let conf = dir.path().join("omnirelay.toml");
    let reference = if counts.contains(&10) {
        label(10)
    } else {
        label(first)
    };
    let new_series = |title: &str| {
        let mut s = Series::new(title, "ms, lower is better", true, &reference);
        s.p99 = true;
        s
    };
    let (mut watch, mut reload, mut rebuild, mut same) = (
        new_series(WATCH),
        new_series(RELOAD),
        new_series(REBUILD),
        new_series(UNCHANGED),
    );
    let mut notes = Vec::new();
    let mut sizes = Vec::new();
    let mut jitter = Jitter::new();

    for &n in counts {
        let row = label(n);
        // Switch to n routes and wait until it is served (not measured: the first compile
        // of a size, and probe connections on every worker).
        let setup = (|| -> anyhow::Result<Probes> {
            marker += 1;
            replace(&conf, &config(p, n, marker))?;
            let mut probes = Probes::open(addr, omni.dataplane_admin, workers)?;
            probes.wait_new(marker, Instant::now())?;
            Ok(probes)
        })();
        let mut probes = match setup {
            Ok(pr) => pr,
            Err(e) => {
                let e = format!("{e:#}\n{}", omni.dataplane.log_tail(10));
                println!("    {row}: FAILED {e}");
                for s in [&mut watch, &mut reload, &mut rebuild, &mut same] {
                    s.fail(&row, &e);
                }
                continue;
            }
        };
        let (mut unchanged, mut failed) = (0, None);
        for i in 0..plan.changes {
            for trigger in [None, Some(admin)] {
                std::thread::sleep(jitter.pause(50, 250));
                marker += 1;
                match change(&conf, &config(p, n, marker), marker, trigger, &mut probes) {
                    Ok(c) => {
                        let ms = c.served.as_secs_f64() * 1e3;
                        let s = if trigger.is_some() {
                            &mut reload
                        } else {
                            &mut watch
                        };
                        s.push(&row, ms);
                        match (trigger, c.rebuild) {
                            (Some(_), Some(b)) => rebuild.push(&row, b.as_secs_f64() * 1e3),
                            (Some(_), None) => unchanged += 1,
                            _ => {}
                        }
                        if let Some(u) = c.unchanged {
                            same.push(&row, u.as_secs_f64() * 1e3);
                        }
                    }
                    Err(e) => {
                        failed = Some(format!("change {}: {e:#}", i + 1));
                        break;
                    }
                }
            }
            if failed.is_some() || !omni.dataplane.alive() {
                break;
            }
        }
        if !omni.dataplane.alive() || !omni.control.alive() {
            failed.get_or_insert_with(|| {
                format!(
                    "a process exited:\n{}\n{}",
                    omni.control.log_tail(10),
                    omni.dataplane.log_tail(10)
                )
            });
        }
        let (dp_v, control_v) = versions(omni.dataplane_admin, p.admin);
        if failed.is_none() && (dp_v != control_v || dp_v.is_none()) {
            failed = Some(format!(
                "the data plane runs version {dp_v:?}, the daemon published {control_v:?}"
            ));
        }
        if let Some(e) = &failed {
            println!("    {row}: FAILED {e}");
            for s in [&mut watch, &mut reload, &mut rebuild, &mut same] {
                s.fail(&row, e);
            }
        }
        let config_bytes = config(p, n, marker).len();
        let snapshot = snapshot_bytes(admin);
        sizes.push(json!({
            "routes": n,
            "config_bytes": config_bytes,
            "snapshot_bytes": snapshot,
            "reloads_unchanged": unchanged,
        }));
        let plural = if unchanged == 1 { "" } else { "s" };
        let show = |s: &Series| s.median(&row).map_or("-".into(), |m| format!("{m:.1} ms"));
        println!(
            "    {row:>14}: file watch {}, reload {}, rebuild {}, unchanged reload {} (medians; config {} KiB, snapshot {} KiB{})",
            show(&watch),
            show(&reload),
            show(&rebuild),
            show(&same),
            config_bytes / 1024,
            snapshot.map_or("?".into(), |b| (b / 1024).to_string()),
            if unchanged > 0 {
                format!("; {unchanged} reload{plural} found the watch had been first")
            } else {
                String::new()
            }
        );
    }
    let io_drivers = omni.io_drivers.take();
    drop(omni);
    drop(upstream);

    notes.push(SERIES_NOTE.into());
    let p99 = |s: &Series| {
        let r = s.rows.iter().find(|r| r.label == label(TARGET_ROUTES))?;
        if r.error.is_some() {
            return None;
        }
        super::stats::percentile(&r.samples, 99.0)
    };
    if let (Some(w), Some(r)) = (p99(&watch), p99(&reload)) {
        let verdict = |v: f64| if v < TARGET_P99_MS { "met" } else { "missed" };
        notes.push(format!(
            "{}: p99 {w:.1} ms from a file change through the file watch ({} the < {TARGET_P99_MS:.0} ms target: the watch polls every {CONFIG_POLL_MS} ms, so a change waits 0–{CONFIG_POLL_MS} ms to be noticed), {r:.1} ms with POST /control/reload ({})",
            label(TARGET_ROUTES),
            verdict(w),
            verdict(r),
        ));
    }
    let work: Vec<String> = counts
        .iter()
        .filter_map(|&n| {
            let d = rebuild.median(&label(n))? - same.median(&label(n))?;
            Some(format!("{} {d:.1} ms", label(n)))
        })
        .collect();
    if !work.is_empty() {
        notes.push(format!(
            "Validate, compile, sign and store, with the wait for the new file to settle (median rebuild minus median unchanged reload): {}. The daemon reports its own build time as omnirelay_control_last_build_microseconds and in its log.",
            work.join(", ")
        ));
    }
    Ok(series::scenario_json(
        NAME,
        started.elapsed().as_secs_f64(),
        json!({
            "route_counts": counts,
            "changes_per_count_and_trigger": plan.changes,
            "triggers": ["watch", "reload"],
            "config_poll_ms": CONFIG_POLL_MS,
            "dataplane_workers": workers,
            "probe_connections_min": PROBES,
            "probe_pause_us": PROBE_PAUSE.as_micros() as u64,
            "pause_between_changes_ms": [50, 50 + CONFIG_POLL_MS],
            "control_core": plan.load_core,
            "sizes": sizes,
            "omnirelay": knobs::omnirelay_json(plan, io_drivers),
        }),
        &[watch, reload, rebuild, same],
        &notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_interval_is_the_config_sources() {
        let src = std::fs::read_to_string(
            crate::run::workspace_root().join("plugins/internal/config-file/src/lib.rs"),
        )
        .unwrap();
        assert!(
            src.contains(&format!(
                "POLL_INTERVAL: Duration = Duration::from_millis({CONFIG_POLL_MS});"
            )),
            "CONFIG_POLL_MS is not the config-file source's POLL_INTERVAL"
        );
    }

    #[test]
    fn configs_hold_exactly_the_route_count() {
        let p = Ports {
            listener: 1,
            grpc: 2,
            admin: 3,
            old: 4,
            new: 5,
        };
        for n in [2, 10, 1000] {
            let c = config(p, n, 7);
            assert_eq!(c.matches("[[routes]]").count(), n);
            assert!(c.contains("path_prefix = \"/v7/\""));
        }
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
    }
}
