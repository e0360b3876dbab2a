//! Running a kernel and its initramfs in qemu-system-x86_64 with the serial console
//! captured: streamed line by line to a log file, watched for the init's lines (progress)
//! and for kernel panics, RCU stalls and lockups, which end the run early.

use std::{
    io::{BufRead as _, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    kernels::{Kernel, cache_dir},
    results::{self, Fatal, MARK},
};

/// `--accel`: how to run the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a guest boots under it within a short timeout, else TCG (remembered per host).
    Auto,
    /// KVM only.
    Kvm,
    /// TCG (emulation) only.
    Tcg,
}

/// The accelerator of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's emulator.
    Tcg,
}

impl Accel {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // `max` gives the emulated CPU AES-NI, PCLMULQDQ and AVX2, so the kernel's
            // accelerated crypto paths are the ones exercised, as on real hardware.
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// qemu-system-x86_64, if installed.
pub fn binary() -> Option<PathBuf> {
    omnirelay_test_support::caps::find_in_path("qemu-system-x86_64")
}

/// One guest run's settings.
#[derive(Debug)]
pub struct VmConfig<'a> {
    /// Kernel to boot.
    pub kernel: &'a Kernel,
    /// Its initramfs.
    pub initrd: &'a Path,
    /// Accelerator.
    pub accel: Accel,
    /// The init must print its boot line within this time.
    pub boot_timeout: Duration,
    /// The whole run must end within this time.
    pub total_timeout: Duration,
    /// Where the console log goes.
    pub log_path: &'a Path,
    /// Extra kernel command line.
    pub extra_cmdline: &'a str,
    /// Print every console line, not only the init's and the tests' result lines.
    pub verbose: bool,
}

/// Guest memory. The initramfs (test binaries with debug info) is unpacked into RAM.
const MEMORY_MIB: u32 = 1536;

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The init powered the machine off after its last test.
    PoweredOff,
    /// The kernel died or wedged; the line that said so.
    Fatal(Fatal, String),
    /// No boot line from the init in time.
    BootTimeout(Duration),
    /// The run took longer than allowed.
    Timeout(Duration),
    /// qemu exited without the init powering off.
    QemuExited(String),
}

impl End {
    /// Why the tests that did not run did not, for the matrix.
    pub fn describe(&self) -> String {
        match self {
            End::PoweredOff => "the init ended without running it".into(),
            End::Fatal(f, line) => format!("{} ({})", f.describe(), line.trim()),
            End::BootTimeout(t) => format!("the guest did not boot within {} s", t.as_secs()),
            End::Timeout(t) => format!("the VM run exceeded {} s and was killed", t.as_secs()),
            End::QemuExited(why) => format!("qemu exited: {why}"),
        }
    }
}

