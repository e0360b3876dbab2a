//! Samples, the metrics derived from them, medians with min/max, and ratios to the best peer.

use serde_json::{Value, json};

use super::wrk::WrkReport;

/// A per-proxy figure of merit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    CpuUsPerReq,
    ReqPerCoreS,
    Rps,
    P50Us,
    P99Us,
    /// Body bytes through the proxy (both directions) per second, in 10^6 bytes.
    MbPerS,
    /// The user-space share of [`Metric::CpuUsPerReq`] (utime only).
    UserUsPerReq,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::CpuUsPerReq,
        Metric::ReqPerCoreS,
        Metric::Rps,
        Metric::P50Us,
        Metric::P99Us,
        Metric::MbPerS,
        Metric::UserUsPerReq,
    ];

    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            Metric::CpuUsPerReq => "cpu_us_per_req",
            Metric::ReqPerCoreS => "req_per_core_s",
            Metric::Rps => "rps",
            Metric::P50Us => "p50_us",
            Metric::P99Us => "p99_us",
            Metric::MbPerS => "mb_per_s",
            Metric::UserUsPerReq => "user_us_per_req",
        }
    }

    pub fn lower_is_better(self) -> bool {
        matches!(
            self,
            Metric::CpuUsPerReq | Metric::UserUsPerReq | Metric::P50Us | Metric::P99Us
        )
    }
}

/// One measured wrk run of one proxy.
#[derive(Debug, Clone)]
pub struct Sample {
    pub run: u32,
    pub wrk: WrkReport,
    /// Body bytes per request through the proxy, request and response.
    pub payload_bytes: u64,
    /// The proxy's CPU time (utime + stime of all its processes) over the wrk window.
    pub cpu_us: u64,
    /// Of that, the time in user space (utime).
    pub user_us: u64,
    pub wall_s: f64,
    /// How busy the proxy core and the load core were over the run (whole cores,
    /// interrupts included), from `/proc/stat`.
    pub proxy_core_busy: Option<f64>,
    pub load_core_busy: Option<f64>,
}

impl Sample {
    pub fn value(&self, m: Metric) -> f64 {
        let req = self.wrk.requests as f64;
        let cpu = self.cpu_us as f64;
        match m {
            Metric::CpuUsPerReq if req > 0.0 => cpu / req,
            Metric::ReqPerCoreS if cpu > 0.0 => req / (cpu / 1e6),
            Metric::UserUsPerReq if req > 0.0 => self.user_us as f64 / req,
            Metric::CpuUsPerReq | Metric::ReqPerCoreS | Metric::UserUsPerReq => 0.0,
            Metric::Rps => self.wrk.rps,
            Metric::P50Us => self.wrk.p50_us,
            Metric::P99Us => self.wrk.p99_us,
            Metric::MbPerS if self.wrk.duration_s > 0.0 => {
                req * self.payload_bytes as f64 / self.wrk.duration_s / 1e6
            }
            Metric::MbPerS => 0.0,
        }
    }

    /// Why this sample does not count, if it does not.
    pub fn problem(&self) -> Option<String> {
        let w = &self.wrk;
        if w.requests == 0 {
            return Some("no request completed".into());
        }
        if w.socket_errors() > 0 || w.non_2xx_3xx > 0 {
            return Some(format!(
                "wrk errors: connect {}, read {}, write {}, timeout {}; non-2xx/3xx {}",
                w.errors_connect, w.errors_read, w.errors_write, w.errors_timeout, w.non_2xx_3xx
            ));
        }
        None
    }

    pub fn to_json(&self) -> Value {
        let w = &self.wrk;
        let mut v = json!({
            "run": self.run,
            "requests": w.requests,
            "payload_bytes": self.payload_bytes,
            "wrk_duration_s": w.duration_s,
            "wall_s": self.wall_s,
            "cpu_us": self.cpu_us,
            "user_us": self.user_us,
            "cpu_utilization": if self.wall_s > 0.0 { self.cpu_us as f64 / 1e6 / self.wall_s } else { 0.0 },
            "socket_errors": {
                "connect": w.errors_connect, "read": w.errors_read,
                "write": w.errors_write, "timeout": w.errors_timeout,
            },
            "non_2xx_3xx": w.non_2xx_3xx,
            "proxy_core_busy": self.proxy_core_busy,
            "load_core_busy": self.load_core_busy,
            "error": self.problem(),
        });
        for m in Metric::ALL {
            v[m.key()] = json!(self.value(m));
        }
        v
    }
}

/// The median over runs of `m` of `a`'s run divided by `b`'s run of the same number: runs
/// alternate between the proxies, so a pair shares the machine's state of that moment and
/// drift over the whole measurement cancels out. Runs with errors on either side are left
/// out; None without a pair. With its confidence interval (see [`median_ci`]).
pub fn paired_ratio(m: Metric, a: &[Sample], b: &[Sample]) -> Option<MedianCi> {
    let ratios: Vec<f64> = a
        .iter()
        .filter(|s| s.problem().is_none())
        .filter_map(|x| {
            let y = b.iter().find(|y| y.run == x.run && y.problem().is_none())?;
            let (vx, vy) = (x.value(m), y.value(m));
            (vy > 0.0).then(|| vx / vy)
        })
        .collect();
    median_ci(&ratios, CI_LEVEL)
}

