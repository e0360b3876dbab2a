//! A whole OmniRelay stack for end-to-end tests, made of real processes: nginx upstreams,
//! the control daemon (`omnirelay-control run`) and the data plane (`omnirelay-dataplane`),
//! each on loopback ports chosen for the test and stopped (by PID) when the stack drops.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by several test binaries"
)]

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use omnirelay_test_support::{
    nginx::Nginx,
    process::{ChildGuard, TempDir, free_port, wait_for_port, wait_until, workspace_bin},
};

/// Ports of one stack.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub up1: u16,
    pub up2: u16,
    pub proxy: u16,
    pub grpc: u16,
    pub control_admin: u16,
    pub dp_admin: u16,
}

impl Ports {
    pub fn new() -> Self {
        Ports {
            up1: free_port(),
            up2: free_port(),
            proxy: free_port(),
            grpc: free_port(),
            control_admin: free_port(),
            dp_admin: free_port(),
        }
    }
}

/// The config every stack starts with: one listener, route "default" to `cluster`.
pub fn config(p: &Ports, cluster: &str) -> String {
    format!(
        r#"
[control]
grpc_listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{cadmin}"

[[listeners]]
name = "public"
address = "127.0.0.1:{proxy}"
limits = {{ max_header_bytes = 8192, max_headers = 50, max_body_bytes = 67108864 }}

[[routes]]
name = "default"
cluster = "{cluster}"
retry = {{ max_retries = 2, on = ["connect-failure"] }}

[[clusters]]
name = "one"
endpoints = ["127.0.0.1:{up1}"]

[[clusters]]
name = "two"
endpoints = ["127.0.0.1:{up2}"]
"#,
        grpc = p.grpc,
        cadmin = p.control_admin,
        proxy = p.proxy,
        up1 = p.up1,
        up2 = p.up2,
    )
}

/// nginx servers: `up1` serves files, echoes bodies at /echo (and /replay), says "one"
/// at /who and /conflict, answers /flaky with 503 and the request target it got at /uri;
/// `up2` says "two" everywhere but /replay, where it answers 503, and /conflict, 409.
pub fn nginx_servers(p: &Ports) -> String {
    format!(
        r#"
server {{
  listen 127.0.0.1:{up1};
  root {{root}};
  location /echo {{
    client_max_body_size 64m;
    client_body_buffer_size 64m;
    client_body_in_single_buffer on;
    echo_read_request_body;
    echo_request_body;
  }}
  location /echo-brief {{
    # Closes the connection when it has been idle 300 ms, as many application servers
    # do well before the proxy's pool would.
    keepalive_timeout 300ms;
    echo_read_request_body;
    echo_request_body;
  }}
  location /stall {{ echo_sleep 5; echo "late"; }}
  location /flaky {{ return 503 "flaky one\n"; }}
  location /replay {{
    echo_read_request_body;
    echo_request_body;
  }}
  location /small-upload {{
    # Answers 413 at once and closes without reading the rest (a reset for a client
    # still sending), as many application servers do.
    client_max_body_size 1k;
    lingering_close off;
    echo_read_request_body;
    echo_request_body;
  }}
  location /status {{ stub_status; }}
  location /who {{ return 200 "one\n"; }}
  location /conflict {{ return 200 "one\n"; }}
  location /uri {{ return 200 "$request_uri\n"; }}
  location /edits {{ return 200 "gw=$http_x_gateway|debug=$http_x_debug|keep=$http_x_keep\n"; }}
  location /headers {{
    return 200 "host=$http_host|xff=$http_x_forwarded_for|via=$http_via|rid=$http_x_request_id|fwd=$http_forwarded|conn=$http_connection|te=$http_te\n";
  }}
}}
server {{
  listen 127.0.0.1:{up2};
  location / {{ return 200 "two\n"; }}
  location /replay {{ return 503 "flaky two\n"; }}
  location /conflict {{ return 409 "busy two\n"; }}
}}
"#,
        up1 = p.up1,
        up2 = p.up2
    )
}

