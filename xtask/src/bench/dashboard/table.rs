//! The dashboard's table of runs: one row per result file and scenario with its knobs,
//! versions and the load average before it started; failed runs are flagged.

use std::fmt::Write as _;

use serde_json::Value;

use super::svg::{esc, fmt};

/// Appends the table of every run in `docs` (oldest first), newest at the top.
pub fn knobs_table(h: &mut String, docs: &[&Value]) {
    h.push_str("<h2>Runs and their knobs</h2><table><tr><th>run</th><th>mode</th><th>scenario</th><th>status</th><th>bodies (B)</th><th>conns</th><th>workers</th><th>duration × runs (warm-up)</th><th>idle conns</th><th>OmniRelay I/O</th><th>load average at start</th><th>versions</th></tr>");
    for d in docs.iter().rev() {
        for sc in d["scenarios"].as_array().into_iter().flatten() {
            let k = &sc["knobs"];
            let status = sc["status"].as_str().unwrap_or("?");
            let o = &k["omnirelay"];
            let versions: Vec<String> = d["versions"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, v)| format!("{n}: {}", v.as_str().unwrap_or("?")))
                .collect();
            let la = &d["load_average"];
            let load: Vec<String> = la
                .get("at_start")
                .unwrap_or(&la["before"])
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| fmt(v.as_f64().unwrap_or(0.0)))
                .collect();
            if sc.get("series").is_some() {
                // Series scenarios have knobs of their own: shown as they were recorded.
                let _ = write!(
                    h,
                    "<tr class=\"{cls}\"><td>{id}</td><td>{mode}</td><td>{name}</td><td>{status}</td><td colspan=\"6\" class=\"knobs\">{knobs}</td><td>{load}</td><td>{ver}</td></tr>",
                    cls = if status == "ok" { "" } else { "bad" },
                    id = esc(d["id"].as_str().unwrap_or("?")),
                    mode = esc(d["mode"].as_str().unwrap_or("?")),
                    name = esc(sc["name"].as_str().unwrap_or("?")),
                    knobs = esc(&knob_list(k)),
                    load = load.join(" "),
                    ver = esc(&versions.join("; ")),
                );
                continue;
            }
            let _ = write!(
                h,
                "<tr class=\"{cls}\"><td>{id}</td><td>{mode}</td><td>{name}</td><td>{status}</td><td>{bodies}</td><td>{conns}</td><td>{workers}</td><td>{dur} s × {runs} ({warm} s)</td><td>{idle}</td><td>{drivers}, ring {ring}, mode {um}, sqpoll {sq}</td><td>{load}</td><td>{ver}</td></tr>",
                cls = if status == "ok" { "" } else { "bad" },
                id = esc(d["id"].as_str().unwrap_or("?")),
                mode = esc(d["mode"].as_str().unwrap_or("?")),
                name = esc(sc["name"].as_str().unwrap_or("?")),
                bodies = k["body_bytes"],
                conns = k["connections"],
                workers = k["workers"],
                dur = k["duration_s"],
                runs = k["runs"],
                warm = k["warmup_s"],
                idle = k["idle_connections"],
                drivers = esc(&o["io_drivers"].to_string()),
                ring = o["io_uring_ring_entries"],
                sq = o["io_uring_sqpoll"],
                um = esc(o["io_uring_mode"].as_str().unwrap_or("n/a")),
                load = load.join(" "),
                ver = esc(&versions.join("; ")),
            );
        }
    }
    h.push_str("</table>");
}

/// A series scenario's knobs as `name: value` pairs, so the cell wraps.
fn knob_list(k: &Value) -> String {
    match k.as_object() {
        Some(o) => o
            .iter()
            .map(|(n, v)| match v.as_str() {
                Some(s) => format!("{n}: {s}"),
                None => format!("{n}: {v}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        None => k.to_string(),
    }
}
