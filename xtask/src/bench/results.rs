//! The result file: one JSON document per `cargo xtask bench` run, with the machine, the
//! versions, each scenario's knobs, every raw sample, medians with min/max, and ratios to
//! the best peer. Read back (all of `bench/results/`) for the dashboard.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    idle::RssReport,
    keepalive::{Case, ProxyCase},
    peers::Peer,
    stats::{self, Metric},
};

/// The version of the result format (`schema_version`; see bench/schema/result.schema.json).
pub const SCHEMA_VERSION: u64 = 1;

/// One case of a scenario: every proxy's samples and summaries, and the ratios of each
/// proxy's medians to the best peer's (OmniRelay excluded from "peer"; failed proxies get
/// no ratio and do not count as best).
pub fn case_json(case: &Case, cases: &[ProxyCase]) -> Value {
    let counts = |c: &ProxyCase| c.error.is_none() && !c.samples.is_empty();
    let med = |c: &ProxyCase, m: Metric| {
        let v: Vec<f64> = c.samples.iter().map(|s| s.value(m)).collect();
        stats::median(&v)
    };
    let mut best_peer = json!({});
    for m in Metric::ALL {
        let best = cases
            .iter()
            .filter(|c| !c.peer.is_omnirelay() && counts(c))
            .filter_map(|c| Some((c.peer.name(), med(c, m)?)))
            .fold(None::<(&str, f64)>, |acc, (n, v)| match acc {
                Some((_, b)) if stats::best(m, [b, v]) == Some(b) => acc,
                _ => Some((n, v)),
            });
        best_peer[m.key()] = best.map_or(Value::Null, |(n, v)| json!({ "proxy": n, "value": v }));
    }
    let proxies: Vec<Value> = cases
        .iter()
        .map(|c| {
            let (median, min, max) = stats::summaries(&c.samples);
            let mut ratio = json!({});
            for m in Metric::ALL {
                let best = best_peer[m.key()]["value"].as_f64();
                ratio[m.key()] = match (counts(c), med(c, m), best) {
                    (true, Some(v), Some(b)) if b > 0.0 => json!(v / b),
                    _ => Value::Null,
                };
            }
            // CPU per request over that of the proxy `to`, paired run by run.
            let paired_to = |to: Option<Peer>| {
                let other = cases.iter().find(|b| Some(b.peer) == to && counts(b))?;
                counts(c)
                    .then(|| stats::paired_ratio(Metric::CpuUsPerReq, &c.samples, &other.samples))
                    .flatten()
            };
            let best_cpu = best_peer[Metric::CpuUsPerReq.key()]["proxy"]
                .as_str()
                .and_then(|n| Peer::parse(n).ok());
            let paired = paired_to(best_cpu);
            // The A/B of `--baseline`: the work tree's build over the baseline's.
            let to_baseline = paired_to(Some(Peer::Baseline)).filter(|_| c.peer == Peer::OmniRelay);
            let mid = |p: Option<stats::MedianCi>| p.map(|p| p.median);
            let ci = |p: Option<stats::MedianCi>| p.map(|p| p.interval_json());
            json!({
                "proxy": c.peer.name(),
                "status": if counts(c) { "ok" } else { "failed" },
                "error": c.error,
                "samples": c.samples.iter().map(stats::Sample::to_json).collect::<Vec<_>>(),
                "median": median,
                "min": min,
                "max": max,
                "ratio_to_best_peer": ratio,
                "paired_cpu_ratio_to_best_peer": mid(paired),
                "paired_cpu_ratio_to_best_peer_ci": ci(paired),
                "paired_cpu_ratio_to_baseline": mid(to_baseline),
                "paired_cpu_ratio_to_baseline_ci": ci(to_baseline),
            })
        })
        .collect();
    json!({
        "name": case.name,
        "body_bytes": case.response_bytes,
        "path": case.path,
        "method": case.method(),
        "upload_bytes": case.upload_bytes,
        "best_peer": best_peer,
        "proxies": proxies,
    })
}

