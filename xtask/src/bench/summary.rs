//! The end-of-run summary: per scenario and body size, each proxy's medians and its ratios
//! to the best peer, and memory per idle connection, as Markdown tables (the README's
//! Benchmarks table is copied from this output).

use serde_json::Value;

use super::stats;

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("-".into(), |f| format!("{f:.digits$}"))
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |f| format!("{f:.2}×"))
}

/// A paired ratio with its confidence interval: `1.01× (0.98–1.04)`, and the interval's
/// coverage when it is below the level asked (too few runs).
fn paired(v: &Value, ci: &Value, digits: usize) -> String {
    let Some(mid) = v.as_f64() else {
        return "-".into();
    };
    let (Some(lo), Some(hi)) = (ci["low"].as_f64(), ci["high"].as_f64()) else {
        return format!("{mid:.digits$}×");
    };
    let level = ci["level"].as_f64().unwrap_or(0.0);
    let short = if level < stats::CI_LEVEL {
        format!(" {:.0}%", level * 100.0)
    } else {
        String::new()
    };
    format!("{mid:.digits$}× ({lo:.digits$}–{hi:.digits$}{short})")
}

/// Prints the tables of `doc`.
pub fn print(doc: &Value) {
    for sc in doc["scenarios"].as_array().into_iter().flatten() {
        let name = sc["name"].as_str().unwrap_or("?");
        println!("\n### {name} ({})", sc["status"].as_str().unwrap_or("?"));
        if let Some(e) = sc["error"].as_str() {
            println!("FAILED: {e}");
        }
        for series in sc["series"].as_array().into_iter().flatten() {
            println!(
                "\n{} ({}); medians (min–max), ratio to {}\n",
                series["title"].as_str().unwrap_or("?"),
                series["unit"].as_str().unwrap_or(""),
                series["reference"].as_str().unwrap_or("?")
            );
            let rows = series["rows"].as_array().map_or(&[][..], Vec::as_slice);
            let p99 = rows.iter().any(|r| r.get("p99").is_some());
            if p99 {
                println!(
                    "| variant | median | p99 | min–max | n | ratio |\n|---|---|---|---|---|---|"
                );
            } else {
                println!("| variant | median | min–max | ratio |\n|---|---|---|---|");
            }
            for r in rows {
                let label = r["label"].as_str().unwrap_or("?");
                if r["status"] != "ok" {
                    let err = r["error"].as_str().unwrap_or("?");
                    println!(
                        "| {label} | FAILED: {} | | |{}",
                        err.lines().next().unwrap_or(""),
                        if p99 { " | |" } else { "" }
                    );
                    continue;
                }
                let p99 = if p99 {
                    format!(" {} |", num(&r["p99"], 1),)
                } else {
                    String::new()
                };
                let n = r["samples"].as_array().map_or(0, Vec::len);
                println!(
                    "| {label} | {} |{p99} {}–{} |{} {} |",
                    num(&r["median"], 1),
                    num(&r["min"], 1),
                    num(&r["max"], 1),
                    if p99.is_empty() {
                        String::new()
                    } else {
                        format!(" {n} |")
                    },
                    ratio(&r["ratio"])
                );
            }
        }
        for note in sc["notes"].as_array().into_iter().flatten() {
            println!("\n{}", note.as_str().unwrap_or(""));
        }
        for case in sc["cases"].as_array().into_iter().flatten() {
            let upload = case["upload_bytes"].as_u64().unwrap_or(0);
            let what = if upload > 0 {
                format!("POST of {upload} B, {} B response", case["body_bytes"])
            } else {
                format!("{} B body", case["body_bytes"])
            };
            println!(
                "\n{what}; medians (min–max of CPU), ratio = value / best peer's; paired = median of per-run CPU ratios to the best peer (its {:.0}% interval; a lower coverage is shown when the runs are too few for it); MB/s: bodies both ways\n",
                stats::CI_LEVEL * 100.0
            );
            println!(
                "| proxy | CPU µs/req | user µs/req | req per core-s | req/s | MB/s | p50 µs | p99 µs | CPU ratio | paired | req/core-s ratio | MB/s ratio | p99 ratio |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            for p in case["proxies"].as_array().into_iter().flatten() {
                let (med, r) = (&p["median"], &p["ratio_to_best_peer"]);
                let proxy = p["proxy"].as_str().unwrap_or("?");
                if p["status"] != "ok" {
                    let err = p["error"].as_str().unwrap_or("?");
                    let first = err.lines().next().unwrap_or("");
                    println!("| {proxy} | FAILED: {first} | | | | | | | | | | | |");
                    continue;
                }
                println!(
                    "| {proxy} | {} ({}–{}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    num(&med["cpu_us_per_req"], 1),
                    num(&p["min"]["cpu_us_per_req"], 1),
                    num(&p["max"]["cpu_us_per_req"], 1),
                    num(&med["user_us_per_req"], 1),
                    num(&med["req_per_core_s"], 0),
                    num(&med["rps"], 0),
                    num(&med["mb_per_s"], 0),
                    num(&med["p50_us"], 0),
                    num(&med["p99_us"], 0),
                    ratio(&r["cpu_us_per_req"]),
                    paired(
                        &p["paired_cpu_ratio_to_best_peer"],
                        &p["paired_cpu_ratio_to_best_peer_ci"],
                        2
                    ),
                    ratio(&r["req_per_core_s"]),
                    ratio(&r["mb_per_s"]),
                    ratio(&r["p99_us"]),
                );
            }
        }
        for case in sc["cases"].as_array().into_iter().flatten() {
            let proxies = case["proxies"].as_array().map_or(&[][..], Vec::as_slice);
            if let Some(p) = proxies
                .iter()
                .find(|p| p["paired_cpu_ratio_to_baseline"].is_f64())
            {
                println!(
                    "\nA/B, {}: omnirelay / omnirelay-baseline CPU per request, paired: {} over {} runs",
                    case["name"].as_str().unwrap_or("?"),
                    paired(
                        &p["paired_cpu_ratio_to_baseline"],
                        &p["paired_cpu_ratio_to_baseline_ci"],
                        3
                    ),
                    p["paired_cpu_ratio_to_baseline_ci"]["runs"]
                );
            }
        }
        let noisy: Vec<String> = sc["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| {
                let proxies = c["proxies"].as_array().map_or(&[][..], Vec::as_slice);
                let case = c["name"].as_str().unwrap_or("?").to_owned();
                stats::contended(proxies)
                    .into_iter()
                    .map(move |n| format!("{case} {n}"))
            })
            .collect();
        if !noisy.is_empty() {
            println!(
                "\nNOISY: other work took more than {:.0}% of the proxy core in runs of {}",
                stats::CONTENDED * 100.0,
                noisy.join(", ")
            );
        }
        let rss = sc["rss"].as_array().cloned().unwrap_or_default();
        if !rss.is_empty() {
            println!("\n| proxy | RSS idle MiB | KiB per idle connection | ratio |");
            println!("|---|---|---|---|");
            for r in &rss {
                let proxy = r["proxy"].as_str().unwrap_or("?");
                if r["status"] != "ok" {
                    let err = r["error"].as_str().unwrap_or("?");
                    println!(
                        "| {proxy} | FAILED: {} | | |",
                        err.lines().next().unwrap_or("")
                    );
                    continue;
                }
                println!(
                    "| {proxy} | {:.1} | {} | {} |",
                    r["idle_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    num(&r["kib_per_conn"], 2),
                    ratio(&r["kib_per_conn_ratio_to_best_peer"]),
                );
            }
        }
    }
}
