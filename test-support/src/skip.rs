//! Reporting of tests that cannot run on this host.
//!
//! libtest has no runtime skip, so a skipped test returns early and passes. To keep that
//! from being a silent false pass, every skip writes a `SKIP` line straight to the process's
//! stderr (bypassing libtest's output capture) and, when `OMNIRELAY_SKIP_LOG` names a file,
//! appends the same line there; `cargo xtask test` prints that file as a summary.

use std::io::Write as _;

/// Environment variable naming the file that collects skip lines.
pub const SKIP_LOG_ENV: &str = "OMNIRELAY_SKIP_LOG";

/// Reports that the current test is skipped because of `reason`. Call it, then return.
pub fn report(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    let line = format!("SKIP {test}: {reason}\n");
    // Direct writes to the stderr handle are not captured by libtest, unlike `eprintln!`.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV)
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Returns from the enclosing test with a skip line unless every listed capability is
/// present on this host.
///
/// ```ignore
/// require_caps!(Capability::Root, Capability::NetNs, Capability::XdpVeth);
/// ```
#[macro_export]
macro_rules! require_caps {
    ($($cap:expr),+ $(,)?) => {
        if let Err(missing) = $crate::caps::require(&[$($cap),+]) {
            $crate::skip::report(&missing.to_string());
            return;
        }
    };
}
