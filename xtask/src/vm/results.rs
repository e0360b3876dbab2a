//! Reading a guest's serial console: the init's result lines, libtest's per-test lines and
//! the tests' `SKIP` lines become matrix rows; kernel panics, RCU stalls and lockups are
//! recognised so the run can end early with the log tail.
//!
//! The guest init (see `guest.rs`) prints lines starting with [`MARK`]:
//!
//! ```text
//! OMNIRELAY-VM boot release=6.1.0-56-cloud-amd64 cpus=2
//! OMNIRELAY-VM module-error kernel/net/tls/tls.ko: File exists
//! OMNIRELAY-VM start xdp_counter
//! OMNIRELAY-VM result xdp_counter exit=0 secs=12.4
//! OMNIRELAY-VM done
//! ```
//!
//! Between `start` and `result` come the test binary's own lines: `test NAME ... ok`,
//! `test NAME ... FAILED`, `test NAME ... ignored`, `test NAME ... skipped` and
//! `SKIP NAME: reason`.

use std::collections::BTreeMap;

/// Prefix of every line the guest init prints for the host.
pub const MARK: &str = "OMNIRELAY-VM";

/// The outcome of one test on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Ran and passed.
    Pass,
    /// Failed, with what is known about why.
    Fail(String),
    /// Could not run on this kernel, and why.
    Skip(String),
}

/// A matrix row's cell for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The test binary (`xdp_counter`, `ktls_check`, ...).
    pub test: String,
    /// The test case inside it, when the binary reports cases.
    pub case: Option<String>,
    /// What happened.
    pub status: Status,
}

impl Row {
    /// `binary::case`, or the binary alone.
    pub fn label(&self) -> String {
        match &self.case {
            Some(case) => format!("{}::{case}", self.test),
            None => self.test.clone(),
        }
    }
}

/// A kernel condition that ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// `Kernel panic - not syncing`.
    Panic,
    /// An RCU CPU stall warning.
    RcuStall,
    /// A soft or hard lockup detected by the watchdog.
    Lockup,
}

impl Fatal {
    /// How the matrix names it.
    pub fn describe(self) -> &'static str {
        match self {
            Fatal::Panic => "kernel panic",
            Fatal::RcuStall => "RCU stall",
            Fatal::Lockup => "lockup",
        }
    }
}

/// Recognises a console line that means the kernel is dead or wedged.
pub fn fatal_in(line: &str) -> Option<Fatal> {
    if line.contains("Kernel panic - not syncing") {
        Some(Fatal::Panic)
    } else if line.contains("rcu: INFO:") && line.contains("detected stall")
        || line.contains("self-detected stall on CPU")
    {
        Some(Fatal::RcuStall)
    } else if line.contains("BUG: soft lockup") || line.contains("Watchdog detected hard LOCKUP") {
        Some(Fatal::Lockup)
    } else {
        None
    }
}

/// Recognises a kernel warning worth showing with the results (it does not end the run:
/// the test that triggered it fails or passes on its own).
pub fn kernel_warning(line: &str) -> bool {
    [
        "WARNING: CPU:",
        "BUG: ",
        "Oops: ",
        "general protection fault",
    ]
    .iter()
    .any(|p| line.contains(p))
}

/// The text after [`MARK`] on a guest line, if it is one.
fn guest_line(line: &str) -> Option<&str> {
    let at = line.find(MARK)?;
    Some(line[at + MARK.len()..].trim())
}

/// Parses libtest's `test NAME ... STATUS`.
pub fn libtest_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_end().strip_prefix("test ")?;
    let (name, status) = rest.split_once(" ... ")?;
    let status = status.split(',').next().unwrap_or(status).trim();
    STATUSES.contains(&status).then_some((name.trim(), status))
}

/// Parses `SKIP NAME: reason`.
pub fn skip_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_end().strip_prefix("SKIP ")?;
    let (name, reason) = rest.split_once(": ")?;
    Some((name.trim(), reason.trim()))
}