/// A running stack.
pub struct Stack {
    pub ports: Ports,
    pub nginx: Nginx,
    pub control: ChildGuard,
    pub dataplane: ChildGuard,
    pub config_path: PathBuf,
    pub dir: TempDir,
}

impl Stack {
    pub fn proxy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.proxy))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.proxy)
    }

    pub fn dp_admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.dp_admin)
    }

    pub fn control_admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.control_admin)
    }

    /// Starts nginx, the control daemon on `config(ports, "one")`, and the data plane.
    pub fn start() -> Stack {
        Self::build(|grpc| grpc.port(), &[])
    }

    /// [`Stack::start`], the data plane subscribing at the port `via` returns for the
    /// control daemon's gRPC address (a relay in between).
    pub fn start_via(via: impl FnOnce(SocketAddr) -> u16) -> Stack {
        Self::build(via, &[])
    }

    /// [`Stack::start`], with `args` added to the data plane's command line.
    pub fn start_with_args(args: &[&str]) -> Stack {
        Self::build(|grpc| grpc.port(), args)
    }

    fn build(via: impl FnOnce(SocketAddr) -> u16, dataplane_args: &[&str]) -> Stack {
        let ports = Ports::new();
        let nginx = Nginx::start(&nginx_servers(&ports), &[ports.up1, ports.up2]).unwrap();
        let dir = TempDir::new("stack");
        let config_path = dir.path().join("omnirelay.toml");
        std::fs::write(&config_path, config(&ports, "one")).unwrap();
        let control = start_control(&dir, &config_path, &ports);
        let grpc = via(SocketAddr::from(([127, 0, 0, 1], ports.grpc)));
        let dataplane = start_dataplane(&dir, &Ports { grpc, ..ports }, dataplane_args);
        Stack {
            ports,
            nginx,
            control,
            dataplane,
            config_path,
            dir,
        }
    }

    /// Adds a listener to the starting config (`name`, `address` and the `extra` fields)
    /// and waits until the data plane accepts on it, reached at loopback port `port`.
    pub fn add_listener(&self, name: &str, address: &str, extra: &str, port: u16) -> SocketAddr {
        let v = self.dp_version();
        let config = config(&self.ports, "one");
        write_config(
            &self.config_path,
            &format!(
                "{config}\n[[listeners]]\nname = \"{name}\"\naddress = \"{address}\"\n{extra}"
            ),
        );
        self.wait_dp_version_above(v);
        let reach = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_port(reach, Duration::from_secs(5)),
            "{name} not accepting"
        );
        reach
    }

    /// Restarts the control daemon (same state dir, so same key and history).
    pub fn restart_control(&mut self) {
        self.control.kill();
        self.control = start_control(&self.dir, &self.config_path, &self.ports);
    }

    /// The data plane's running snapshot version (from its admin API).
    pub fn dp_version(&self) -> u64 {
        let out = curl(&["-s", &self.dp_admin("/snapshot")]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["version"].as_u64().unwrap_or(0)
    }

    /// Waits until the data plane runs a version above `v`.
    pub fn wait_dp_version_above(&self, v: u64) -> u64 {
        let mut now = 0;
        assert!(
            wait_until(Duration::from_secs(10), || {
                now = self.dp_version();
                now > v
            }),
            "data plane stayed at version {now}, expected > {v}"
        );
        now
    }

    /// A metric value from the data plane's /metrics (first exact series match).
    pub fn dp_metric(&self, series: &str) -> Option<f64> {
        let out = curl(&["-s", &self.dp_admin("/metrics")]);
        metric(&String::from_utf8_lossy(&out.stdout), series)
    }
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn start_control(dir: &TempDir, config: &std::path::Path, ports: &Ports) -> ChildGuard {
    let bin = workspace_bin("omnirelay-control");
    assert!(
        bin.exists(),
        "{} not built (cargo test builds it)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let child =
        ChildGuard::spawn("omnirelay-control", cmd, &dir.path().join("control.log")).unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.control_admin));
    assert!(
        wait_for_port(admin, Duration::from_secs(15)),
        "control daemon did not start:\n{}",
        child.log()
    );
    child
}

