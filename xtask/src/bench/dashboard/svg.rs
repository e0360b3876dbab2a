//! Hand-written SVG charts for the dashboard: horizontal bars (with min–max whiskers and
//! failure marks) and history lines. Every data point carries `data-*` attributes so a
//! test can find it.

use std::fmt::Write as _;

/// The color of a proxy, the same in every chart.
pub fn color(proxy: &str) -> &'static str {
    match proxy {
        "omnirelay" => "#1f77b4",
        "omnirelay-baseline" => "#aec7e8",
        "nginx" => "#2ca02c",
        "haproxy" => "#ff7f0e",
        "envoy" => "#9467bd",
        _ => "#7f7f7f",
    }
}

/// Colors of rows that are not proxies (series rows), by position; none is a proxy's.
const PALETTE: [&str; 6] = [
    "#17becf", "#d62728", "#8c564b", "#e377c2", "#bcbd22", "#393b79",
];

/// The color of the `i`-th row of a series.
pub fn palette(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number with a sensible precision.
pub fn fmt(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// One bar: a proxy's value, its min–max range, or why it has none.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    pub range: Option<(f64, f64)>,
    pub failed: Option<String>,
    /// The bar's color; `None`: the proxy's ([`color`]).
    pub color: Option<&'static str>,
}

const W: f64 = 460.0;
const LABEL_W: f64 = 90.0;
const ROW_H: f64 = 22.0;

/// A horizontal bar chart; `reference` draws a dashed line (1.0 for ratio charts).
pub fn bars(title: &str, unit: &str, rows: &[Bar], reference: Option<f64>) -> String {
    let top = 24.0;
    let h = top + ROW_H * rows.len() as f64 + 8.0;
    let max = rows
        .iter()
        .flat_map(|r| [r.value, r.range.map(|x| x.1)])
        .flatten()
        .chain(reference)
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let plot_w = W - LABEL_W - 70.0;
    let x = |v: f64| LABEL_W + v / max * plot_w;
    let mut s = format!(
        r#"<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img"><title>{t}</title><text x="0" y="14" class="ct">{t} <tspan class="unit">({u})</tspan></text>"#,
        t = esc(title),
        u = esc(unit)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + ROW_H * i as f64;
        let _ = write!(
            s,
            r#"<text x="0" y="{:.1}" class="lbl">{}</text>"#,
            y + 14.0,
            esc(&r.label)
        );
        match (r.value, &r.failed) {
            (Some(v), None) => {
                let _ = write!(
                    s,
                    r#"<rect class="bar" data-proxy="{l}" data-value="{v}" x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="16" fill="{c}"><title>{l}: {f} {u}</title></rect>"#,
                    l = esc(&r.label),
                    w = (x(v) - LABEL_W).max(1.0),
                    c = r.color.unwrap_or_else(|| color(&r.label)),
                    f = fmt(v),
                    u = esc(unit)
                );
                if let Some((lo, hi)) = r.range {
                    let _ = write!(
                        s,
                        r#"<line class="whisker" x1="{:.1}" x2="{:.1}" y1="{m:.1}" y2="{m:.1}"/>"#,
                        x(lo),
                        x(hi),
                        m = y + 8.0
                    );
                }
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" class="val">{}</text>"#,
                    x(r.range.map_or(v, |(_, hi)| hi.max(v))) + 4.0,
                    y + 13.0,
                    fmt(v)
                );
            }
            (_, failed) => {
                let why = failed.clone().unwrap_or_else(|| "no data".into());
                let _ = write!(
                    s,
                    r#"<text x="{LABEL_W}" y="{:.1}" class="fail" data-proxy="{}"><title>{}</title>{}</text>"#,
                    y + 13.0,
                    esc(&r.label),
                    esc(&why),
                    if failed.is_some() {
                        "FAILED"
                    } else {
                        "no data"
                    }
                );
            }
        }
    }
    if let Some(rv) = reference {
        let _ = write!(
            s,
            r#"<line class="ref" x1="{xr:.1}" x2="{xr:.1}" y1="{top}" y2="{:.1}"/>"#,
            h - 4.0,
            xr = x(rv)
        );
    }
    s + "</svg>"
}

/// A line chart of `series` (name, one optional value per x label), each in its proxy's
/// color.
pub fn lines(
    title: &str,
    unit: &str,
    x_labels: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let colors: Vec<&str> = series.iter().map(|(n, _)| color(n)).collect();
    lines_colored(title, unit, x_labels, series, &colors)
}

/// [`lines`] with the color of each series given.
pub fn lines_colored(
    title: &str,
    unit: &str,
    x_labels: &[String],
    series: &[(String, Vec<Option<f64>>)],
    colors: &[&str],
) -> String {
    let (w, h, left, top, bottom) = (460.0, 200.0, 50.0, 24.0, 40.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let n = x_labels.len().max(1);
    // Room on the right for the legend (`10,000 routes`).
    let plot_w = w - left - 110.0;
    let plot_h = h - top - bottom;
    let px = |i: usize| {
        left + if n == 1 {
            plot_w / 2.0
        } else {
            plot_w * i as f64 / (n - 1) as f64
        }
    };
    let py = |v: f64| top + plot_h * (1.0 - v / max);
    let mut s = format!(
        r#"<svg class="chart lines" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title><text x="0" y="14" class="ct">{t} <tspan class="unit">({u})</tspan></text><line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{yb}"/><line class="axis" x1="{left}" x2="{xr}" y1="{yb}" y2="{yb}"/><text x="{lx}" y="{ty}" class="tick">{mx}</text><text x="{lx}" y="{yb}" class="tick">0</text>"#,
        t = esc(title),
        u = esc(unit),
        yb = top + plot_h,
        xr = left + plot_w,
        lx = left - 4.0,
        ty = top + 8.0,
        mx = fmt(max)
    );
    // Run labels (`MM-DD HH:MM`) while they fit, run numbers beyond; the full id on hover.
    for (i, l) in x_labels.iter().enumerate() {
        let short = match (l.get(5..10), l.get(11..16)) {
            (Some(day), Some(time)) if n <= 5 => format!("{day} {}", time.replace('-', ":")),
            _ => (i + 1).to_string(),
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="tick x"><title>{l}</title>{}</text>"#,
            px(i),
            top + plot_h + 14.0,
            esc(&short),
            l = esc(l)
        );
    }
    for (k, (name, vals)) in series.iter().enumerate() {
        let c = colors.get(k).copied().unwrap_or_else(|| color(name));
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", px(i), py(v))))
            .collect();
        if pts.len() > 1 {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                pts.join(" ")
            );
        }
        for (i, v) in vals.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    s,
                    r#"<circle class="point" data-proxy="{n}" data-value="{v}" cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"><title>{n} run {}: {}</title></circle>"#,
                    px(i),
                    py(*v),
                    i + 1,
                    fmt(*v),
                    n = esc(name)
                );
            }
        }
        let ly = top + 14.0 * k as f64 + 6.0;
        let lx = left + plot_w + 10.0;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{c}"/><text x="{:.1}" y="{:.1}" class="lbl">{}</text>"#,
            ly - 9.0,
            lx + 14.0,
            ly,
            esc(name),
        );
    }
    s + "</svg>"
}
