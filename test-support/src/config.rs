//! `omnirelay.toml` text for tests, benchmarks and demos of the kernel side.

/// The smallest valid config around one budgeted listener: listener `name` on `address`, a
/// catch-all route to one `endpoint`, and a per-source budget of `rate` per second with
/// `burst`, charging new flows only or every packet. Callers append `[control]` and
/// `[kernel]` sections.
pub fn budgeted_listener(
    name: &str,
    address: &str,
    endpoint: &str,
    rate: u64,
    burst: u64,
    new_flows_only: bool,
) -> String {
    format!(
        r#"[[listeners]]
name = "{name}"
address = "{address}"
[[routes]]
name = "all"
path_prefix = "/"
cluster = "upstream"
[[clusters]]
name = "upstream"
endpoints = ["{endpoint}"]
[[budgets]]
name = "{name}-budget"
listener = "{name}"
rate_per_second = {rate}
burst = {burst}
new_flows_only = {new_flows_only}
"#
    )
}
