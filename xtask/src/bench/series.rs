//! Series: the result shape of scenarios that do not fit "proxies × HTTP metrics", such as
//! the kernel scenarios. A series is one measured quantity (title, unit, direction) with
//! one row per variant (a program path, a protection mode, ...): every raw sample, the
//! median, min and max (and p99, in series that ask for it), and the ratio of the median
//! to a reference row's median.

use serde_json::{Value, json};

use super::stats;

/// One row of a series.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub label: String,
    pub samples: Vec<f64>,
    /// Set when this variant failed; it then gets no ratio.
    pub error: Option<String>,
}

/// One series being assembled.
#[derive(Clone, Debug)]
pub struct Series {
    pub title: String,
    pub unit: String,
    pub lower_is_better: bool,
    /// Label of the row the ratios are relative to.
    pub reference: String,
    pub rows: Vec<Row>,
    /// Whether rows report their p99 (nearest rank) too.
    pub p99: bool,
}

impl Series {
    pub fn new(title: &str, unit: &str, lower_is_better: bool, reference: &str) -> Series {
        Series {
            title: title.to_owned(),
            unit: unit.to_owned(),
            lower_is_better,
            reference: reference.to_owned(),
            rows: Vec::new(),
            p99: false,
        }
    }

    /// Appends a sample to the row `label` (created on first use, in order).
    pub fn push(&mut self, label: &str, value: f64) {
        self.row(label).samples.push(value);
    }

    /// Marks the row `label` failed.
    pub fn fail(&mut self, label: &str, error: &str) {
        self.row(label).error = Some(error.to_owned());
    }

    fn row(&mut self, label: &str) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.label == label) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            label: label.to_owned(),
            ..Row::default()
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    /// The median of row `label`, when it has samples and did not fail.
    pub fn median(&self, label: &str) -> Option<f64> {
        let r = self.rows.iter().find(|r| r.label == label)?;
        if r.error.is_some() {
            return None;
        }
        stats::median(&r.samples)
    }

    pub fn to_json(&self) -> Value {
        let reference = self.median(&self.reference);
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let ok = r.error.is_none() && !r.samples.is_empty();
                let median = if ok { stats::median(&r.samples) } else { None };
                let fold = |f: fn(f64, f64) -> f64| r.samples.iter().copied().reduce(f);
                let mut row = json!({
                    "label": r.label,
                    "status": if ok { "ok" } else { "failed" },
                    "error": r.error,
                    "samples": r.samples,
                    "median": median,
                    "min": fold(f64::min),
                    "max": fold(f64::max),
                    "ratio": match (median, reference) {
                        (Some(m), Some(b)) if b > 0.0 => json!(m / b),
                        _ => Value::Null,
                    },
                });
                if self.p99 {
                    row["p99"] = json!(if ok {
                        stats::percentile(&r.samples, 99.0)
                    } else {
                        None
                    });
                }
                row
            })
            .collect();
        json!({
            "title": self.title,
            "unit": self.unit,
            "lower_is_better": self.lower_is_better,
            "reference": self.reference,
            "rows": rows,
        })
    }
}

/// A scenario object made of series. `failed` when any row failed or has no samples.
pub fn scenario_json(
    name: &str,
    duration_s: f64,
    knobs: Value,
    series: &[Series],
    notes: &[String],
) -> Value {
    let bad: Vec<String> = series
        .iter()
        .flat_map(|s| s.rows.iter())
        .filter(|r| r.error.is_some() || r.samples.is_empty())
        .map(|r| {
            format!(
                "{}: {}",
                r.label,
                r.error.as_deref().unwrap_or("no samples")
            )
        })
        .collect();
    json!({
        "name": name,
        "status": if bad.is_empty() { "ok" } else { "failed" },
        "error": if bad.is_empty() { Value::Null } else { json!(bad.join("; ")) },
        "duration_s": duration_s,
        "knobs": knobs,
        "series": series.iter().map(Series::to_json).collect::<Vec<_>>(),
        "notes": notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_the_reference_median_and_failures_have_none() {
        let mut s = Series::new("ns per packet", "ns", true, "floor");
        for v in [20.0, 22.0, 21.0] {
            s.push("floor", v);
        }
        for v in [40.0, 44.0, 42.0] {
            s.push("pass", v);
        }
        s.push("drop", 1.0);
        s.fail("drop", "verifier said no");
        let j = s.to_json();
        assert_eq!(j["rows"][0]["ratio"], 1.0);
        assert_eq!(j["rows"][1]["median"], 42.0);
        assert_eq!(j["rows"][1]["ratio"], 2.0);
        assert_eq!(j["rows"][1]["min"], 40.0);
        assert!(j["rows"][1].get("p99").is_none());
        s.p99 = true;
        assert_eq!(s.to_json()["rows"][1]["p99"], 44.0);
        assert!(j["rows"][2]["ratio"].is_null());
        assert_eq!(j["rows"][2]["status"], "failed");
        let sc = scenario_json("xdp-cost", 1.0, json!({}), &[s], &[]);
        assert_eq!(sc["status"], "failed");
        assert!(sc["error"].as_str().unwrap().contains("verifier said no"));
    }
}
