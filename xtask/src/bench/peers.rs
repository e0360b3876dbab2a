//! The proxies under test, OmniRelay and its peers, each started pinned to the proxy core
//! with one worker, as a reverse proxy to the shared upstream.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use omnirelay_test_support::process::{TempDir, free_port, wait_for_port};

use super::{configs, http, procs, procs::Group, tools};

/// A proxy the benchmarks measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    OmniRelay,
    /// OmniRelay built from another revision (`--baseline`), for an A/B; not a peer.
    Baseline,
    Nginx,
    Haproxy,
    Envoy,
}

impl Peer {
    /// Every proxy, OmniRelay first (the run order A B C D).
    pub const ALL: [Peer; 4] = [Peer::OmniRelay, Peer::Nginx, Peer::Haproxy, Peer::Envoy];

    pub fn name(self) -> &'static str {
        match self {
            Peer::OmniRelay => "omnirelay",
            Peer::Baseline => "omnirelay-baseline",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Envoy => "envoy",
        }
    }

    /// Whether this is a build of OmniRelay (the work tree's or the baseline's): not a peer
    /// to compare with.
    pub fn is_omnirelay(self) -> bool {
        matches!(self, Peer::OmniRelay | Peer::Baseline)
    }

    /// [`Self::is_omnirelay`] by name, for results read back.
    pub fn is_omnirelay_name(name: &str) -> bool {
        name == Peer::OmniRelay.name() || name == Peer::Baseline.name()
    }

    pub fn parse(s: &str) -> anyhow::Result<Peer> {
        Peer::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .with_context(|| format!("unknown proxy {s:?} (omnirelay, nginx, haproxy, envoy)"))
    }
}

/// Where the binaries are (filled once by the install step).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub omnirelay_dir: PathBuf,
    /// `--baseline`: its binaries and the commit they were built from.
    pub baseline: Option<(PathBuf, String)>,
    pub envoy: Option<PathBuf>,
    /// The open-file limit every process started here inherits.
    pub nofile: u64,
}

/// A started proxy. `proxy` is what is measured; `aux` (OmniRelay's control daemon) is not.
#[derive(Debug)]
pub struct Running {
    pub peer: Peer,
    pub addr: SocketAddr,
    pub proxy: Group,
    /// OmniRelay's I/O drivers as its admin endpoint reports them.
    pub io_drivers: Option<serde_json::Value>,
    /// Client connections it can hold at once, when its config caps them below the
    /// idle-connection test's count (and why).
    pub conn_cap: Option<(u32, String)>,
    _aux: Vec<Group>,
    _dir: TempDir,
}

/// How the proxies of a scenario are started.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// Extra flags of OmniRelay's data plane (its io_uring knobs).
    pub omnirelay_args: &'a [String],
    /// The proxy core.
    pub core: usize,
    /// Where OmniRelay's control daemon runs (the load core).
    pub aux_core: usize,
    /// The upstream's port.
    pub upstream: u16,
    /// The readiness probe: one GET of this body size must return it whole.
    pub probe_bytes: usize,
    /// Settings for large bodies ([`configs::NGINX_LARGE_BODIES`]).
    pub large_bodies: bool,
}

