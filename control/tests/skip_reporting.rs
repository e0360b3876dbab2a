//! A test that needs what the host lacks must say so, never pass silently. This re-runs the
//! XDP test binary without privileges and checks that it prints a skip line naming the
//! missing capability, and exits cleanly (no panic).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command};

use omnirelay_test_support::{Capability, require_caps, skip::SKIP_LOG_ENV};

/// Finds the compiled `xdp_counter` integration test next to this test binary.
fn xdp_test_binary() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    std::fs::read_dir(deps)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with("xdp_counter-") && !n.contains('.'))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// Copies the binary where an unprivileged user can execute it.
fn world_executable_copy(bin: &PathBuf) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let copy = dir.0.join("xdp_counter_test");
    std::fs::copy(bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

mod tempdir {
    use std::os::unix::fs::PermissionsExt as _;
    /// A world-readable temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("omnirelay-skip-{}-{seq}", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run_xdp_test_with(setpriv_args: &[&str]) -> (bool, String) {
    let bin = xdp_test_binary().expect("xdp_counter test binary is built alongside this one");
    let (_dir, copy) = world_executable_copy(&bin);
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .arg("--")
        .arg(&copy)
        .args([
            "--exact",
            "xdp_counter_counts_exactly_the_packets_sent_over_a_veth",
        ])
        .args(["--test-threads", "1"])
        .env_remove(SKIP_LOG_ENV)
        .output()
        .expect("run setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unprivileged_user_gets_a_skip_line_naming_root() {
    require_caps!(Capability::Root);
    let (ok, text) = run_xdp_test_with(&["--reuid=65534", "--regid=65534", "--clear-groups"]);
    assert!(ok, "the test must skip, not fail:\n{text}");
    assert!(
        text.contains("SKIP xdp_counter_counts_exactly"),
        "no skip line:\n{text}"
    );
    assert!(
        text.contains("needs root"),
        "skip line does not name root:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn root_without_namespace_privileges_gets_a_skip_line_naming_namespaces() {
    require_caps!(Capability::Root);
    // Root with an empty bounding set: no CAP_SYS_ADMIN, so no new network namespaces.
    let (ok, text) = run_xdp_test_with(&[
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--ambient-caps=-all",
    ]);
    assert!(ok, "the test must skip, not fail:\n{text}");
    assert!(
        text.contains("needs network namespaces"),
        "skip line does not name netns:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}