/// Confidence asked of the intervals around paired medians.
pub const CI_LEVEL: f64 = 0.95;

/// A median with a distribution-free confidence interval for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianCi {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// The interval's actual coverage: at least the level asked, except with too few
    /// values (below 6, even the full range covers less than 95%).
    pub level: f64,
    pub n: usize,
}

impl MedianCi {
    /// `{low, high, level, runs}` for the result file.
    pub fn interval_json(&self) -> Value {
        json!({ "low": self.low, "high": self.high, "level": self.level, "runs": self.n })
    }
}

/// The median of `v` and the order-statistic interval [x(k), x(n+1-k)] around it: the
/// true median lies below x(k) only if fewer than k of n values fall below it, which for
/// any distribution has the binomial probability P(Bin(n, 1/2) < k). The narrowest such
/// interval (largest k) whose coverage 1 - 2 P(Bin(n, 1/2) < k) is at least `level`; with
/// too few values for that, the full range and the coverage it has. None when empty.
pub fn median_ci(v: &[f64], level: f64) -> Option<MedianCi> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let median = median(&s)?;
    s.sort_by(f64::total_cmp);
    let n = s.len();
    // P(Bin(n, 1/2) = j) = C(n, j) / 2^n, from its logarithm: 2^-n underflows beyond
    // about 1,000 values, where the terms far from the middle are rightly 0.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut below = 0.0f64;
    let mut k = 1;
    let mut coverage = 1.0 - 2.0 * ln_half_n.exp();
    // Coverage of k + 1 needs P(Bin < k + 1) = P(Bin <= k).
    for j in 0..n / 2 {
        below += (ln_choose + ln_half_n).exp();
        ln_choose += ((n - j) as f64 / (j + 1) as f64).ln();
        let next = 1.0 - 2.0 * (below + (ln_choose + ln_half_n).exp());
        if next < level || j + 2 > n.div_ceil(2) {
            break;
        }
        k = j + 2;
        coverage = next;
    }
    Some(MedianCi {
        median,
        low: s[k - 1],
        high: s[n - k],
        level: coverage,
        n,
    })
}

/// Share of the proxy core that other work took during a sample (the core's busy share
/// minus the proxy's own CPU share) above which the sample counts as contended.
pub const CONTENDED: f64 = 0.10;

/// Per proxy of a case (JSON), how many of its samples were contended: "name: n of m".
pub fn contended(proxies: &[Value]) -> Vec<String> {
    let mut notes = Vec::new();
    for p in proxies {
        let samples = p["samples"].as_array().map_or(&[][..], Vec::as_slice);
        let n = samples
            .iter()
            .filter(|s| {
                let busy = s["proxy_core_busy"].as_f64().unwrap_or(0.0);
                busy - s["cpu_utilization"].as_f64().unwrap_or(0.0) > CONTENDED
            })
            .count();
        if n > 0 {
            let name = p["proxy"].as_str().unwrap_or("?");
            notes.push(format!("{name}: {n} of {}", samples.len()));
        }
    }
    notes
}

/// The median of `v` (mean of the middle two for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    })
}

/// The `p`-th percentile (0 < p <= 100) of `v` by nearest rank: the smallest value with at
/// least p% of the values at or below it (with fewer than 100 values, p99 is the maximum).
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// `{metric: median}`, `{metric: min}`, `{metric: max}` over `samples`.
pub fn summaries(samples: &[Sample]) -> (Value, Value, Value) {
    let (mut med, mut min, mut max) = (json!({}), json!({}), json!({}));
    for m in Metric::ALL {
        let vals: Vec<f64> = samples.iter().map(|s| s.value(m)).collect();
        med[m.key()] = json!(median(&vals));
        min[m.key()] = json!(vals.iter().copied().reduce(f64::min));
        max[m.key()] = json!(vals.iter().copied().reduce(f64::max));
    }
    (med, min, max)
}

