//! A real nginx (Debian's nginx-light) started by a test as an upstream, on loopback ports
//! the test chooses, with `stub_status` and the echo module for body round trips.

use std::{net::SocketAddr, process::Command, time::Duration};

use crate::process::{ChildGuard, TempDir, wait_for_port};

const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

/// A running nginx; stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    _child: ChildGuard,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `servers` (the `server { ... }` blocks; `{root}` is replaced by a
    /// document root the caller can fill through [`Nginx::root`]) and waits for `ports`.
    pub fn start(servers: &str, ports: &[u16]) -> Result<Self, String> {
        let dir = TempDir::new("nginx");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let p = dir.path().display().to_string();
        let echo = if std::path::Path::new(ECHO_MODULE).exists() {
            format!("load_module {ECHO_MODULE};")
        } else {
            String::new()
        };
        let conf = format!(
            "{echo}
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  {servers}
}}
",
            servers = servers.replace("{root}", &root.display().to_string())
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&conf_path).arg("-p").arg(dir.path());
        let child = ChildGuard::spawn("nginx", cmd, &dir.path().join("nginx.log"))
            .map_err(|e| format!("starting nginx: {e}"))?;
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            if !wait_for_port(addr, Duration::from_secs(10)) {
                return Err(format!("nginx did not listen on {addr}: {}", child.log()));
            }
        }
        Ok(Nginx { _child: child, dir })
    }

    /// The document root (`{root}` in the server blocks).
    pub fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("www")
    }
}
