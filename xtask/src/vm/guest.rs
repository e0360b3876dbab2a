//! The guest side: this same xtask binary runs as PID 1 (`/init`) inside the VM.
//!
//! It mounts the pseudo file systems the tests use (proc, sys, devtmpfs, a tmpfs on /run
//! for `ip netns`, bpffs, cgroup2, debugfs, tracefs), loads the modules listed in the plan
//! with `finit_module(2)`, brings up loopback, runs each test binary with a timeout, relays
//! its output line by line to the console, prints one result line per test (see
//! `results.rs` for the format), and powers the VM off. It never returns: PID 1 exiting
//! would panic the kernel.

use std::{
    io::{BufRead as _, Write as _},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::results::MARK;

/// Where the host puts the plan inside the initramfs.
pub const PLAN_PATH: &str = "/omnirelay/plan";

/// One step of the plan file: `module<TAB>path` or
/// `test<TAB>name<TAB>timeout_secs<TAB>program<TAB>arg...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load this module file (absolute path in the guest).
    Module(String),
    /// Run a test binary.
    Test {
        /// Name in result lines.
        name: String,
        /// Seconds before the binary is killed.
        timeout_secs: u64,
        /// Absolute path in the guest.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl Step {
    /// The plan line of this step.
    pub fn to_line(&self) -> String {
        match self {
            Step::Module(path) => format!("module\t{path}"),
            Step::Test {
                name,
                timeout_secs,
                program,
                args,
            } => {
                let mut fields = vec![
                    "test".to_owned(),
                    name.clone(),
                    timeout_secs.to_string(),
                    program.clone(),
                ];
                fields.extend(args.iter().cloned());
                fields.join("\t")
            }
        }
    }

    /// Parses a plan line.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["module", path] => Ok(Step::Module((*path).to_owned())),
            ["test", name, timeout, program, args @ ..] => Ok(Step::Test {
                name: (*name).to_owned(),
                timeout_secs: timeout
                    .parse()
                    .with_context(|| format!("timeout {timeout:?}"))?,
                program: (*program).to_owned(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            }),
            _ => bail!("unparsable plan line {line:?}"),
        }
    }
}

/// Prints one line for the host in a single write, so nothing interleaves inside it.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{MARK} {text}\n").as_bytes());
    let _ = out.flush();
}

/// PID 1's entry point.
pub fn main() -> ! {
    if let Err(e) = run() {
        say(&format!("error {e:#}"));
    }
    power_off()
}

fn power_off() -> ! {
    say("poweroff");
    // SAFETY: sync and reboot take no pointers; as PID 1 with CAP_SYS_BOOT, RB_POWER_OFF
    // stops the machine (qemu exits).
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only reached if reboot failed; PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// PATH of the init and every test (the kernel starts init without one).
const GUEST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin:/omnirelay/bin";

fn run() -> anyhow::Result<()> {
    // SAFETY: PID 1 is still single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("PATH", GUEST_PATH) };
    mount_all()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    say(&format!("boot release={release} cpus={cpus}"));

    let plan = std::fs::read_to_string(PLAN_PATH).with_context(|| format!("read {PLAN_PATH}"))?;
    let steps: Vec<Step> = plan
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Step::parse)
        .collect::<anyhow::Result<_>>()?;

    let mut loaded = 0;
    for step in &steps {
        if let Step::Module(path) = step {
            match load_module(path) {
                Ok(()) => loaded += 1,
                Err(e) => say(&format!("module-error {path}: {e}")),
            }
        }
    }
    say(&format!("modules loaded={loaded}"));
    loopback_up();

    for step in &steps {
        if let Step::Test {
            name,
            timeout_secs,
            program,
            args,
        } = step
        {
            say(&format!("start {name}"));
            let started = Instant::now();
            let verdict = run_test(program, args, Duration::from_secs(*timeout_secs));
            say(&format!(
                "result {name} {verdict} secs={:.1}",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    say("done");
    Ok(())
}

fn mount_all() -> anyhow::Result<()> {
    // (source, target, type, options, required)
    let mounts: [(&str, &str, &str, &str, bool); 9] = [
        ("proc", "/proc", "proc", "", true),
        ("sysfs", "/sys", "sysfs", "", true),
        ("devtmpfs", "/dev", "devtmpfs", "", true),
        ("tmpfs", "/run", "tmpfs", "mode=0755", true),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777", true),
        ("bpf", "/sys/fs/bpf", "bpf", "", true),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", "", true),
        ("debugfs", "/sys/kernel/debug", "debugfs", "", false),
        ("tracefs", "/sys/kernel/tracing", "tracefs", "", false),
    ];
    for (source, target, fstype, options, required) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(source, target, fstype, options) {
            if required {
                bail!("mount {fstype} on {target}: {e}");
            }
            say(&format!("note: mount {fstype} on {target}: {e}"));
        }
    }
    for dir in ["/run/netns", "/root", "/var/run"] {
        let _ = std::fs::create_dir_all(dir);
    }
    Ok(())
}

fn mount(source: &str, target: &str, fstype: &str, options: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
    let (source, target, fstype, options) = (c(source)?, c(target)?, c(fstype)?, c(options)?);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `finit_module(2)` flag: the file is compressed; the kernel decompresses it
/// (CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

fn load_module(path: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| path.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: the fd is open for reading; the parameter string is a valid empty C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // Already loaded (a dependency of an earlier module, or built in): fine.
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

fn loopback_up() {
    match Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => say(&format!("note: ip link set lo up: {s}")),
        Err(e) => say(&format!("note: ip link set lo up: {e}")),
    }
}

/// Runs one test binary, relaying its stdout and stderr (merged) line by line, and
/// returns the verdict field of the result line.
fn run_test(program: &str, args: &[String], timeout: Duration) -> String {
    let spawned = (|| -> std::io::Result<_> {
        let (reader, writer) = std::io::pipe()?;
        let child = Command::new(program)
            .args(args)
            .current_dir(Path::new(program).parent().unwrap_or(Path::new("/")))
            .env("PATH", GUEST_PATH)
            .env("HOME", "/root")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            // Own process group, so a timeout kills whatever the test started too.
            .process_group(0)
            .spawn()?;
        Ok((child, reader))
    })();
    let (mut child, reader) = match spawned {
        Ok(pair) => pair,
        Err(e) => return format!("spawn-error={}", e.to_string().replace(' ', "_")),
    };
    let relay = std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(format!("{line}\n").as_bytes());
            let _ = out.flush();
        }
    });
    let deadline = Instant::now() + timeout;
    let verdict = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exit={code}"),
                    (None, Some(sig)) => format!("signal={sig}"),
                    (None, None) => format!("exit={status}"),
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: kill takes no pointers; the negative pid names the child's group.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                break format!("timeout={}", timeout.as_secs());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break format!("wait-error={}", e.to_string().replace(' ', "_")),
        }
    };
    // The relay ends when every writer is closed; a leftover grandchild could keep the
    // pipe open, so do not wait for it forever.
    let relay_deadline = Instant::now() + Duration::from_secs(2);
    while !relay.is_finished() && Instant::now() < relay_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    verdict
}

