//! The kernels the VM harness boots, fetched as Debian packages and unpacked without
//! installing, and the modules the tests need, resolved through `modules.dep`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::run;

/// A kernel in the matrix: a short name and the Debian package, as a glob over package
/// names whose newest match is used (so security updates of the distro kernel are
/// followed without editing this list, and an old build that left the archive never
/// breaks the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// Column name in the matrix and value of `--kernel`.
    pub name: &'static str,
    /// Package name glob (`*` matches any run of characters).
    pub package: &'static str,
}

/// THE list of kernels. The `cloud` flavour has the same BPF, XDP and TLS configuration
/// as the generic one and a quarter of its modules; the `unsigned` image is the plain
/// vmlinuz (the signed one only adds a Secure Boot signature). The first entry is the
/// kernel of `--quick` and of the smoke run in `cargo xtask test`.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "6.1",
        package: "linux-image-6.1.0-*-cloud-amd64-unsigned",
    },
    KernelSpec {
        name: "6.12",
        package: "linux-image-6.12.*+deb12-cloud-amd64-unsigned",
    },
];

/// Modules loaded in the guest before any test, with their dependencies. A module that a
/// kernel has built in is skipped for that kernel. The guest has no `modprobe`, so the
/// kernel's own on-demand loading (`request_module`) cannot help: everything a test needs
/// is loaded up front.
pub const MODULES: &[&str] = &[
    // XDP tests: veth pairs between network namespaces.
    "veth",
    // kTLS: the ULP itself, and the AEADs it allocates (gcm(aes) needs the gcm and ctr
    // templates and ghash; rfc7539(chacha20,poly1305) needs the template and both halves).
    "tls",
    "gcm",
    "ctr",
    "ghash-generic",
    "chacha20poly1305",
    "chacha_generic",
    "poly1305_generic",
];

/// Where downloaded and unpacked kernels are kept: `$OMNIRELAY_VM_DIR`, else
/// `$XDG_CACHE_HOME/omnirelay/vm`, else `$HOME/.cache/omnirelay/vm`. Outside the work
/// tree, like the eBPF tools, so a fresh clone reuses them.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OMNIRELAY_VM_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("omnirelay").join("vm")
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The entry of [`KERNELS`] it was resolved from.
    pub spec: KernelSpec,
    /// Debian package name.
    pub package: String,
    /// Debian package version.
    pub version: String,
    /// `uname -r` of the kernel (its folder under `lib/modules`).
    pub release: String,
    /// Root of the unpacked package.
    pub root: PathBuf,
}

impl Kernel {
    /// The bootable image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The kernel's build configuration.
    pub fn config_path(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.release))
    }

    /// `lib/modules/<release>` inside the unpacked package.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib").join("modules").join(&self.release)
    }

    /// `CONFIG_*` options that are set (`=y`, `=m` or a value).
    pub fn config(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.config_path())
            .with_context(|| format!("read {}", self.config_path().display()))?;
        Ok(parse_config(&text))
    }

    /// Short description for the matrix header.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.package, self.version, self.release)
    }
}

/// Parses a kernel `.config`.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Whether `name` matches `glob`, where `*` matches any (possibly empty) run of
/// characters and everything else matches itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    if !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// An extended regular expression matching exactly the names `glob` matches, for
/// `apt-cache search --names-only`.
fn glob_to_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    re.push('$');
    re
}

/// Orders strings by their runs of digits as numbers (`6.1.0-9` < `6.1.0-56`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest package matching `spec` that apt knows, or `None`.
fn newest_available(spec: &KernelSpec) -> Option<String> {
    let listing = run::output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &glob_to_regex(spec.package),
    ]))?;
    listing
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .map(str::trim)
        .filter(|name| glob_match(spec.package, name))
        .max_by(|a, b| natural_cmp(a, b))
        .map(str::to_owned)
}

fn kernels_dir() -> PathBuf {
    cache_dir().join("kernels")
}

/// The newest already unpacked package matching `spec`, for hosts whose apt lists are
/// missing or stale.
fn newest_cached(spec: &KernelSpec) -> Option<String> {
    std::fs::read_dir(kernels_dir())
        .ok()?
        .flatten()
        .filter(|e| e.path().join(READY).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| glob_match(spec.package, name))
        .max_by(|a, b| natural_cmp(a, b))
}