/// The best value of `m` among `values` (lower or higher, as the metric wants).
pub fn best(m: Metric, values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .reduce(|a, b| if m.lower_is_better() == (a < b) { a } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[5.0], 1.0), Some(5.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn best_follows_the_metric_direction() {
        assert_eq!(best(Metric::CpuUsPerReq, [30.0, 25.0, 130.0]), Some(25.0));
        assert_eq!(best(Metric::Rps, [30.0, 25.0, 130.0]), Some(130.0));
        assert_eq!(best(Metric::Rps, []), None);
    }

    /// A run of 100,000 requests in 5 s with `cpu_us` of CPU, a fifth of it in user space.
    fn sample(run: u32, cpu_us: u64) -> Sample {
        Sample {
            run,
            wrk: WrkReport {
                requests: 100_000,
                duration_s: 5.0,
                ..Default::default()
            },
            payload_bytes: 1000,
            cpu_us,
            user_us: cpu_us / 5,
            wall_s: 5.0,
            proxy_core_busy: None,
            load_core_busy: None,
        }
    }

    #[test]
    fn cpu_per_request_and_its_inverse() {
        let s = sample(0, 2_500_000);
        assert!((s.value(Metric::CpuUsPerReq) - 25.0).abs() < 1e-9);
        assert!((s.value(Metric::UserUsPerReq) - 5.0).abs() < 1e-9);
        assert!((s.value(Metric::ReqPerCoreS) - 40_000.0).abs() < 1e-6);
        // 100,000 requests of 1,000 body bytes in 5 s.
        assert!((s.value(Metric::MbPerS) - 20.0).abs() < 1e-9);
        assert_eq!(s.problem(), None);
    }

    #[test]
    fn paired_ratios_pair_runs_of_the_same_number() {
        // B drifts up run by run; A stays at 0.9 of B in every run. The ratio of the
        // medians would be 0.9 × (median of B) / (median of B) too, but with one run of A
        // missing the medians of the rest mislead; pairing does not.
        let b: Vec<Sample> = (0..5)
            .map(|r| sample(r, 1_000_000 * u64::from(r + 1)))
            .collect();
        let a: Vec<Sample> = (1..5)
            .map(|r| sample(r, 900_000 * u64::from(r + 1)))
            .collect();
        let paired = paired_ratio(Metric::CpuUsPerReq, &a, &b).unwrap();
        assert!((paired.median - 0.9).abs() < 1e-9, "{paired:?}");
        // Every pair has the same ratio: the interval is that point.
        assert!((paired.low - 0.9).abs() < 1e-9 && (paired.high - 0.9).abs() < 1e-9);
        assert_eq!(paired.n, 4);
        // A run with errors on either side is no pair.
        let mut broken = b.clone();
        for s in &mut broken {
            s.wrk.non_2xx_3xx = 1;
        }
        assert_eq!(paired_ratio(Metric::CpuUsPerReq, &a, &broken), None);
        assert_eq!(paired_ratio(Metric::CpuUsPerReq, &a, &[]), None);
    }

    /// P(Bin(n, 1/2) < k), summed term by term, for checking the intervals.
    fn binomial_below(n: u64, k: u64) -> f64 {
        let mut c = 1.0;
        let mut sum = 0.0;
        for j in 0..k {
            sum += c;
            c = c * (n - j) as f64 / (j + 1) as f64;
        }
        sum / 2f64.powi(n as i32)
    }

    #[test]
    fn median_intervals_are_the_narrowest_order_statistics_with_the_coverage() {
        // Known sign-test intervals at 95%: n = 6..8 -> k = 1, n = 9..11 -> 2,
        // n = 15 -> 4, n = 25 -> 8, n = 30 -> 10.
        for (n, k) in [
            (6, 1),
            (7, 1),
            (8, 1),
            (9, 2),
            (11, 2),
            (12, 3),
            (15, 4),
            (25, 8),
            (30, 10),
        ] {
            // Values in shuffled order: the interval comes from the sorted ones.
            let v: Vec<f64> = (0..n).map(|i| ((i * 13) % n) as f64).collect();
            let ci = median_ci(&v, CI_LEVEL).unwrap();
            assert_eq!(ci.n, n as usize);
            assert_eq!(
                (ci.low, ci.high),
                ((k - 1) as f64, (n - k) as f64),
                "n = {n}"
            );
            let coverage = 1.0 - 2.0 * binomial_below(n, k);
            assert!((ci.level - coverage).abs() < 1e-12, "n = {n}: {}", ci.level);
            assert!(ci.level >= CI_LEVEL, "n = {n}");
            // One step narrower would cover less than asked.
            assert!(1.0 - 2.0 * binomial_below(n, k + 1) < CI_LEVEL, "n = {n}");
        }
        // Too few values: the full range, with the lower coverage it has.
        let ci = median_ci(&[3.0, 1.0, 2.0], CI_LEVEL).unwrap();
        assert_eq!((ci.median, ci.low, ci.high), (2.0, 1.0, 3.0));
        assert!((ci.level - 0.75).abs() < 1e-12);
        let one = median_ci(&[4.0], CI_LEVEL).unwrap();
        assert_eq!((one.low, one.high, one.level), (4.0, 4.0, 0.0));
        assert_eq!(median_ci(&[], CI_LEVEL), None);
        // Many values (2^-n underflows): the interval still spans about 1.96 standard
        // deviations of the rank, sqrt(n) / 2, each side of the middle.
        let n = 5000usize;
        let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let ci = median_ci(&v, CI_LEVEL).unwrap();
        let half_width = (ci.high - ci.low) / 2.0;
        let expected = 1.96 * (n as f64).sqrt() / 2.0;
        assert!(
            (half_width - expected).abs() <= 2.0,
            "n = {n}: {ci:?}, expected a half width near {expected}"
        );
        assert!(ci.level >= CI_LEVEL && ci.level < 0.96, "{}", ci.level);
    }
}