/// Everything read from one guest run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// `uname -r` the init reported; `None` if the init never started.
    pub booted: Option<String>,
    /// Whether the init reached its last line.
    pub done: bool,
    /// Rows of every test that finished or started.
    pub rows: Vec<Row>,
    /// Tests that started (finished or not).
    pub started: Vec<String>,
    /// Module loads that failed.
    pub module_errors: Vec<String>,
    /// Errors the init itself reported.
    pub init_errors: Vec<String>,
    /// Kernel warnings seen on the console.
    pub warnings: Vec<String>,
}

/// A test whose `start` line was seen.
#[derive(Debug, Default)]
struct Section {
    test: String,
    cases: Vec<(String, String)>,
    skips: BTreeMap<String, String>,
    /// A `test NAME ... ` whose status has not arrived yet: with one test thread, libtest
    /// prints the status only when the test ends, so anything the test writes meanwhile
    /// (a SKIP line, say) lands between the two halves.
    pending: Option<String>,
    /// Why a case failed: libtest's panic message, or a `NAME: message` line.
    failures: BTreeMap<String, String>,
    /// A `thread 'NAME' panicked at LOCATION:` line whose message is the next line.
    panicked: Option<(String, String)>,
}

impl Section {
    /// Takes one line of the test binary's output.
    fn feed(&mut self, line: &str) {
        self.note_failure(line);
        if let Some((name, status)) = libtest_line(line) {
            self.cases.push((name.to_owned(), status.to_owned()));
            self.pending = None;
            return;
        }
        let mut rest = line.trim_end();
        if let Some((name, after)) = rest
            .strip_prefix("test ")
            .and_then(|r| r.split_once(" ..."))
        {
            self.pending = Some(name.trim().to_owned());
            rest = after.trim_start();
        } else if let Some(name) = self.pending.as_ref()
            && let Some(status) = STATUSES.iter().find(|s| rest.trim() == **s)
        {
            self.cases.push((name.clone(), (*status).to_owned()));
            self.pending = None;
            return;
        }
        if let Some((name, reason)) = skip_line(rest) {
            self.skips.insert(name.to_owned(), reason.to_owned());
        }
    }
}

