//! The architecture rule for provider crates: the data plane library depends on contracts
//! (`omnirelay-abstractions`) only, and `src/main.rs` is the one place that names a
//! provider (`omnirelay_plugin_*`). Cargo gives the library the binary's dependencies, so
//! this test is what keeps the rule. Test fixtures (files named `tests.rs` or
//! `test_util.rs`) and comments (doc examples) may name providers; inline test modules of
//! library files may not, and use `lb::test_util` instead.

use std::path::{Path, PathBuf};

const PROVIDER_PREFIX: &str = "omnirelay_plugin_";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_fixture(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == "tests.rs" || n == "test_util.rs")
}

#[test]
fn only_main_rs_names_a_provider_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = src.join("main.rs");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != main && !is_fixture(f)) {
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") && line.contains(PROVIDER_PREFIX) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "library code names a provider crate (wire providers in src/main.rs):\n{}",
        offenders.join("\n")
    );
    let wiring = std::fs::read_to_string(&main).expect("read main.rs");
    assert!(
        wiring.contains("omnirelay_plugin_topology"),
        "main.rs no longer wires the topology providers; update this test"
    );
}