/// Marker file written last when a package is fully unpacked; holds its version.
const READY: &str = "omnirelay-ready";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Resolves `spec` to a package, downloading and unpacking it unless it is cached.
pub fn ensure(spec: &KernelSpec) -> anyhow::Result<Kernel> {
    let mut package = newest_available(spec);
    if package.is_none() && is_root() {
        println!(
            "    apt knows no package matching {}; apt-get update",
            spec.package
        );
        run::run(Command::new("apt-get").args(["update", "-q"]))?;
        package = newest_available(spec);
    }
    let package = match (package, newest_cached(spec)) {
        (Some(p), _) => p,
        (None, Some(cached)) => {
            println!(
                "    apt knows no package matching {}; using cached {cached}",
                spec.package
            );
            cached
        }
        (None, None) => bail!(
            "no Debian package matches {} (kernel {}); run `apt-get update` and check \
             `apt-cache search linux-image`",
            spec.package,
            spec.name
        ),
    };
    let dir = kernels_dir().join(&package);
    if !dir.join(READY).is_file() {
        fetch(&package, &dir)?;
    }
    load(spec, &package, &dir)
}

fn load(spec: &KernelSpec, package: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let version = std::fs::read_to_string(dir.join(READY))?.trim().to_owned();
    let root = dir.join("root");
    let release = single_release(&root)?;
    let kernel = Kernel {
        spec: *spec,
        package: package.to_owned(),
        version,
        release,
        root,
    };
    for needed in [kernel.vmlinuz(), kernel.config_path()] {
        if !needed.is_file() {
            bail!("{} has no {}", package, needed.display());
        }
    }
    Ok(kernel)
}

/// The one folder under `lib/modules`.
fn single_release(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("lib/modules");
    let releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {releases:?}",
            dir.display()
        ),
    }
}