impl Section {
    /// Remembers what may explain a failure: libtest prints `thread 'NAME' (TID) panicked
    /// at FILE:LINE:` and the message on the next line; ktls-check prints `NAME: error`.
    fn note_failure(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some((name, location)) = self.panicked.take() {
            if line.is_empty() {
                self.panicked = Some((name, location));
            } else {
                let message = format!("{} (at {location})", line.trim());
                self.failures.insert(name, message);
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("thread '")
            && let Some((name, after)) = rest.split_once('\'')
            && let Some((_, location)) = after.split_once("panicked at ")
        {
            let location = location.trim_end_matches(':').to_owned();
            self.panicked = Some((name.to_owned(), location));
        } else if let Some((name, message)) = line.split_once(": ")
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
            && !name.starts_with('[')
        {
            self.failures
                .entry(name.to_owned())
                .or_insert_with(|| message.trim().to_owned());
        }
    }
}

/// The statuses of a libtest result line (`skipped` is ktls-check's own).
const STATUSES: [&str; 4] = ["ok", "FAILED", "ignored", "skipped"];

impl Section {
    /// Rows for this test, given the init's verdict on the binary (`None`: it never
    /// finished because the VM stopped).
    fn rows(self, exit: Option<&str>) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut any_failed = false;
        for (case, status) in &self.cases {
            let status = match (status.as_str(), self.skips.get(case)) {
                ("FAILED", _) => {
                    any_failed = true;
                    Status::Fail(match self.failures.get(case) {
                        Some(why) => why.clone(),
                        None => "test failed (its output is in the console log)".into(),
                    })
                }
                (_, Some(reason)) => Status::Skip(reason.clone()),
                ("ok", None) => Status::Pass,
                ("ignored", None) => Status::Skip("ignored".into()),
                (other, None) => Status::Skip(other.to_owned()),
            };
            rows.push(Row {
                test: self.test.clone(),
                case: Some(case.clone()),
                status,
            });
        }
        // A SKIP line without a matching result line still says the case did not run.
        for (case, reason) in &self.skips {
            if !self.cases.iter().any(|(c, _)| c == case) {
                rows.push(Row {
                    test: self.test.clone(),
                    case: Some(case.clone()),
                    status: Status::Skip(reason.clone()),
                });
            }
        }
        let binary_failure = match exit {
            None => Some(NO_RESULT.to_owned()),
            Some("exit=0") => None,
            Some(other) => Some(describe_exit(other)),
        };
        match binary_failure {
            Some(why) if !any_failed => rows.push(Row {
                test: self.test.clone(),
                case: None,
                status: Status::Fail(why),
            }),
            None if rows.is_empty() => rows.push(Row {
                test: self.test.clone(),
                case: None,
                status: Status::Pass,
            }),
            _ => {}
        }
        rows
    }
}

/// Reason of a test that was running when the VM stopped; [`finalize`] adds why.
const NO_RESULT: &str = "no result: the VM stopped while this test ran";

/// Turns the init's `exit=1` / `signal=9` / `timeout=300` into words.
fn describe_exit(field: &str) -> String {
    match field.split_once('=') {
        Some(("exit", code)) => format!("exit status {code}"),
        Some(("signal", sig)) => format!("killed by signal {sig}"),
        Some(("timeout", secs)) => format!("timed out after {secs} s (killed)"),
        Some(("spawn-error", what)) => format!("could not start: {what}"),
        _ => field.to_owned(),
    }
}

/// Parses a whole console log.
pub fn parse(lines: &[String]) -> GuestReport {
    let mut report = GuestReport::default();
    let mut current: Option<Section> = None;
    for line in lines {
        if let Some(rest) = guest_line(line) {
            let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "boot" => {
                    report.booted = rest
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("release="))
                        .map(str::to_owned)
                        .or(Some(String::new()));
                }
                "start" => {
                    if let Some(open) = current.take() {
                        report.rows.extend(open.rows(None));
                    }
                    let test = rest.trim().to_owned();
                    report.started.push(test.clone());
                    current = Some(Section {
                        test,
                        ..Section::default()
                    });
                }
                "result" => {
                    let mut fields = rest.split_whitespace();
                    let test = fields.next().unwrap_or_default();
                    let exit = fields.next().unwrap_or("exit=?");
                    if let Some(section) = current.take_if(|s| s.test == test) {
                        report.rows.extend(section.rows(Some(exit)));
                    }
                }
                "module-error" => report.module_errors.push(rest.trim().to_owned()),
                "error" => report.init_errors.push(rest.trim().to_owned()),
                "done" => report.done = true,
                _ => {}
            }
            continue;
        }
        if kernel_warning(line) {
            report.warnings.push(line.trim().to_owned());
        }
        if let Some(section) = current.as_mut() {
            section.feed(line);
        }
    }
    if let Some(open) = current.take() {
        report.rows.extend(open.rows(None));
    }
    report
}

/// Completes a kernel's rows: tests of the plan that never started fail with `why_not`
/// (the reason the VM stopped), and init-level problems become rows of their own.
pub fn finalize(mut report: GuestReport, planned: &[String], why_not: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    if !report.module_errors.is_empty() {
        rows.push(Row {
            test: "(boot)".into(),
            case: Some("modules".into()),
            status: Status::Fail(format!(
                "module load failed: {}",
                report.module_errors.join("; ")
            )),
        });
    }
    if !report.init_errors.is_empty() {
        rows.push(Row {
            test: "(boot)".into(),
            case: Some("init".into()),
            status: Status::Fail(report.init_errors.join("; ")),
        });
    }
    for mut row in report.rows.drain(..) {
        if row.status == Status::Fail(NO_RESULT.to_owned()) {
            row.status = Status::Fail(format!("{NO_RESULT}: {why_not}"));
        }
        rows.push(row);
    }
    for test in planned {
        if !report.started.contains(test) {
            rows.push(Row {
                test: test.clone(),
                case: None,
                status: Status::Fail(format!("not run: {why_not}")),
            });
        }
    }
    rows
}

