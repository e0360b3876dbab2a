//! The dashboard in headless Chromium with no network. The page is generated from the
//! fixture result files in `xtask/src/bench/testdata/` (real runs, checked against the
//! schema first) into a temp dir; Chromium renders it and screenshots it; a copy with a
//! probe script appended reports what Chromium laid out: every chart, and in it every bar
//! and point with its rendered size and `data-value`. The test checks that each chart's
//! data points are the values of the result files (medians, ratios, history), that they
//! have a size on the page, and that the page fetched nothing.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use omnirelay_test_support::process::TempDir;
use serde_json::Value;

use super::{super::browser, HISTORY, METRICS, PAIRED_TITLE};

const WIDTH: u32 = 1500;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Appended to a copy of the page: writes the layout of every chart into `<pre id=probe>`.
const PROBE: &str = r#"<script>(function () {
  var out = { resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
              height: document.documentElement.scrollHeight, charts: [] };
  var section = "", heading = "";
  document.querySelectorAll("section.scenario, h3, svg.chart").forEach(function (el) {
    if (el.tagName === "SECTION") { section = el.id; heading = ""; return; }
    if (el.tagName === "H3") { heading = el.textContent; return; }
    var box = el.getBoundingClientRect();
    var chart = { section: section, heading: heading, title: el.querySelector("title").textContent,
                  w: box.width, h: box.height, marks: [] };
    el.querySelectorAll(".bar, .point").forEach(function (m) {
      var r = m.getBoundingClientRect();
      chart.marks.push({ kind: m.getAttribute("class"), proxy: m.getAttribute("data-proxy"),
                         value: Number(m.getAttribute("data-value")),
                         x: r.x - box.x, y: r.y - box.y, w: r.width, h: r.height });
    });
    out.charts.push(chart);
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"#;

fn fixtures() -> PathBuf {
    crate::run::workspace_root().join("xtask/src/bench/testdata")
}

/// The probe's JSON out of Chromium's `--dump-dom` output.
fn probe_of(dom: &str) -> Value {
    let start = dom
        .find("<pre id=\"probe\">")
        .expect("no probe output in the DOM")
        + 16;
    let end = start + dom[start..].find("</pre>").expect("unterminated probe");
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&text).expect("probe JSON")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "the screenshot is not a PNG"
    );
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    (be(16), be(20))
}

/// A chart as the probe saw it.
#[derive(Debug)]
struct Chart {
    section: String,
    heading: String,
    title: String,
    /// proxy or row label → values of its bars or points, in page order.
    marks: BTreeMap<String, Vec<f64>>,
}

fn charts_of(probe: &Value) -> Vec<Chart> {
    let mut charts = Vec::new();
    for c in probe["charts"].as_array().expect("charts") {
        let (cw, ch) = (c["w"].as_f64().unwrap(), c["h"].as_f64().unwrap());
        let title = c["title"].as_str().unwrap().to_owned();
        assert!(cw > 100.0 && ch > 30.0, "chart {title:?} is {cw}×{ch} px");
        let mut marks: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in c["marks"].as_array().unwrap() {
            let (x, y, w, h) = (
                m["x"].as_f64().unwrap(),
                m["y"].as_f64().unwrap(),
                m["w"].as_f64().unwrap(),
                m["h"].as_f64().unwrap(),
            );
            // Drawn, with a size, inside its chart.
            assert!(w > 0.0 && h > 0.0, "{title}: an empty mark {m}");
            assert!(
                x >= -4.0 && y >= -4.0 && x + w <= cw + 4.0 && y + h <= ch + 4.0,
                "{title}: mark {m} outside its {cw}×{ch} chart"
            );
            let value = m["value"]
                .as_f64()
                .expect("a mark without a numeric data-value");
            marks
                .entry(m["proxy"].as_str().unwrap_or("?").to_owned())
                .or_default()
                .push(value);
        }
        assert!(!marks.is_empty(), "chart {title:?} holds no data points");
        charts.push(Chart {
            section: c["section"].as_str().unwrap().to_owned(),
            heading: c["heading"].as_str().unwrap().to_owned(),
            title,
            marks,
        });
    }
    charts
}

/// What a chart must hold: label → values (bars: one each; history: one per run).
type Expected = BTreeMap<String, Vec<f64>>;

fn find<'a>(charts: &'a [Chart], section: &str, heading: &str, title: &str) -> &'a Chart {
    charts
        .iter()
        .find(|c| c.section == section && c.heading == heading && c.title == title)
        .unwrap_or_else(|| panic!("no chart {title:?} under {section} / {heading:?}"))
}

fn assert_holds(chart: &Chart, expected: &Expected) {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert_eq!(
        chart.marks.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{} / {}: the labels of its data points",
        chart.heading,
        chart.title
    );
    for (label, want) in expected {
        let got = &chart.marks[label];
        assert!(
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| close(*g, *w)),
            "{} / {} / {label}: the page shows {got:?}, the result files hold {want:?}",
            chart.heading,
            chart.title
        );
    }
}