/// What one guest run produced.
#[derive(Debug)]
pub struct VmRun {
    /// Every console line.
    pub lines: Vec<String>,
    /// How it ended.
    pub end: End,
    /// Seconds from start to the init's boot line.
    pub boot_secs: Option<f64>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

fn cmdline(extra: &str) -> String {
    let mut line = String::from(
        // Serial console; kernel messages of warning level and worse only, so the tests'
        // output stays readable (panics, stalls and splats are all at that level).
        "console=ttyS0,115200 loglevel=5 \
         panic=-1 \
         rdinit=/init \
         mitigations=off",
    );
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// Boots the guest and follows its console until it powers off, dies or times out.
pub fn run(cfg: &VmConfig<'_>) -> anyhow::Result<VmRun> {
    let qemu = binary().context("qemu-system-x86_64 is not installed (package qemu-system-x86)")?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .args(["-m", &MEMORY_MIB.to_string(), "-smp", "2"])
        .args(cfg.accel.args())
        .arg("-kernel")
        .arg(cfg.kernel.vmlinuz())
        .arg("-initrd")
        .arg(cfg.initrd)
        .arg("-append")
        .arg(cmdline(cfg.extra_cmdline))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cfg.verbose {
        println!("    $ {}", crate::run::describe(&cmd));
    }
    let label = cfg.kernel.spec.name;
    let started = Instant::now();
    let mut child = cmd.spawn().context("start qemu-system-x86_64")?;
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(cfg.log_path)
            .with_context(|| format!("create {}", cfg.log_path.display()))?,
    );

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut lines = Vec::new();
    let mut end: Option<End> = None;
    let mut boot_secs = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if line.contains(MARK) && line.contains(" boot ") && boot_secs.is_none() {
                    boot_secs = Some(started.elapsed().as_secs_f64());
                }
                if end.is_none()
                    && let Some(fatal) = results::fatal_in(&line)
                {
                    println!("    [{label}] {line}");
                    end = Some(End::Fatal(fatal, line.clone()));
                    // Let the trace that follows reach the log, then stop.
                    kill_at = Some(Instant::now() + Duration::from_secs(3));
                } else if cfg.verbose || is_progress(&line) {
                    println!("    [{label}] {line}");
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let elapsed = started.elapsed();
        if end.is_none() && boot_secs.is_none() && elapsed > cfg.boot_timeout {
            end = Some(End::BootTimeout(cfg.boot_timeout));
            kill_at = Some(Instant::now());
        }
        if end.is_none() && elapsed > cfg.total_timeout {
            end = Some(End::Timeout(cfg.total_timeout));
            kill_at = Some(Instant::now());
        }
        if !killed && kill_at.is_some_and(|t| Instant::now() >= t) {
            let _ = child.kill();
            killed = true;
        }
    }
    let _ = log.flush();
    let status = child.wait().context("wait for qemu")?;
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    let powered_off = lines
        .iter()
        .any(|l| l.contains(MARK) && l.trim_end().ends_with("poweroff"));
    let end = end.unwrap_or_else(|| {
        if powered_off && status.success() {
            End::PoweredOff
        } else {
            let why = qemu_stderr.trim();
            End::QemuExited(if why.is_empty() {
                format!("{status} before the init powered off")
            } else {
                format!("{status}: {why}")
            })
        }
    });
    Ok(VmRun {
        lines,
        end,
        boot_secs,
        elapsed: started.elapsed(),
    })
}

/// Lines worth echoing while a run is in progress: the init's and per-test results.
fn is_progress(line: &str) -> bool {
    if let Some(at) = line.find(MARK) {
        let rest = &line[at + MARK.len()..];
        return !rest.trim_start().starts_with("poweroff");
    }
    results::libtest_line(line).is_some() || results::skip_line(line).is_some()
}

/// Where the verdict on KVM for this host is remembered.
fn kvm_verdict_path() -> PathBuf {
    cache_dir().join("kvm-verdict")
}

/// This host's identity for the verdict: the host kernel and the qemu version.
fn host_key() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = binary()
        .and_then(|q| crate::run::output(Command::new(q).arg("--version")))
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{} / {}", release.trim(), qemu.trim())
}

/// Why KVM is not to be tried, if a previous run found that its guests hang here.
pub fn kvm_known_bad() -> Option<String> {
    let text = std::fs::read_to_string(kvm_verdict_path()).ok()?;
    let (key, why) = text.split_once('\n')?;
    (key == host_key()).then(|| why.trim().to_owned())
}

/// Remembers that KVM guests do not boot on this host (host kernel and qemu version).
pub fn record_kvm_bad(why: &str) {
    let path = kvm_verdict_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&path, format!("{}\n{why}\n", host_key()));
}

/// Whether `/dev/kvm` opens.
pub fn kvm_device_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
}

/// The verdict file's path, for messages.
pub fn kvm_verdict_file() -> PathBuf {
    kvm_verdict_path()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_command_line_has_console_panic_reboot_and_extra() {
        let line = cmdline("loglevel=8");
        for want in ["console=ttyS0", "panic=-1", "rdinit=/init", "loglevel=8"] {
            assert!(line.contains(want), "{line}");
        }
        assert!(
            line.ends_with(" loglevel=8"),
            "extra comes last and wins: {line}"
        );
    }

    #[test]
    fn progress_lines_are_init_and_test_results_only() {
        assert!(is_progress("OMNIRELAY-VM start xdp_counter"));
        assert!(is_progress("test a ... ok"));
        assert!(is_progress("SKIP a: why"));
        assert!(!is_progress("OMNIRELAY-VM poweroff"));
        assert!(!is_progress("[    1.0] Run /init as init process"));
    }
}
