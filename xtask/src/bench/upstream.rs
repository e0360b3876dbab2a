//! The shared upstream: one nginx on the load-generator core serving fixed bodies, a
//! separate process from every proxy under test.

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;
use omnirelay_test_support::process::{TempDir, free_port, wait_for_port};

use super::{configs, http, procs, procs::Group, tools};

/// The shared upstream: nginx on the load-generator core serving the fixed bodies.
#[derive(Debug)]
pub struct Upstream {
    pub port: u16,
    _group: Group,
    _dir: TempDir,
}

/// Starts the upstream and waits until it serves every body (and, with `uploads`, takes
/// a POST at [`configs::UPLOAD_PATH`]).
pub fn start(
    core: usize,
    bodies: &[usize],
    uploads: bool,
    nofile: u64,
) -> anyhow::Result<Upstream> {
    if uploads && !std::path::Path::new(configs::ECHO_MODULE).exists() {
        bail!(
            "the upstream needs nginx's echo module for uploads: {} is missing (Debian package libnginx-mod-http-echo)",
            configs::ECHO_MODULE
        );
    }
    let dir = TempDir::new("bench-upstream");
    let root = dir.path().join("www");
    configs::write_bodies(&root, bodies)?;
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        configs::upstream_nginx_with(dir.path(), &root, port, nofile, uploads),
    )?;
    let mut cmd = procs::pinned(core, &tools::program("nginx")?);
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir.path());
    let group = Group::spawn(cmd, &dir.path().join("nginx.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !wait_for_port(addr, Duration::from_secs(10)) {
        bail!("the upstream nginx did not start:\n{}", group.log_tail(20));
    }
    let mut s = http::connect(addr, Duration::from_secs(5))?;
    for &b in bodies {
        let reply = http::get(&mut s, &configs::body_path(b))?;
        anyhow::ensure!(
            reply.status == 200 && reply.body_len == b,
            "upstream: {reply:?}"
        );
    }
    if uploads {
        let reply = http::post(&mut s, configs::UPLOAD_PATH, &[b'x'; 100_000])?;
        anyhow::ensure!(
            reply.status == 200 && reply.body_len == configs::UPLOAD_REPLY.len(),
            "upstream upload: {reply:?}"
        );
    }
    Ok(Upstream {
        port,
        _group: group,
        _dir: dir,
    })
}
