//! wrk, pinned to the load core, and what its `--latency` report says.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// What one wrk run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub duration_s: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_timeout: u64,
    pub non_2xx_3xx: u64,
}

impl WrkReport {
    /// Socket errors of every kind.
    pub fn socket_errors(&self) -> u64 {
        self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout
    }
}

/// The wrk command line: one thread, `connections`, `seconds`, pinned to `core`; with
/// `script` (from [`script`]) the requests are what the script makes them; `timeout`:
/// wrk's `--timeout` in seconds (wrk's default is 2 s).
pub fn command(
    core: usize,
    connections: u32,
    seconds: u64,
    addr: SocketAddr,
    path: &str,
    script: Option<&Path>,
    timeout: Option<u64>,
) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &core.to_string(), "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    if let Some(t) = timeout {
        cmd.arg(format!("--timeout={t}s"));
    }
    cmd.arg(format!("http://{addr}{path}"));
    cmd
}

/// For a POST of `upload_bytes` (0: plain GETs, no script), writes a wrk Lua script into
/// `dir` that makes every request a POST of that many bytes (wrk adds Content-Length).
pub fn script(dir: &Path, upload_bytes: usize) -> std::io::Result<Option<PathBuf>> {
    if upload_bytes == 0 {
        return Ok(None);
    }
    let path = dir.join(format!("post-{upload_bytes}.lua"));
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.body = string.rep(\"x\", {upload_bytes})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        ),
    )?;
    Ok(Some(path))
}

/// Runs `cmd` (from [`command`]) and parses its report.
pub fn run(cmd: &mut Command) -> anyhow::Result<WrkReport> {
    let line = crate::run::describe(cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&text).with_context(|| format!("unparsable wrk output:\n{text}"))
}

/// A wrk latency like `812.00us`, `1.25ms` or `2.00s`, in microseconds.
fn latency_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(n * scale)
}

fn duration_s(s: &str) -> Option<f64> {
    latency_us(s.trim_end_matches(',')).map(|us| us / 1e6)
}

/// Parses a `wrk --latency` report.
pub fn parse(text: &str) -> anyhow::Result<WrkReport> {
    let mut r = WrkReport::default();
    let (mut p50, mut p99, mut total) = (None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = latency_us(v),
            ["99%", v] => p99 = latency_us(v),
            [n, "requests", "in", d, ..] => {
                total = n.parse::<u64>().ok();
                r.duration_s = duration_s(d).unwrap_or(0.0);
            }
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx_3xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                let nums: Vec<u64> = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse().ok())
                    .collect();
                if let [c, rd, w, t] = nums.as_slice() {
                    (
                        r.errors_connect,
                        r.errors_read,
                        r.errors_write,
                        r.errors_timeout,
                    ) = (*c, *rd, *w, *t);
                }
            }
            _ => {}
        }
    }
    r.requests = total.context("no `N requests in` line")?;
    r.p50_us = p50.context("no 50% latency line (run with --latency)")?;
    r.p99_us = p99.context("no 99% latency line")?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ http://127.0.0.1:4000/body-100
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  200.00us   5.00ms   90.00%
    Req/Sec    58.00k     1.00k   60.00k    80.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    1.50ms
     99%    2.25ms
  115000 requests in 2.00s, 40.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  57500.25
Transfer/sec:     20.00MB
";

    #[test]
    fn parses_a_latency_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 115_000);
        assert!((r.duration_s - 2.0).abs() < 1e-9);
        assert!((r.rps - 57_500.25).abs() < 1e-9);
        assert!((r.p50_us - 812.0).abs() < 1e-9);
        assert!((r.p99_us - 2250.0).abs() < 1e-9);
        assert_eq!((r.errors_read, r.errors_timeout, r.non_2xx_3xx), (3, 1, 7));
        assert_eq!(r.socket_errors(), 4);
    }

    #[test]
    fn a_report_without_latency_is_an_error() {
        let text = "  10 requests in 1.00s, 1.00KB read\nRequests/sec: 10.00\n";
        assert!(parse(text).is_err());
    }
}