/// Bars of `rows` (proxies or series rows): the label under `label_key` → `value(row)`,
/// for the rows that did not fail and have a value.
fn bars_of(rows: &Value, label_key: &str, value: impl Fn(&Value) -> Option<f64>) -> Expected {
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "ok")
        .filter_map(|r| Some((r[label_key].as_str()?.to_owned(), vec![value(r)?])))
        .collect()
}

/// History points: per label, the value in each run that has one, oldest first.
fn history_of(
    scenario_runs: &[&Value],
    rows_of: impl Fn(&Value) -> Option<Value>,
    label_key: &str,
    value: impl Fn(&Value) -> Option<f64>,
) -> Expected {
    let mut out = Expected::new();
    for sc in scenario_runs {
        for r in rows_of(sc)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
        {
            if let (Some(label), true, Some(v)) =
                (r[label_key].as_str(), r["status"] == "ok", value(&r))
            {
                out.entry(label.to_owned()).or_default().push(v);
            }
        }
    }
    out
}

/// Checks every chart that the latest run of scenario `name` and the history of `runs`
/// (oldest first) must produce; returns how many charts it checked.
fn check_scenario(charts: &[Chart], name: &str, runs: &[&Value]) -> usize {
    let sc = *runs.last().unwrap();
    let mut checked = 0;
    for case in sc["cases"].as_array().into_iter().flatten() {
        let heading = super::case_heading(case);
        let proxies = &case["proxies"];
        for (key, title, _) in METRICS {
            let med = bars_of(proxies, "proxy", |p| p["median"][key].as_f64());
            if med.is_empty() {
                // A metric the result does not record (older files) is not charted.
                assert!(
                    !charts.iter().any(|c| c.section == name
                        && c.heading == heading
                        && c.title.starts_with(title)),
                    "{name} / {heading}: a chart of {key}, which the result does not hold"
                );
                continue;
            }
            assert_holds(find(charts, name, &heading, title), &med);
            let ratio = bars_of(proxies, "proxy", |p| p["ratio_to_best_peer"][key].as_f64());
            let t = format!("{title}: ratio to best peer");
            assert_holds(find(charts, name, &heading, &t), &ratio);
            checked += 2;
            if !HISTORY.contains(key) {
                continue;
            }
            let hist = history_of(
                runs,
                |s| {
                    let c = s["cases"]
                        .as_array()?
                        .iter()
                        .find(|c| c["name"] == case["name"])?;
                    Some(c["proxies"].clone())
                },
                "proxy",
                |p| p["median"][key].as_f64(),
            );
            let t = format!("History: {title}");
            assert_holds(find(charts, name, &heading, &t), &hist);
            checked += 1;
        }
        let paired = bars_of(proxies, "proxy", |p| {
            p["paired_cpu_ratio_to_best_peer"].as_f64()
        });
        if !paired.is_empty() {
            assert_holds(find(charts, name, &heading, PAIRED_TITLE), &paired);
            checked += 1;
        }
    }
    let rss = &sc["rss"];
    if rss.as_array().is_some_and(|r| !r.is_empty()) {
        let heading = charts
            .iter()
            .find(|c| c.section == name && c.title == "RSS idle")
            .map(|c| c.heading.clone())
            .expect("no RSS chart");
        let idle = bars_of(rss, "proxy", |r| Some(r["idle_kib"].as_f64()? / 1024.0));
        assert_holds(find(charts, name, &heading, "RSS idle"), &idle);
        let per = bars_of(rss, "proxy", |r| r["kib_per_conn"].as_f64());
        let t = "Memory per idle connection";
        assert_holds(find(charts, name, &heading, t), &per);
        let ratio = bars_of(rss, "proxy", |r| {
            r["kib_per_conn_ratio_to_best_peer"].as_f64()
        });
        let t = "Per idle connection: ratio to best peer";
        assert_holds(find(charts, name, &heading, t), &ratio);
        checked += 3;
    }
    for series in sc["series"].as_array().into_iter().flatten() {
        let title = series["title"].as_str().unwrap();
        let rows = &series["rows"];
        let heading = charts
            .iter()
            .find(|c| c.section == name && c.title == title)
            .map(|c| c.heading.clone())
            .unwrap_or_else(|| panic!("no chart {title:?} in {name}"));
        assert_holds(
            find(charts, name, &heading, title),
            &bars_of(rows, "label", |r| r["median"].as_f64()),
        );
        if rows
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r.get("p99").is_some())
        {
            let t = format!("{title}: p99");
            assert_holds(
                find(charts, name, &heading, &t),
                &bars_of(rows, "label", |r| r["p99"].as_f64()),
            );
            checked += 1;
        }
        let t = format!(
            "{title}: ratio to {}",
            series["reference"].as_str().unwrap()
        );
        assert_holds(
            find(charts, name, &heading, &t),
            &bars_of(rows, "label", |r| r["ratio"].as_f64()),
        );
        let hist = history_of(
            runs,
            |s| {
                let x = s["series"]
                    .as_array()?
                    .iter()
                    .find(|x| x["title"] == title)?;
                Some(x["rows"].clone())
            },
            "label",
            |r| r["median"].as_f64(),
        );
        let t = format!("History: {title}");
        assert_holds(find(charts, name, &heading, &t), &hist);
        checked += 3;
    }
    checked
}