/// One kernel's column of the matrix.
#[derive(Debug)]
pub struct Column {
    /// Kernel name (`6.1`).
    pub kernel: String,
    /// Its rows.
    pub rows: Vec<Row>,
}

/// Renders the matrix: one line per test case, one column per kernel, then the reasons
/// of every skip and failure.
pub fn render(columns: &[Column]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for column in columns {
        for row in &column.rows {
            let label = row.label();
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
    }
    let width = labels.iter().map(String::len).max().unwrap_or(4).max(4);
    let cell_width = columns
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    out.push_str(&format!("    {:width$}", "test"));
    for column in columns {
        out.push_str(&format!("  {:cell_width$}", column.kernel));
    }
    out.push('\n');
    let mut notes: Vec<String> = Vec::new();
    for label in &labels {
        out.push_str(&format!("    {label:width$}"));
        for column in columns {
            let cell = match column.rows.iter().find(|r| &r.label() == label) {
                None => "-",
                Some(row) => match &row.status {
                    Status::Pass => "pass",
                    Status::Fail(why) => {
                        notes.push(format!("FAIL [{}] {label}: {why}", column.kernel));
                        "FAIL"
                    }
                    Status::Skip(why) => {
                        notes.push(format!("skip [{}] {label}: {why}", column.kernel));
                        "skip"
                    }
                },
            };
            out.push_str(&format!("  {cell:cell_width$}"));
        }
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push('\n');
        // Failures first: they are what the reader needs.
        notes.sort_by_key(|n| !n.starts_with("FAIL"));
        for note in notes {
            out.push_str(&format!("    {note}\n"));
        }
    }
    out
}

/// Counts of a set of columns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Cells that passed.
    pub passed: usize,
    /// Cells that failed.
    pub failed: usize,
    /// Cells that were skipped.
    pub skipped: usize,
}

