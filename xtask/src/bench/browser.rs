//! Headless Chromium (Debian's `chromium`), which the dashboard test opens the generated
//! page in: installed by the test command, run with no network, its own throw-away profile,
//! and a deadline.

use std::path::PathBuf;

use anyhow::Context as _;

/// The program, and the Debian package that provides it.
pub const PROGRAM: &str = "chromium";
pub const PACKAGE: &str = "chromium";

/// How to get it when it is missing (the test's failure message says this).
#[cfg(test)]
pub const INSTALL_HINT: &str = "install it as root with `apt-get install -y chromium`, \
     or run `cargo xtask test`, which installs it";

/// Installs Chromium when it is missing (apt-get; idempotent).
pub fn ensure() -> anyhow::Result<PathBuf> {
    super::tools::ensure_packages(&[PROGRAM])?;
    find().with_context(|| format!("{PROGRAM} is still missing after installing {PACKAGE}"))
}

/// The installed browser, if any.
pub fn find() -> Option<PathBuf> {
    crate::packages::find_program(PROGRAM)
}

/// Running it (only the dashboard test does).
#[cfg(test)]
pub mod headless {
    use std::{
        os::unix::process::CommandExt as _,
        path::Path,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use anyhow::{Context as _, bail};

    /// Flags of every run: headless, as root (no sandbox), nothing in the background, and no
    /// network at all (every host name fails to resolve, every connection goes to a proxy
    /// that is not there), so a page that needed the network would show it.
    const FLAGS: &[&str] = &[
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--proxy-server=socks5://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ];

    /// Runs `chromium FLAGS --user-data-dir=<profile> ARGS URL` in its own process group with
    /// stdout to `stdout`; kills the group (and fails) after `timeout`.
    pub fn run(
        chromium: &Path,
        profile: &Path,
        args: &[&str],
        url: &str,
        stdout: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let err_log = profile.with_extension("stderr.log");
        let mut cmd = Command::new(chromium);
        cmd.args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout)?)
            .stderr(std::fs::File::create(&err_log)?);
        let line = crate::run::describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start `{line}`"))?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Helpers of the browser that outlived it (the group exists while any member lives,
        // so its id cannot have been reused).
        if status.is_none() || !super::super::procs::group_pids(pgid).is_empty() {
            // SAFETY: kill(2) with a negative pid signals only the group started above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
        let tail = || {
            let text = std::fs::read_to_string(&err_log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        match status {
            None => bail!("`{line}` did not finish within {timeout:?}:\n{}", tail()),
            Some(s) if !s.success() => bail!("`{line}` failed ({s}):\n{}", tail()),
            Some(_) => Ok(()),
        }
    }
}