/// The planted failure of `vm-test --plant-failure exit`: a test that fails.
pub fn planted_failure() -> ! {
    println!("planted failure: this test exits with status 1 on purpose (--plant-failure)");
    std::process::exit(1)
}

/// The planted failure of `vm-test --plant-failure panic`: crashes the guest kernel
/// through magic SysRq, so the harness's panic detection is exercised for real.
pub fn planted_panic() -> anyhow::Result<()> {
    println!(
        "planted failure: crashing the kernel through /proc/sysrq-trigger (--plant-failure panic)"
    );
    std::io::stdout().flush()?;
    std::fs::write("/proc/sys/kernel/sysrq", "1").context("enable sysrq")?;
    std::fs::write("/proc/sysrq-trigger", "c").context("write c to /proc/sysrq-trigger")?;
    bail!("the kernel survived a sysrq crash")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lines_round_trip() {
        let steps = [
            Step::Module("/lib/modules/6.1.0/kernel/net/tls/tls.ko".into()),
            Step::Test {
                name: "xdp_counter".into(),
                timeout_secs: 300,
                program: "/omnirelay/bin/xdp_counter".into(),
                args: vec!["--nocapture".into(), "a b".into()],
            },
            Step::Test {
                name: "ktls_check".into(),
                timeout_secs: 60,
                program: "/omnirelay/bin/ktls-check".into(),
                args: vec![],
            },
        ];
        for step in &steps {
            assert_eq!(&Step::parse(&step.to_line()).unwrap(), step);
        }
        assert!(Step::parse("test\tx\tsoon\t/bin/x").is_err());
        assert!(Step::parse("reboot").is_err());
    }

    #[test]
    fn a_test_binary_is_relayed_and_its_exit_and_timeout_reported() {
        // The verdict strings are what the host parses; check them against real processes.
        assert_eq!(
            run_test(
                "/bin/sh",
                &["-c".into(), "exit 3".into()],
                Duration::from_secs(10)
            ),
            "exit=3"
        );
        assert_eq!(
            run_test(
                "/bin/sh",
                &["-c".into(), "kill -9 $$".into()],
                Duration::from_secs(10)
            ),
            "signal=9"
        );
        let started = Instant::now();
        assert_eq!(
            run_test(
                "/bin/sh",
                &["-c".into(), "sleep 30".into()],
                Duration::from_millis(300)
            ),
            "timeout=0"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            run_test("/nonexistent/binary", &[], Duration::from_secs(1))
                .starts_with("spawn-error=")
        );
    }
}
