//! The dashboard's memory charts: resident memory idle and per idle keep-alive connection,
//! with the ratio to the best peer.

use std::fmt::Write as _;

use serde_json::Value;

use super::svg::{self, Bar, esc};

/// Appends the memory charts of scenario `sc`.
pub fn rss_section(h: &mut String, sc: &Value) {
    let rss = sc["rss"].as_array().cloned().unwrap_or_default();
    if rss.is_empty() {
        return;
    }
    let conns = rss
        .iter()
        .find_map(|r| r["connections"].as_u64())
        .unwrap_or(0);
    let _ = write!(
        h,
        "<h3>Resident memory, idle and with {conns} idle keep-alive connections</h3><div class=\"grid\">"
    );
    let rows = |f: &dyn Fn(&Value) -> Option<f64>| -> Vec<Bar> {
        rss.iter()
            .map(|r| Bar {
                label: r["proxy"].as_str().unwrap_or("?").to_owned(),
                value: f(r),
                range: None,
                failed: (r["status"] != "ok")
                    .then(|| r["error"].as_str().unwrap_or("failed").to_owned()),
                color: None,
            })
            .collect()
    };
    h.push_str(&svg::bars(
        "RSS idle",
        "MiB",
        &rows(&|r| Some(r["idle_kib"].as_f64()? / 1024.0)),
        None,
    ));
    h.push_str(&svg::bars(
        "Memory per idle connection",
        "KiB",
        &rows(&|r| r["kib_per_conn"].as_f64()),
        None,
    ));
    h.push_str(&svg::bars(
        "Per idle connection: ratio to best peer",
        "×",
        &rows(&|r| r["kib_per_conn_ratio_to_best_peer"].as_f64()),
        Some(1.0),
    ));
    h.push_str("</div>");
    for r in &rss {
        if let Some(note) = r["note"].as_str() {
            let _ = write!(
                h,
                "<p class=\"note\">{}: {}</p>",
                esc(r["proxy"].as_str().unwrap_or("?")),
                esc(note)
            );
        }
    }
    super::failures(h, &rss);
}
