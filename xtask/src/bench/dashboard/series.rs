//! Charts of series scenarios (the kernel scenarios, snapshot propagation): per series, the
//! latest run's medians with min–max (and p99 where the series has it), the ratios to the
//! reference row, and each row's median across runs. Rows are colored by position.

use std::fmt::Write as _;

use serde_json::Value;

use super::svg::{self, Bar, esc};

/// Renders every series of `sc` (the latest run), with history from `runs`.
pub fn section(h: &mut String, sc: &Value, runs: &[(&Value, &Value)]) {
    for note in sc["notes"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<p class=\"note\">{}</p>",
            esc(note.as_str().unwrap_or(""))
        );
    }
    for series in sc["series"].as_array().into_iter().flatten() {
        let title = series["title"].as_str().unwrap_or("?");
        let unit = series["unit"].as_str().unwrap_or("");
        let reference = series["reference"].as_str().unwrap_or("?");
        let rows = series["rows"].as_array().cloned().unwrap_or_default();
        let row_color = |r: &Value| {
            let i = rows
                .iter()
                .position(|x| x["label"] == r["label"])
                .unwrap_or(0);
            svg::palette(i)
        };
        let bar = |r: &Value, v: &Value, range: bool| Bar {
            color: Some(row_color(r)),
            label: r["label"].as_str().unwrap_or("?").to_owned(),
            value: v.as_f64(),
            range: range
                .then(|| Some((r["min"].as_f64()?, r["max"].as_f64()?)))
                .flatten(),
            failed: (r["status"] != "ok")
                .then(|| r["error"].as_str().unwrap_or("failed").to_owned()),
        };
        h.push_str("<div class=\"grid\">");
        let medians: Vec<Bar> = rows.iter().map(|r| bar(r, &r["median"], true)).collect();
        h.push_str(&svg::bars(title, unit, &medians, None));
        if rows.iter().any(|r| r.get("p99").is_some()) {
            let p99: Vec<Bar> = rows.iter().map(|r| bar(r, &r["p99"], false)).collect();
            h.push_str(&svg::bars(&format!("{title}: p99"), unit, &p99, None));
        }
        let ratios: Vec<Bar> = rows.iter().map(|r| bar(r, &r["ratio"], false)).collect();
        h.push_str(&svg::bars(
            &format!("{title}: ratio to {reference}"),
            "×",
            &ratios,
            Some(1.0),
        ));
        let labels: Vec<String> = runs
            .iter()
            .map(|(d, _)| d["id"].as_str().unwrap_or("?").to_owned())
            .collect();
        let colors: Vec<&str> = rows
            .iter()
            .filter(|r| r["label"].is_string())
            .map(row_color)
            .collect();
        let lines: Vec<(String, Vec<Option<f64>>)> = rows
            .iter()
            .filter_map(|r| r["label"].as_str())
            .map(|label| {
                let values = runs
                    .iter()
                    .map(|(_, s)| {
                        let row = s["series"]
                            .as_array()?
                            .iter()
                            .find(|x| x["title"] == title)?["rows"]
                            .as_array()?
                            .iter()
                            .find(|x| x["label"] == label)?
                            .clone();
                        (row["status"] == "ok")
                            .then(|| row["median"].as_f64())
                            .flatten()
                    })
                    .collect();
                (label.to_owned(), values)
            })
            .collect();
        h.push_str(&svg::lines_colored(
            &format!("History: {title}"),
            unit,
            &labels,
            &lines,
            &colors,
        ));
        h.push_str("</div>");
        for r in rows.iter().filter(|r| r["status"] != "ok") {
            let _ = write!(
                h,
                "<p class=\"bad\">{} failed:</p><pre class=\"bad\">{}</pre>",
                esc(r["label"].as_str().unwrap_or("?")),
                esc(r["error"].as_str().unwrap_or("no error text"))
            );
        }
    }
}