/// Starts `peer` pinned to `l.core` (OmniRelay's control daemon on `l.aux_core`, its data
/// plane with `l.omnirelay_args` too), proxying to the upstream; checks that one request
/// through it returns `l.probe_bytes` of body.
pub fn start(peer: Peer, bins: &Binaries, l: &Launch<'_>) -> anyhow::Result<Running> {
    let (core, aux_core, upstream) = (l.core, l.aux_core, l.upstream);
    let dir = TempDir::new(&format!("bench-{}", peer.name()));
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.path().join("proxy.log");
    let mut aux = Vec::new();
    let mut io_drivers = None;
    let mut conn_cap = None;
    let proxy = match peer {
        Peer::Nginx => {
            let conf = dir.path().join("nginx.conf");
            std::fs::write(
                &conf,
                configs::nginx_proxy(dir.path(), port, upstream, bins.nofile, l.large_bodies),
            )?;
            let mut cmd = procs::pinned(core, &tools::program("nginx")?);
            cmd.arg("-c").arg(&conf).arg("-p").arg(dir.path());
            Group::spawn(cmd, &log)?
        }
        Peer::Haproxy => {
            let conf = dir.path().join("haproxy.cfg");
            std::fs::write(
                &conf,
                configs::haproxy(port, upstream, bins.nofile, l.large_bodies),
            )?;
            let maxconn = configs::haproxy_maxconn(bins.nofile);
            conn_cap = Some((
                u32::try_from(maxconn.saturating_sub(100)).unwrap_or(u32::MAX),
                format!(
                    "haproxy needs two descriptors per connection: maxconn {maxconn} under the open-file limit {}",
                    bins.nofile
                ),
            ));
            let mut cmd = procs::pinned(core, &tools::program("haproxy")?);
            cmd.arg("-db").arg("-f").arg(&conf);
            Group::spawn(cmd, &log)?
        }
        Peer::Envoy => {
            let envoy = bins.envoy.as_ref().context("envoy is not installed")?;
            let conf = dir.path().join("envoy.yaml");
            std::fs::write(&conf, configs::envoy(port, free_port(), upstream))?;
            let mut cmd = procs::pinned(core, envoy);
            cmd.arg("-c").arg(&conf).args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ]);
            Group::spawn(cmd, &log)?
        }
        Peer::OmniRelay | Peer::Baseline => {
            let (grpc, admin) = (free_port(), free_port());
            let bin_dir = match peer {
                Peer::Baseline => &bins.baseline.as_ref().context("no baseline build")?.0,
                _ => &bins.omnirelay_dir,
            };
            let omni = start_omnirelay(
                bin_dir,
                &OmniStart {
                    dir: dir.path(),
                    config: &configs::omnirelay(port, grpc, admin, upstream),
                    grpc,
                    admin,
                    control_core: aux_core,
                    dataplane_core: Some(core),
                    workers: 1,
                    extra_args: l.omnirelay_args,
                },
            )?;
            if peer == Peer::OmniRelay {
                io_drivers = omni.io_drivers;
            }
            aux.push(omni.control);
            omni.dataplane
        }
    };
    let mut running = Running {
        peer,
        addr,
        proxy,
        io_drivers,
        conn_cap,
        _aux: aux,
        _dir: dir,
    };
    ready(&mut running, l.probe_bytes)?;
    Ok(running)
}

/// How to start OmniRelay: its config (TOML text, written into `dir`), where the control
/// daemon listens, and the data plane's cores and workers.
#[derive(Debug, Clone)]
pub struct OmniStart<'a> {
    pub dir: &'a Path,
    pub config: &'a str,
    /// The config's `[control]` gRPC and admin ports.
    pub grpc: u16,
    pub admin: u16,
    pub control_core: usize,
    /// `Some(core)`: the data plane pinned there with `taskset`; `None`: it pins its workers
    /// itself, one per core.
    pub dataplane_core: Option<usize>,
    pub workers: usize,
    /// More data-plane flags.
    pub extra_args: &'a [String],
}

/// OmniRelay's processes, started by [`start_omnirelay`].
#[derive(Debug)]
pub struct Omni {
    pub control: Group,
    pub dataplane: Group,
    /// The data plane's admin port.
    pub dataplane_admin: u16,
    /// Its I/O drivers as its admin endpoint reports them.
    pub io_drivers: Option<serde_json::Value>,
}

