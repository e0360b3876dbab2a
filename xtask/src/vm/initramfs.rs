//! Builds a kernel's initramfs: the init (this xtask binary), the test binaries with every
//! shared library `ldd` lists (and the dynamic loader), iproute2's `ip`, the kernel's
//! modules the tests need, and the plan the init follows.

use std::{
    collections::BTreeMap,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, bail};

use super::{cpio, guest::PLAN_PATH, kernels::Kernel};

/// Files of the image: guest path → host file. Libraries land at the path `ldd` shows,
/// which is one of the loader's default directories, so no `ld.so.cache` is needed.
#[derive(Debug, Default, Clone)]
pub struct Payload {
    files: BTreeMap<String, PathBuf>,
}

impl Payload {
    /// Adds an executable at `guest_path` and every library it needs.
    pub fn add_executable(&mut self, guest_path: &str, host: &Path) -> anyhow::Result<()> {
        self.files.insert(guest_path.to_owned(), host.to_owned());
        for lib in ldd(host)? {
            let guest = lib.to_string_lossy().into_owned();
            self.files.insert(guest, lib);
        }
        Ok(())
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

/// The libraries (and the dynamic loader) a binary loads, from `ldd`. A statically
/// linked binary has none; a library ldd cannot find is an error.
pub fn ldd(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// Parses `ldd` output: `name => /path (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`,
/// and `linux-vdso.so.1 (0x...)` (in the kernel, not a file).
pub fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("library {} not found", name.trim());
                }
                target.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// What one kernel's image holds besides the shared payload.
#[derive(Debug)]
pub struct KernelPart<'a> {
    /// The kernel whose modules are included.
    pub kernel: &'a Kernel,
    /// Module paths relative to `lib/modules/<release>`, in load order.
    pub modules: &'a [String],
    /// The plan file's text.
    pub plan: String,
}

/// The guest path of a module.
pub fn module_guest_path(kernel: &Kernel, module: &str) -> String {
    format!("/lib/modules/{}/{module}", kernel.release)
}

/// Writes the initramfs to `out` unless an identical one (same inputs, sizes and
/// modification times) is already there. Returns whether it was (re)built.
pub fn build(payload: &Payload, part: &KernelPart<'_>, out: &Path) -> anyhow::Result<bool> {
    let mut files = payload.files.clone();
    for module in part.modules {
        files.insert(
            module_guest_path(part.kernel, module),
            part.kernel.modules_dir().join(module),
        );
    }
    let mut manifest = String::new();
    for (guest, host) in &files {
        let meta = std::fs::metadata(host).with_context(|| format!("{}", host.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        manifest.push_str(&format!(
            "{guest}\t{}\t{}\t{mtime}\n",
            host.display(),
            meta.len()
        ));
    }
    manifest.push_str(&part.plan);
    let manifest_path = out.with_extension("manifest");
    if out.is_file() && std::fs::read_to_string(&manifest_path).ok().as_deref() == Some(&manifest) {
        return Ok(false);
    }

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&manifest_path);
    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut w = cpio::Writer::new(BufWriter::new(file));
    for dir in ["dev", "proc", "sys", "run", "tmp", "root", "etc"] {
        w.dir(dir, 0o755)?;
    }
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.char_device("dev/null", 0o666, 1, 3)?;
    for (guest, host) in &files {
        let data = std::fs::read(host).with_context(|| format!("read {}", host.display()))?;
        let perm = if is_executable(host) { 0o755 } else { 0o644 };
        w.file(guest, perm, &data)
            .with_context(|| format!("add {guest} to {}", out.display()))?;
    }
    w.file(PLAN_PATH, 0o644, part.plan.as_bytes())?;
    w.finish()?;
    std::fs::write(&manifest_path, manifest)?;
    Ok(true)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_and_loader_paths() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffd5a1f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)
";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libfoo.so.1"), "{e}");
    }

    #[test]
    fn real_ldd_finds_libc_and_the_loader_of_this_binary() {
        let me = std::env::current_exe().unwrap();
        let libs = ldd(&me).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_file()), "{libs:?}");
    }

    #[test]
    fn image_holds_payload_modules_plan_and_console_and_is_reused_when_unchanged() {
        let tmp = std::env::temp_dir().join(format!("omnirelay-initramfs-{}", std::process::id()));
        let root = tmp.join("kernel");
        let release = "6.1.0-test";
        let mod_dir = root
            .join("lib/modules")
            .join(release)
            .join("kernel/net/tls");
        std::fs::create_dir_all(&mod_dir).unwrap();
        std::fs::write(mod_dir.join("tls.ko"), b"module bytes").unwrap();
        let kernel = Kernel {
            spec: super::super::kernels::KERNELS[0],
            package: "linux-image-test".into(),
            version: "1".into(),
            release: release.into(),
            root: root.clone(),
        };
        let mut payload = Payload::default();
        let me = std::env::current_exe().unwrap();
        payload.add_executable("/init", &me).unwrap();
        assert!(payload.len() >= 3, "init plus libc plus loader");
        let modules = vec!["kernel/net/tls/tls.ko".to_owned()];
        let part = KernelPart {
            kernel: &kernel,
            modules: &modules,
            plan: "module\t/lib/modules/6.1.0-test/kernel/net/tls/tls.ko\n".into(),
        };
        let out = tmp.join("initramfs.cpio");
        assert!(build(&payload, &part, &out).unwrap(), "first build writes");
        assert!(
            !build(&payload, &part, &out).unwrap(),
            "unchanged inputs reuse it"
        );

        let bytes = std::fs::read(&out).unwrap();
        let entries = cpio::read(&bytes).unwrap();
        let find = |n: &str| entries.iter().find(|e| e.name == n);
        let init = find("init").unwrap();
        assert_eq!(
            init.data.len() as u64,
            std::fs::metadata(&me).unwrap().len()
        );
        assert_eq!(init.mode & 0o777, 0o755);
        assert_eq!(
            find("lib/modules/6.1.0-test/kernel/net/tls/tls.ko")
                .unwrap()
                .data,
            b"module bytes"
        );
        assert_eq!(find("omnirelay/plan").unwrap().data, part.plan.as_bytes());
        assert_eq!(find("dev/console").unwrap().rdev, (5, 1));
        assert!(entries.iter().any(|e| e.name.contains("ld-linux")));

        let changed = KernelPart {
            plan: "other plan\n".into(),
            ..part
        };
        assert!(
            build(&payload, &changed, &out).unwrap(),
            "a new plan rebuilds"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