/// Downloads `package` with `apt-get download`, unpacks it with `dpkg-deb -x` (no
/// install, no maintainer scripts) and generates `modules.dep` with `depmod -b`, which
/// the package leaves to its postinst. Works in a temporary folder renamed into place at
/// the end, so an interrupted fetch never leaves a half-unpacked kernel behind.
fn fetch(package: &str, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let parent = dir.parent().context("kernel folder has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;

    println!("    downloading {package} (apt-get download)");
    let mut download = Command::new("apt-get");
    download.arg("download").arg("-q").current_dir(&tmp);
    if is_root() {
        // apt drops to the `_apt` user for downloads, which cannot write to this folder.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download.arg(package);
    run::run(&mut download)?;
    let deb = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", tmp.display()))?;
    let version = deb_version(&deb).with_context(|| format!("version of {}", deb.display()))?;
    let size = std::fs::metadata(&deb)?.len();
    println!(
        "    unpacking {} ({:.1} MiB, dpkg-deb -x)",
        deb.file_name().unwrap_or_default().to_string_lossy(),
        size as f64 / (1024.0 * 1024.0)
    );
    let root = tmp.join("root");
    run::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::remove_file(&deb)?;
    let release = single_release(&root)?;
    println!("    generating modules.dep for {release} (depmod -b)");
    run::run(Command::new(depmod()).arg("-b").arg(&root).arg(&release))?;
    std::fs::write(tmp.join(READY), format!("{version}\n"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("rename {} to {}", tmp.display(), dir.display()))?;
    println!(
        "    {package} {version} ready in {:.1?} at {}",
        started.elapsed(),
        dir.display()
    );
    Ok(())
}

/// `depmod`, which lives in `/usr/sbin` (not always in a user's PATH).
fn depmod() -> PathBuf {
    crate::packages::find_program("depmod").unwrap_or_else(|| PathBuf::from("depmod"))
}

/// The version part of `name_version_arch.deb` (with `%3a` decoded to `:`).
fn deb_version(deb: &Path) -> Option<String> {
    let stem = deb.file_stem()?.to_str()?;
    let mut parts = stem.split('_');
    let (_name, version) = (parts.next()?, parts.next()?);
    Some(version.replace("%3a", ":"))
}

/// The module name of a path in `modules.dep` (`kernel/crypto/ghash-generic.ko.xz` gives
/// `ghash_generic`: the kernel treats `-` and `_` in module names alike).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `modules.dep` and `modules.builtin` of one kernel.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// Module name → (its path, the paths of its dependencies in `modules.dep` order).
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// Names of modules built into the image.
    builtin: BTreeSet<String>,
}

impl ModuleDb {
    /// Reads the database of an unpacked kernel.
    pub fn load(kernel: &Kernel) -> anyhow::Result<Self> {
        let dir = kernel.modules_dir();
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("read {}", dir.join(name).display()))
        };
        Ok(Self::parse(
            &read("modules.dep")?,
            &read("modules.builtin")?,
        ))
    }

    /// Parses `modules.dep` (`path: dep dep ...` lines) and `modules.builtin` (paths).
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Self {
        let deps = modules_dep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| {
                let path = path.trim().to_owned();
                let deps = deps.split_whitespace().map(str::to_owned).collect();
                (module_name(&path), (path, deps))
            })
            .collect();
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        ModuleDb { deps, builtin }
    }

    /// The module files to load, dependencies first, for the modules `wanted`; modules
    /// built into the kernel are left out. Fails naming a module that is neither.
    pub fn resolve(&self, wanted: &[&str]) -> anyhow::Result<Resolved> {
        let mut resolved = Resolved::default();
        let mut visiting = BTreeSet::new();
        for name in wanted {
            let name = normalize(name);
            if self.builtin.contains(&name) {
                resolved.builtin.push(name);
                continue;
            }
            if !self.deps.contains_key(&name) {
                bail!("module {name} is neither in modules.dep nor built in");
            }
            self.visit(&name, &mut resolved.load_order, &mut visiting)?;
        }
        Ok(resolved)
    }

    fn visit(
        &self,
        name: &str,
        order: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let (path, deps) = self.deps.get(name).with_context(|| {
            format!("modules.dep names {name} as a dependency but has no line for it")
        })?;
        if order.contains(path) {
            return Ok(());
        }
        if !visiting.insert(name.to_owned()) {
            bail!("modules.dep has a dependency cycle through {name}");
        }
        // Each module's own line lists everything it needs; loading those (recursively,
        // each after its own dependencies) first gives a valid order whatever the listing
        // order is.
        for dep in deps.iter().rev() {
            self.visit(&module_name(dep), order, visiting)?;
        }
        order.push(path.clone());
        visiting.remove(name);
        Ok(())
    }
}

/// The outcome of [`ModuleDb::resolve`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Paths relative to `lib/modules/<release>`, in load order.
    pub load_order: Vec<String>,
    /// Wanted modules the kernel has built in.
    pub builtin: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/arch/x86/crypto/chacha-x86_64.ko.xz: kernel/lib/crypto/libchacha.ko.xz