/// Counts every cell.
pub fn count(columns: &[Column]) -> Counts {
    let mut c = Counts::default();
    for row in columns.iter().flat_map(|col| &col.rows) {
        match row.status {
            Status::Pass => c.passed += 1,
            Status::Fail(_) => c.failed += 1,
            Status::Skip(_) => c.skipped += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const RUN: &str = "\
[    0.000000] Linux version 6.1.0-56-cloud-amd64
OMNIRELAY-VM boot release=6.1.0-56-cloud-amd64 cpus=2
OMNIRELAY-VM start xdp_counter

running 3 tests
SKIP native_mode_on_veth: needs XDP on veth: no
test native_mode_on_veth ... ok
test attach_to_a_missing_interface ... ok
test xdp_counter_counts ... FAILED
[   12.1] WARNING: CPU: 1 PID: 80 at net/core/filter.c:1234 bpf_warn+0x1/0x2

failures:

---- xdp_counter_counts stdout ----

thread 'xdp_counter_counts' (134) panicked at control/tests/xdp_counter.rs:108:5:
no eBPF log event; got []
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
test result: FAILED. 2 passed; 1 failed; 0 ignored
OMNIRELAY-VM result xdp_counter exit=101 secs=4.2
OMNIRELAY-VM start ktls_check
SKIP ktls_tls13_aes_128_gcm: kTLS unavailable: ENOENT
test ktls_tls13_aes_128_gcm ... skipped
test ktls_tls12_aes_128_gcm ... ok
OMNIRELAY-VM result ktls_check exit=0 secs=1.0
OMNIRELAY-VM start planted_failure
planted failure: exiting with status 1
OMNIRELAY-VM result planted_failure exit=1 secs=0.0
OMNIRELAY-VM done
";

    #[test]
    fn a_full_run_becomes_rows_with_skips_failures_and_binary_exits() {
        let report = parse(&lines(RUN));
        assert_eq!(report.booted.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert!(report.done);
        assert_eq!(report.warnings.len(), 1);
        let got: Vec<(String, Status)> = report
            .rows
            .iter()
            .map(|r| (r.label(), r.status.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "xdp_counter::native_mode_on_veth".into(),
                    Status::Skip("needs XDP on veth: no".into())
                ),
                (
                    "xdp_counter::attach_to_a_missing_interface".into(),
                    Status::Pass
                ),
                (
                    "xdp_counter::xdp_counter_counts".into(),
                    Status::Fail(
                        "no eBPF log event; got [] (at control/tests/xdp_counter.rs:108:5)".into()
                    )
                ),
                (
                    "ktls_check::ktls_tls13_aes_128_gcm".into(),
                    Status::Skip("kTLS unavailable: ENOENT".into())
                ),
                ("ktls_check::ktls_tls12_aes_128_gcm".into(), Status::Pass),
                (
                    "planted_failure".into(),
                    Status::Fail("exit status 1".into())
                ),
            ]
        );
    }

    #[test]
    fn a_panic_mid_test_fails_that_test_and_every_test_not_started() {
        let log = "\
OMNIRELAY-VM boot release=6.12.117+deb12-cloud-amd64 cpus=2
OMNIRELAY-VM start xdp_counter
test attach_to_a_missing_interface ... ok
[    5.5] Kernel panic - not syncing: sysrq triggered crash
";
        let lines = lines(log);
        assert_eq!(
            lines.iter().filter_map(|l| fatal_in(l)).next(),
            Some(Fatal::Panic)
        );
        let report = parse(&lines);
        assert!(!report.done);
        let planned = vec!["xdp_counter".to_owned(), "ktls_check".to_owned()];
        let rows = finalize(report, &planned, "kernel panic");
        let got: Vec<(String, Status)> =
            rows.iter().map(|r| (r.label(), r.status.clone())).collect();
        assert_eq!(
            got,
            [
                (
                    "xdp_counter::attach_to_a_missing_interface".into(),
                    Status::Pass
                ),
                (
                    "xdp_counter".into(),
                    Status::Fail(
                        "no result: the VM stopped while this test ran: kernel panic".into()
                    )
                ),
                (
                    "ktls_check".into(),
                    Status::Fail("not run: kernel panic".into())
                ),
            ]
        );
    }

    #[test]
    fn exits_by_signal_timeout_and_module_errors_are_failures() {
        let log = "\
OMNIRELAY-VM boot release=6.1.0 cpus=2
OMNIRELAY-VM module-error kernel/net/tls/tls.ko: Invalid argument
OMNIRELAY-VM start a
OMNIRELAY-VM result a signal=11 secs=0.1
OMNIRELAY-VM start b
OMNIRELAY-VM result b timeout=300 secs=300.0
OMNIRELAY-VM start c
OMNIRELAY-VM result c exit=0 secs=0.1
OMNIRELAY-VM done
";
        let rows = finalize(
            parse(&lines(log)),
            &["a".into(), "b".into(), "c".into()],
            "-",
        );
        let got: Vec<(String, Status)> =
            rows.iter().map(|r| (r.label(), r.status.clone())).collect();
        assert_eq!(
            got,
            [
                (
                    "(boot)::modules".into(),
                    Status::Fail(
                        "module load failed: kernel/net/tls/tls.ko: Invalid argument".into()
                    )
                ),
                ("a".into(), Status::Fail("killed by signal 11".into())),
                (
                    "b".into(),
                    Status::Fail("timed out after 300 s (killed)".into())
                ),
                ("c".into(), Status::Pass),
            ]
        );
    }

    #[test]
    fn fatal_conditions_are_recognised_and_ordinary_lines_are_not() {
        let cases = [
            (
                "[ 3.1] Kernel panic - not syncing: Attempted to kill init!",
                Some(Fatal::Panic),
            ),
            (
                "[ 30.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                Some(Fatal::RcuStall),
            ),
            (
                "[ 30.0] rcu: INFO: rcu_sched self-detected stall on CPU",
                Some(Fatal::RcuStall),
            ),
            (
                "[ 40.2] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [x:1]",
                Some(Fatal::Lockup),
            ),
            ("test rcu_stall_parser ... ok", None),
            ("[ 1.0] rcu: Hierarchical RCU implementation.", None),
        ];
        for (line, want) in cases {
            assert_eq!(fatal_in(line), want, "{line}");
        }
        assert!(kernel_warning(
            "[ 9.9] BUG: kernel NULL pointer dereference, address: 0"
        ));
        assert!(!kernel_warning("test result: ok. 1 passed"));
    }

    #[test]
    fn single_threaded_libtest_output_with_a_skip_line_in_the_middle_parses() {
        // With --test-threads=1 libtest prints "test NAME ... " before the test runs and
        // the status after it, so the test's own SKIP line lands in between.
        let log = "\
OMNIRELAY-VM start ktls_check
test tests::a ... SKIP tests::a: needs kTLS (TCP_ULP tls): ENOENT
ok
test tests::b ... ok
tests::c: server: kTLS read: Bad message (os error 74)
test tests::c ... 
FAILED
OMNIRELAY-VM result ktls_check exit=101 secs=1.0
";
        let got: Vec<(String, Status)> = parse(&lines(log))
            .rows
            .iter()
            .map(|r| (r.label(), r.status.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "ktls_check::tests::a".into(),
                    Status::Skip("needs kTLS (TCP_ULP tls): ENOENT".into())
                ),
                ("ktls_check::tests::b".into(), Status::Pass),
                (
                    "ktls_check::tests::c".into(),
                    Status::Fail("server: kTLS read: Bad message (os error 74)".into())
                ),
            ]
        );
    }

    #[test]
    fn libtest_and_skip_lines_parse_and_summaries_do_not() {
        assert_eq!(libtest_line("test a::b ... ok"), Some(("a::b", "ok")));
        assert_eq!(
            libtest_line("test x ... ignored, needs root"),
            Some(("x", "ignored"))
        );
        assert_eq!(libtest_line("test result: ok. 3 passed; 0 failed"), None);
        assert_eq!(libtest_line("test x ... bench:  12 ns/iter"), None);
        assert_eq!(
            skip_line("SKIP t: needs kTLS (TCP_ULP tls): ENOENT: x"),
            Some(("t", "needs kTLS (TCP_ULP tls): ENOENT: x"))
        );
        assert_eq!(skip_line("SKIPPED"), None);
    }

    #[test]
    fn matrix_shows_each_case_per_kernel_and_lists_reasons_failures_first() {
        let row = |test: &str, case: Option<&str>, status: Status| Row {
            test: test.into(),
            case: case.map(Into::into),
            status,
        };
        let columns = [
            Column {
                kernel: "6.1".into(),
                rows: vec![
                    row("xdp_counter", Some("counts"), Status::Pass),
                    row("ktls_check", Some("tls13"), Status::Skip("no tls".into())),
                ],
            },
            Column {
                kernel: "6.12".into(),
                rows: vec![
                    row("xdp_counter", Some("counts"), Status::Pass),
                    row("ktls_check", Some("tls13"), Status::Pass),
                    row(
                        "planted_failure",
                        None,
                        Status::Fail("exit status 1".into()),
                    ),
                ],
            },
        ];
        let text = render(&columns);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("test") && lines[0].contains("6.1") && lines[0].contains("6.12"));
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(cells(lines[1]), ["xdp_counter::counts", "pass", "pass"]);
        assert_eq!(cells(lines[2]), ["ktls_check::tls13", "skip", "pass"]);
        assert_eq!(cells(lines[3]), ["planted_failure", "-", "FAIL"]);
        let fail_at = text
            .find("FAIL [6.12] planted_failure: exit status 1")
            .unwrap();
        let skip_at = text.find("skip [6.1] ktls_check::tls13: no tls").unwrap();
        assert!(fail_at < skip_at, "{text}");
        assert_eq!(
            count(&columns),
            Counts {
                passed: 3,
                failed: 1,
                skipped: 1
            }
        );
    }
}