/// Starts the control daemon on `o.config` (state in `o.dir/state`), then a data plane
/// subscribed to it (access log off, output in `o.dir/proxy.log`); the binaries are in
/// `bin_dir`.
pub fn start_omnirelay(bin_dir: &Path, o: &OmniStart<'_>) -> anyhow::Result<Omni> {
    let conf = o.dir.join("omnirelay.toml");
    std::fs::write(&conf, o.config)?;
    let state = o.dir.join("state");
    let mut cmd = procs::pinned(o.control_core, &bin_dir.join("omnirelay-control"));
    cmd.arg("run")
        .arg("--config")
        .arg(&conf)
        .arg("--state-dir")
        .arg(&state);
    cmd.env("RUST_LOG", "warn");
    let control = Group::spawn(cmd, &o.dir.join("control.log"))?;
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], o.admin));
    if !wait_for_port(admin_addr, Duration::from_secs(20)) {
        bail!(
            "the control daemon did not start:\n{}",
            control.log_tail(20)
        );
    }
    let dp_admin = free_port();
    let program = bin_dir.join("omnirelay-dataplane");
    let mut cmd = match o.dataplane_core {
        Some(core) => procs::pinned(core, &program),
        None => Command::new(&program),
    };
    cmd.arg("--control")
        .arg(format!("http://127.0.0.1:{}", o.grpc))
        .arg("--public-key")
        .arg(state.join("snapshot-signing.pub"))
        .arg("--workers")
        .arg(o.workers.to_string())
        .args(["--access-log", "off", "--admin"])
        .arg(format!("127.0.0.1:{dp_admin}"))
        .args(o.extra_args)
        .env("RUST_LOG", "warn");
    let dataplane = Group::spawn(cmd, &o.dir.join("proxy.log"))?;
    let mut io_drivers = None;
    if wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], dp_admin)),
        Duration::from_secs(20),
    ) {
        io_drivers = admin_json(dp_admin, "/snapshot").and_then(|v| v.get("io_drivers").cloned());
    }
    Ok(Omni {
        control,
        dataplane,
        dataplane_admin: dp_admin,
        io_drivers,
    })
}

/// Waits for the listener, then one GET through the proxy must return the expected body.
fn ready(r: &mut Running, probe_bytes: usize) -> anyhow::Result<()> {
    let up = wait_for_port(r.addr, Duration::from_secs(20));
    if !up || !r.proxy.alive() {
        bail!(
            "{} did not start listening on {}:\n{}",
            r.peer.name(),
            r.addr,
            r.proxy.log_tail(20)
        );
    }
    let check = || -> anyhow::Result<()> {
        let mut s = http::connect(r.addr, Duration::from_secs(5))?;
        let reply = http::get(&mut s, &configs::body_path(probe_bytes))?;
        if reply.status != 200 || reply.body_len != probe_bytes {
            bail!("probe got {reply:?}, wanted 200 with {probe_bytes} bytes");
        }
        let (reply, body) = http::get_reading(&mut s, configs::FORWARDING_PATH)?;
        if reply.status != 200 {
            bail!("forwarding probe got {reply:?}");
        }
        let missing = missing_forwarding(&String::from_utf8_lossy(&body));
        if !missing.is_empty() {
            bail!(
                "not configured like the others: the upstream got no {} (it got:\n{})",
                missing.join(", "),
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    };
    check().with_context(|| {
        format!(
            "{} does not proxy:\n{}",
            r.peer.name(),
            r.proxy.log_tail(20)
        )
    })
}

/// The [`configs::FORWARDING_FIELDS`] the upstream's forwarding echo shows empty.
fn missing_forwarding(echo: &str) -> Vec<&'static str> {
    configs::FORWARDING_FIELDS
        .into_iter()
        .filter(|f| {
            !echo.lines().any(|l| {
                l.strip_prefix(f)
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(|v| !v.trim().is_empty())
            })
        })
        .collect()
}

/// One GET of a JSON admin endpoint.
pub fn admin_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let out = crate::run::output(Command::new("curl").args([
        "-sf",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{port}{path}"),
    ]))?;
    serde_json::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::missing_forwarding;

    #[test]
    fn forwarding_fields_left_empty_are_named() {
        let echo = "x-forwarded-for: 127.0.0.1\nforwarded: for=127.0.0.1;proto=http\nvia: \n\
                    x-forwarded-proto: http\n";
        assert_eq!(missing_forwarding(echo), ["via", "x-request-id"]);
        let full =
            "x-forwarded-for: a\nforwarded: b\nvia: c\nx-forwarded-proto: d\nx-request-id: e\n";
        assert!(missing_forwarding(full).is_empty());
    }
}