kernel/crypto/gcm.ko.xz: kernel/crypto/crypto_null.ko.xz
kernel/crypto/crypto_null.ko.xz:
kernel/crypto/chacha_generic.ko.xz: kernel/lib/crypto/libchacha.ko.xz
kernel/crypto/ghash-generic.ko.xz: kernel/lib/crypto/gf128mul.ko.xz
kernel/lib/crypto/gf128mul.ko.xz:
kernel/lib/crypto/libchacha.ko.xz:
kernel/drivers/net/bonding/bonding.ko.xz: kernel/net/tls/tls.ko.xz
kernel/net/tls/tls.ko.xz:
kernel/drivers/net/veth.ko.xz:
kernel/a.ko: kernel/b.ko kernel/c.ko
kernel/b.ko: kernel/c.ko
kernel/c.ko:
";
    const BUILTIN: &str = "kernel/crypto/ctr.ko\nkernel/crypto/aes_generic.ko\n";

    #[test]
    fn modules_resolve_with_dependencies_first_and_builtins_left_out() {
        let db = ModuleDb::parse(DEP, BUILTIN);
        let r = db
            .resolve(&[
                "veth",
                "ghash-generic",
                "ctr",
                "chacha_generic",
                "gcm",
                "tls",
            ])
            .unwrap();
        assert_eq!(
            r.load_order,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/lib/crypto/gf128mul.ko.xz",
                "kernel/crypto/ghash-generic.ko.xz",
                "kernel/lib/crypto/libchacha.ko.xz",
                "kernel/crypto/chacha_generic.ko.xz",
                "kernel/crypto/crypto_null.ko.xz",
                "kernel/crypto/gcm.ko.xz",
                "kernel/net/tls/tls.ko.xz",
            ]
        );
        assert_eq!(r.builtin, ["ctr"]);
    }

    #[test]
    fn transitive_dependencies_load_in_dependency_order_once() {
        // modules.dep lists a's whole closure; b itself needs c, so c must precede b.
        let db = ModuleDb::parse(DEP, BUILTIN);
        let r = db.resolve(&["a", "b", "c"]).unwrap();
        assert_eq!(r.load_order, ["kernel/c.ko", "kernel/b.ko", "kernel/a.ko"]);
    }

    #[test]
    fn unknown_module_and_dangling_dependency_are_errors() {
        let db = ModuleDb::parse(DEP, BUILTIN);
        let e = db.resolve(&["nosuch"]).unwrap_err().to_string();
        assert!(e.contains("nosuch") && e.contains("neither"), "{e}");
        let db = ModuleDb::parse("kernel/x.ko: kernel/y.ko\n", "");
        let e = db.resolve(&["x"]).unwrap_err().to_string();
        assert!(e.contains("y"), "{e}");
    }

    #[test]
    fn module_names_normalize_dashes_and_compression_suffixes() {
        assert_eq!(
            module_name("kernel/crypto/ghash-generic.ko.xz"),
            "ghash_generic"
        );
        assert_eq!(module_name("kernel/net/tls/tls.ko"), "tls");
        assert_eq!(
            module_name("kernel/x/poly1305-x86_64.ko.zst"),
            "poly1305_x86_64"
        );
    }

    #[test]
    fn globs_match_the_kernel_package_names() {
        let g61 = KERNELS[0].package;
        assert!(glob_match(g61, "linux-image-6.1.0-56-cloud-amd64-unsigned"));
        assert!(!glob_match(g61, "linux-image-6.1.0-56-cloud-amd64-dbg"));
        assert!(!glob_match(g61, "linux-image-6.1.0-56-rt-amd64-unsigned"));
        let g612 = KERNELS[1].package;
        assert!(glob_match(
            g612,
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
        ));
        assert!(!glob_match(
            g612,
            "linux-image-6.12.117+deb12-amd64-unsigned"
        ));
        assert!(glob_match("a*b*c", "abc") && glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "acb") && !glob_match("ab", "abc"));
        assert_eq!(
            glob_to_regex("linux-image-6.12.*+deb12"),
            r"^linux-image-6\.12\..*\+deb12$"
        );
    }

    #[test]
    fn newest_package_wins_by_numeric_order() {
        let mut names = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-47-cloud-amd64-unsigned",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names[2], "linux-image-6.1.0-56-cloud-amd64-unsigned");
        assert!(natural_cmp("6.12.117+deb12", "6.12.99+deb12").is_gt());
        assert!(natural_cmp("6.12.117", "6.12.117+deb12").is_lt());
    }

    #[test]
    fn config_and_deb_names_parse() {
        let c = parse_config("# comment\nCONFIG_TLS=m\nCONFIG_X=\"a b\"\n# CONFIG_Y is not set\n");
        assert_eq!(c.get("CONFIG_TLS").map(String::as_str), Some("m"));
        assert_eq!(c.get("CONFIG_X").map(String::as_str), Some("a b"));
        assert!(!c.contains_key("CONFIG_Y"));
        assert_eq!(
            deb_version(Path::new(
                "/x/linux-image-6.12.117+deb12-cloud-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb"
            ))
            .as_deref(),
            Some("6.12.117-1~deb12u1")
        );
        assert_eq!(
            deb_version(Path::new("qemu_1%3a7.2_amd64.deb")).as_deref(),
            Some("1:7.2")
        );
    }
}