/// A scenario's object: status `ok` when every proxy succeeded, `partial` when a peer
/// failed, `failed` when OmniRelay did.
pub fn scenario_json(
    name: &str,
    knobs: Value,
    cases: Vec<Value>,
    rss: &[RssReport],
    secs: f64,
) -> Value {
    let failed = |who: &dyn Fn(&str) -> bool| {
        cases.iter().any(|c| {
            c["proxies"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["status"] == "failed" && who(p["proxy"].as_str().unwrap_or("")))
        }) || rss.iter().any(|r| r.error.is_some() && who(&r.peer))
    };
    let status = if failed(&|p| p == Peer::OmniRelay.name()) {
        "failed"
    } else if failed(&|_| true) {
        "partial"
    } else {
        "ok"
    };
    let best_kib = rss
        .iter()
        .filter(|r| !Peer::is_omnirelay_name(&r.peer))
        .filter_map(RssReport::kib_per_conn)
        .filter(|k| *k > 0.0)
        .reduce(f64::min);
    let rss: Vec<Value> = rss
        .iter()
        .map(|r| {
            let mut v = r.to_json();
            v["kib_per_conn_ratio_to_best_peer"] =
                json!(r.kib_per_conn().zip(best_kib).map(|(k, b)| k / b));
            v
        })
        .collect();
    json!({
        "name": name,
        "status": status,
        "error": Value::Null,
        "duration_s": secs,
        "knobs": knobs,
        "cases": cases,
        "rss": rss,
    })
}

/// A scenario that could not run at all.
pub fn scenario_error(name: &str, error: &str, knobs: Value) -> Value {
    json!({ "name": name, "status": "failed", "error": error, "duration_s": 0.0,
            "knobs": knobs, "cases": [], "rss": [] })
}

/// CPU model, core count, kernel, governor, memory.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_owned())
    });
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let mem_kib = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    json!({
        "cpu_model": model,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "mem_kib": mem_kib,
        "hostname": read("/proc/sys/kernel/hostname"),
        "virtualized": cpuinfo.contains(" hypervisor"),
    })
}

/// Writes `doc` to `dir/ID.json`; returns the path.
pub fn write(dir: &Path, doc: &Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let id = doc["id"].as_str().context("result without id")?;
    let path = dir.join(format!("{id}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Every result file in `dir`, oldest first (file names start with the UTC start time).
pub fn load_all(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
            let v =
                serde_json::from_str(&text).with_context(|| format!("parse {}", p.display()))?;
            Ok((p, v))
        })
        .collect()
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (400-year eras of 146,097 days, March-based years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case_of(peer: Peer, cpu_us: &[u64]) -> ProxyCase {
        let samples = cpu_us
            .iter()
            .zip(0..)
            .map(|(&cpu_us, run)| stats::Sample {
                run,
                wrk: crate::bench::wrk::WrkReport {
                    requests: 100_000,
                    duration_s: 5.0,
                    ..Default::default()
                },
                payload_bytes: 100,
                cpu_us,
                user_us: cpu_us / 4,
                wall_s: 5.0,
                proxy_core_busy: None,
                load_core_busy: None,
            })
            .collect();
        ProxyCase {
            peer,
            samples,
            error: None,
        }
    }

    #[test]
    fn the_baseline_is_no_peer_and_gets_a_paired_ab_ratio() {
        // The baseline is cheaper than nginx but must not become the best peer; the work
        // tree's build is 0.9 of the baseline in every run.
        let cases = [
            case_of(Peer::OmniRelay, &[1_800_000, 1_980_000, 1_620_000]),
            case_of(Peer::Baseline, &[2_000_000, 2_200_000, 1_800_000]),
            case_of(Peer::Nginx, &[2_500_000, 2_500_000, 2_500_000]),
        ];
        let json = case_json(&Case::get(100), &cases);
        assert_eq!(json["best_peer"]["cpu_us_per_req"]["proxy"], "nginx");
        let omni = &json["proxies"][0];
        let ab = omni["paired_cpu_ratio_to_baseline"].as_f64().unwrap();
        assert!((ab - 0.9).abs() < 1e-9, "{ab}");
        // Three runs: the interval is their range, at the 75% that three runs give.
        let ci = &omni["paired_cpu_ratio_to_baseline_ci"];
        assert!((ci["low"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{ci}");
        assert!((ci["high"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{ci}");
        assert_eq!(
            (ci["level"].as_f64(), ci["runs"].as_u64()),
            (Some(0.75), Some(3))
        );
        // Against nginx: 0.72, 0.792, 0.648 -> median 0.72 within [0.648, 0.792].
        let best = &omni["paired_cpu_ratio_to_best_peer_ci"];
        assert!((omni["paired_cpu_ratio_to_best_peer"].as_f64().unwrap() - 0.72).abs() < 1e-9);
        assert!(
            (best["low"].as_f64().unwrap() - 0.648).abs() < 1e-9,
            "{best}"
        );
        assert!(
            (best["high"].as_f64().unwrap() - 0.792).abs() < 1e-9,
            "{best}"
        );
        assert!(json["proxies"][1]["paired_cpu_ratio_to_baseline"].is_null());
        assert!(json["proxies"][1]["paired_cpu_ratio_to_baseline_ci"].is_null());
        assert!(json["proxies"][2]["paired_cpu_ratio_to_baseline"].is_null());
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_798_740_000), "2026-12-31T18:00:00Z");
    }
}
