//! The knobs recorded with each scenario: what the harness set, and what OmniRelay runs
//! with. The data plane's io_uring flags are found in its `--help` (with their defaults),
//! so a flag it gains is recorded and settable without changing the harness; where it has
//! no flag, the `ProxyOptions::default()` value is recorded.

use std::path::Path;

use anyhow::bail;
use serde_json::{Value, json};

use super::keepalive::Plan;

/// `ProxyOptions::default()` in `dataplane/src/proxy/mod.rs`, recorded when the data plane
/// has no flag for them (a unit test keeps them in sync).
pub const OMNIRELAY_RING_ENTRIES: u32 = 1024;
pub const OMNIRELAY_BACKLOG: u32 = 1024;

/// OmniRelay's io_uring settings for a run, and the data-plane flags that set them.
#[derive(Debug, Clone, Default)]
pub struct OmniKnobs {
    /// `--ring-entries`, or the built-in default when there is no such flag.
    pub ring_entries: String,
    /// `--uring-mode`, when the data plane has that flag.
    pub uring_mode: Option<String>,
    /// Flags passed to `omnirelay-dataplane`.
    pub args: Vec<String>,
}

/// Where `flag` is in `help`: None when absent, else its `[default: X]` if it shows one.
fn help_default(help: &str, flag: &str) -> Option<Option<String>> {
    let start = help.find(&format!("{flag} "))?;
    let rest = &help[start + flag.len()..];
    // The flag's own text ends where the next option starts.
    let end = rest
        .find("\n  -")
        .or_else(|| rest.find("\n      --"))
        .unwrap_or(rest.len());
    let own = &rest[..end];
    Some(
        own.find("[default: ")
            .and_then(|i| own[i + 10..].split(']').next())
            .map(str::to_owned),
    )
}

/// Reads the data plane's flags and settles the io_uring knobs (`ring_entries`,
/// `uring_mode` as asked on the bench command line, else the data plane's defaults).
pub fn omnirelay(
    dataplane: &Path,
    ring_entries: Option<u32>,
    uring_mode: Option<&str>,
) -> anyhow::Result<OmniKnobs> {
    let help =
        crate::run::output(std::process::Command::new(dataplane).arg("--help")).unwrap_or_default();
    let mut k = OmniKnobs::default();
    match (help_default(&help, "--ring-entries"), ring_entries) {
        (Some(_), Some(n)) => {
            k.ring_entries = n.to_string();
            k.args.extend(["--ring-entries".into(), n.to_string()]);
        }
        (Some(d), None) => k.ring_entries = d.unwrap_or_else(|| OMNIRELAY_RING_ENTRIES.to_string()),
        (None, Some(_)) => bail!("this omnirelay-dataplane has no --ring-entries flag"),
        (None, None) => k.ring_entries = OMNIRELAY_RING_ENTRIES.to_string(),
    }
    match (help_default(&help, "--uring-mode"), uring_mode) {
        (Some(_), Some(m)) => {
            k.uring_mode = Some(m.to_owned());
            k.args.extend(["--uring-mode".into(), m.to_owned()]);
        }
        (Some(d), None) => k.uring_mode = d,
        (None, Some(_)) => bail!("this omnirelay-dataplane has no --uring-mode flag"),
        (None, None) => {}
    }
    Ok(k)
}

/// OmniRelay's own knobs: I/O drivers (as its admin endpoint reported them), io_uring
/// settings, the flags the harness passed, and the defaults it runs with.
pub fn omnirelay_json(plan: &Plan, io_drivers: Option<Value>) -> Value {
    json!({
        "io_drivers": io_drivers,
        "io_uring_ring_entries": plan.omni.ring_entries.parse::<u64>().ok(),
        "io_uring_mode": plan.omni.uring_mode,
        "io_uring_sqpoll": false,
        "dataplane_args": plan.omni.args,
        "listen_backlog": OMNIRELAY_BACKLOG,
        "max_idle_per_endpoint": 64,
        "access_log": "off",
    })
}

/// The knobs recorded with the scenario.
pub fn knobs(plan: &Plan, nofile: u64, io_drivers: Option<Value>) -> Value {
    json!({
        "workers": 1,
        "wrk_threads": 1,
        "connections": plan.connections,
        "body_bytes": plan.bodies,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "runs": plan.runs,
        "idle_connections": plan.idle_conns,
        "proxy_core": plan.proxy_core,
        "load_core": plan.load_core,
        "nofile_limit": nofile,
        "proxies": plan.peers.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "omnirelay": omnirelay_json(plan, io_drivers),
        "peer_settings": {
            "nginx": "worker_processes 1, upstream keepalive 64, access_log off",
            "haproxy": "nbthread 1, http-reuse safe (default), no logging",
            "envoy": "--concurrency 1, no access log",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded io_uring knobs must be what the data plane really uses.
    #[test]
    fn recorded_omnirelay_defaults_match_the_data_plane() {
        let src = std::fs::read_to_string(
            crate::run::workspace_root().join("dataplane/src/proxy/mod.rs"),
        )
        .unwrap();
        assert!(src.contains(&format!("ring_entries: {OMNIRELAY_RING_ENTRIES},")));
        assert!(src.contains(&format!("backlog: {OMNIRELAY_BACKLOG},")));
    }

    #[test]
    fn flag_defaults_are_read_from_help() {
        let help = "Options:
      --no-pin                         Do not pin workers to cores
      --uring-mode <URING_MODE>        io_uring completion delivery [default: defer]
      --ring-entries <RING_ENTRIES>    queue entries per worker [default: 1024]
      --workers <WORKERS>              Worker threads (default: one per core)
  -h, --help                           Print help
";
        assert_eq!(
            help_default(help, "--uring-mode"),
            Some(Some("defer".into()))
        );
        assert_eq!(
            help_default(help, "--ring-entries"),
            Some(Some("1024".into()))
        );
        assert_eq!(help_default(help, "--workers"), Some(None));
        assert_eq!(help_default(help, "--sqpoll"), None);
    }
}