/// The data plane's command line: subscribed to `control`, trusting the key in `dir`'s
/// control state, admin API on loopback port `admin`, then `extra`.
pub fn dataplane_command(dir: &TempDir, control: &str, admin: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnirelay-dataplane"));
    cmd.arg("--control")
        .arg(control)
        .arg("--public-key")
        .arg(dir.path().join("state/snapshot-signing.pub"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--access-log")
        .arg(dir.path().join("access.log"))
        .args(["--workers", "2", "--node-id", "test"])
        .args(extra);
    cmd
}

pub fn start_dataplane(dir: &TempDir, ports: &Ports, extra: &[&str]) -> ChildGuard {
    let control = format!("http://127.0.0.1:{}", ports.grpc);
    let cmd = dataplane_command(dir, &control, ports.dp_admin, extra);
    let child = ChildGuard::spawn(
        "omnirelay-dataplane",
        cmd,
        &dir.path().join("dataplane.log"),
    )
    .unwrap();
    let proxy = SocketAddr::from(([127, 0, 0, 1], ports.proxy));
    assert!(
        wait_for_port(proxy, Duration::from_secs(15)),
        "data plane did not start:\n{}",
        child.log()
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.dp_admin));
    assert!(
        wait_for_port(admin, Duration::from_secs(5)),
        "data plane admin did not start"
    );
    child
}

pub fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(args).output().expect("run curl")
}

/// POSTs `file` to `url` through curl with `header` (`"Expect:"` for none) and returns what
/// curl printed: the response body, a newline, the status code.
pub fn upload(url: &str, file: &std::path::Path, header: &str) -> String {
    let data = format!("@{}", file.display());
    let args = [
        "-s",
        "-H",
        header,
        "-w",
        "\n%{http_code}",
        "--data-binary",
        &data,
        url,
    ];
    String::from_utf8_lossy(&curl(&args).stdout).into_owned()
}

/// GET through curl: (status, body).
pub fn get(url: &str) -> (u16, Vec<u8>) {
    let out = curl(&["-s", "-o", "-", "-w", "\n%{http_code}", url]);
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

/// Writes `request` on `conn` and reads until `done` says the response is in, the peer
/// closes, or 5 s pass; what was read, as text.
pub fn exchange(
    conn: &mut std::net::TcpStream,
    request: &str,
    done: impl Fn(&[u8]) -> bool,
) -> String {
    use std::io::{Read as _, Write as _};
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `GET target` on a new connection to `addr` with the `fields` (each line ending in
/// CRLF) and `connection: close`; the whole response as text.
pub fn get_once(addr: SocketAddr, target: &str, fields: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let request = format!("GET {target} HTTP/1.1\r\n{fields}connection: close\r\n\r\n");
    exchange(&mut conn, &request, |_| false)
}

/// Rewrites the config file the way an editor does (write elsewhere, rename over).
pub fn write_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TCP relay on loopback whose open connections can be turned into black holes: bytes
/// are still accepted (the kernel ACKs them) but never delivered, as when a peer host
/// vanishes or a middlebox drops a flow. Connections opened later pass normally.
pub struct Relay {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
}

impl Relay {
    /// Relays every connection to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let (stop2, open2) = (Arc::clone(&stop), Arc::clone(&open));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let dead = Arc::new(AtomicBool::new(false));
                open2.lock().unwrap().push(Arc::clone(&dead));
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (stop, dead) = (Arc::clone(&stop2), Arc::clone(&dead));
                    std::thread::spawn(move || pump(from, to, &stop, &dead));
                }
            }
        });
        Relay { port, stop, open }
    }

    /// Every connection open now delivers nothing more, either way.
    pub fn blackhole_open_connections(&self) {
        for dead in self.open.lock().unwrap().iter() {
            dead.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copies `from` to `to` until either closes or `stop`; while `dead`, reads and drops.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    stop: &std::sync::atomic::AtomicBool,
    dead: &std::sync::atomic::AtomicBool,
) {
    use std::{
        io::{Read as _, Write as _},
        sync::atomic::Ordering,
    };
    from.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if !dead.load(Ordering::Relaxed) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