/// Runs Chromium on `url` with `args`; returns its stdout.
fn chromium(dir: &Path, tag: &str, args: &[&str], url: &str) -> String {
    let exe = browser::find().unwrap_or_else(|| {
        panic!(
            "{} is not installed: this test opens the dashboard in headless Chromium; {}",
            browser::PROGRAM,
            browser::INSTALL_HINT
        )
    });
    let out = dir.join(format!("{tag}.out"));
    browser::headless::run(
        &exe,
        &dir.join(format!("profile-{tag}")),
        args,
        url,
        &out,
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("chromium ({tag}): {e:#}"));
    std::fs::read_to_string(&out).unwrap_or_default()
}

#[test]
fn dashboard_renders_in_headless_chromium_with_its_data_points() {
    let tmp = TempDir::new("bench-dashboard-browser");
    let res = tmp.path().join("results");
    std::fs::create_dir_all(&res).unwrap();
    for e in std::fs::read_dir(fixtures()).unwrap().flatten() {
        std::fs::copy(e.path(), res.join(e.file_name())).unwrap();
    }
    // The fixtures are result files like any other: the schema holds for them.
    let all = super::super::check_all(&res).expect("fixtures match the schema");
    assert!(all.len() >= 2, "want at least two runs for the history");
    let page = super::write(&all, &tmp.path().join("dashboard")).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    let svg_count = html.matches("<svg class=\"chart").count();

    // The page as shipped: a screenshot, compared with one of an empty page.
    let url = format!("file://{}", page.display());
    let probed = tmp.path().join("dashboard/probed.html");
    std::fs::write(
        &probed,
        html.replacen("</body>", &format!("{PROBE}</body>"), 1),
    )
    .unwrap();
    let dom = chromium(
        tmp.path(),
        "dom",
        &["--dump-dom", &format!("--window-size={WIDTH},2000")],
        &format!("file://{}", probed.display()),
    );
    let probe = probe_of(&dom);
    assert_eq!(
        probe["resources"],
        serde_json::json!([]),
        "the page fetched resources; it must be self-contained"
    );
    let height = probe["height"].as_u64().unwrap().clamp(1000, 16_000) as u32;
    let size = format!("--window-size={WIDTH},{height}");
    let shot = tmp.path().join("dashboard.png");
    let blank = tmp.path().join("blank.png");
    chromium(
        tmp.path(),
        "shot",
        &[&format!("--screenshot={}", shot.display()), &size],
        &url,
    );
    chromium(
        tmp.path(),
        "blank",
        &[&format!("--screenshot={}", blank.display()), &size],
        "about:blank",
    );
    let png = std::fs::read(&shot).expect("no screenshot");
    assert_eq!(png_size(&png), (WIDTH, height));
    let blank_len = std::fs::metadata(&blank).unwrap().len();
    assert!(
        png.len() as u64 > 4 * blank_len,
        "the screenshot ({} bytes) is hardly more than an empty page's ({blank_len} bytes)",
        png.len()
    );
    // Kept for a human to look at.
    let keep = crate::run::workspace_root().join("target/bench-dashboard-test.png");
    if std::fs::copy(&shot, &keep).is_ok() {
        println!("screenshot: {}", keep.display());
    }

    // Every chart of the page was laid out, and holds the values of the result files.
    let charts = charts_of(&probe);
    assert_eq!(
        charts.len(),
        svg_count,
        "charts rendered vs. charts in the page"
    );
    let docs: Vec<&Value> = all.iter().map(|(_, v)| v).collect();
    let mut names: Vec<&str> = Vec::new();
    for d in &docs {
        for s in d["scenarios"].as_array().into_iter().flatten() {
            if let Some(n) = s["name"].as_str().filter(|n| !names.contains(n)) {
                names.push(n);
            }
        }
    }
    let mut checked = 0;
    for name in &names {
        let runs: Vec<&Value> = docs
            .iter()
            .filter_map(|d| super::scenario_of(d, name))
            .collect();
        let n = check_scenario(&charts, name, &runs);
        assert!(n > 0, "no chart of scenario {name} was checked");
        checked += n;
    }
    assert_eq!(checked, charts.len(), "charts the test does not know");
    let marks: usize = charts
        .iter()
        .map(|c| c.marks.values().map(Vec::len).sum::<usize>())
        .sum();
    println!(
        "{} charts ({checked} checked against the result files), {marks} data points, page {WIDTH}×{height}",
        charts.len()
    );
}
