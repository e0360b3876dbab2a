//! Processes under test: each started in its own process group (so master and workers are
//! found and stopped together, by that group id only), and what `/proc` says about them:
//! CPU time (utime + stime of every process of the group) and resident memory.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A process group this harness started; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Group {
    child: Option<Child>,
    pgid: i32,
    log: PathBuf,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group, output appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        let line = crate::run::describe(&cmd);
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("could not start `{line}`"))?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        Ok(Group {
            child: Some(child),
            pgid,
            log: log.to_path_buf(),
        })
    }

    /// Whether the group leader still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `n` lines of the output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The PIDs of every process in the group.
    pub fn pids(&self) -> Vec<i32> {
        group_pids(self.pgid)
    }

    /// CPU time of the whole group so far, in microseconds.
    pub fn cpu_us(&self) -> u64 {
        self.cpu().total_us()
    }

    /// CPU time of the whole group so far, user and system.
    pub fn cpu(&self) -> CpuTime {
        self.pids()
            .into_iter()
            .filter_map(cpu_of)
            .fold(CpuTime::default(), |a, b| CpuTime {
                user_us: a.user_us + b.user_us,
                sys_us: a.sys_us + b.sys_us,
            })
    }

    /// Resident memory of the whole group, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids().into_iter().filter_map(rss_kib_of).sum()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals only the group this harness created.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !group_pids(self.pgid).is_empty() {
            let _ = child.try_wait();
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever of the group ignored SIGTERM.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

/// The fields of `/proc/PID/stat` after the command name (`state` is index 0).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Every live (not zombie) process whose process group is `pgid`.
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|f| {
                f.first().is_some_and(|s| s != "Z")
                    && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// CPU time of a process, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// utime: in user space.
    pub user_us: u64,
    /// stime: in the kernel on the process's behalf.
    pub sys_us: u64,
}

impl CpuTime {
    pub fn total_us(self) -> u64 {
        self.user_us + self.sys_us
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
}

/// utime and stime of a process (all its threads, including exited ones).
pub fn cpu_of(pid: i32) -> Option<CpuTime> {
    let f = stat_fields(pid)?;
    // Fields 14 and 15 of proc(5); index 0 here is field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let us = |ticks: u64| ticks * 1_000_000 / clock_ticks_per_second();
    Some(CpuTime {
        user_us: us(utime),
        sys_us: us(stime),
    })
}

/// VmRSS of a process in KiB.
pub fn rss_kib_of(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Raises this process's open-file limit (inherited by the proxies, wrk and the idle
/// client) towards `want`: to the hard limit, and beyond it where allowed
/// (CAP_SYS_RESOURCE). Returns the limit now in force.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    for (cur, max) in [(want, want.max(lim.rlim_max)), (lim.rlim_max, lim.rlim_max)] {
        let new = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return Ok(cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// Busy and total jiffies of each CPU (`cpuN` lines of `/proc/stat`).
pub fn core_times() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            let get = |i: usize| f.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
            (busy, busy + get(3) + get(4))
        })
        .collect()
}

/// How busy `core` was between two [`core_times`] readings (0..=1).
pub fn core_busy(before: &[(u64, u64)], after: &[(u64, u64)], core: usize) -> Option<f64> {
    let (b0, t0) = before.get(core)?;
    let (b1, t1) = after.get(core)?;
    let total = t1.checked_sub(*t0).filter(|t| *t > 0)?;
    Some(b1.saturating_sub(*b0) as f64 / total as f64)
}

/// A `taskset -c CORE PROGRAM` command: the program runs pinned to `core`.
pub fn pinned(core: usize, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(program);
    cmd
}
