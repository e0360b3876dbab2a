//! The configs the harness writes: the upstream nginx and each proxy under test as an
//! equivalent plain HTTP/1.1 reverse proxy (one worker, upstream keep-alive, no access log)
//! to that upstream.

use std::path::Path;

/// Paths and sizes the upstream serves: fixed bodies of these many bytes.
pub fn body_path(bytes: usize) -> String {
    format!("/body-{bytes}")
}

/// Writes the upstream's document root: one file per body size.
pub fn write_bodies(root: &Path, sizes: &[usize]) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    for &n in sizes {
        let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(root.join(body_path(n).trim_start_matches('/')), body)?;
    }
    Ok(())
}

/// `nofile` is the open-file limit the servers inherit (the idle-connection test opens
/// 10,000 connections at once); nginx and haproxy size their connection tables to it.
fn nginx_common(dir: &Path, nofile: u64) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {conns}; }}
",
        conns = nofile.saturating_sub(100).max(1024)
    )
}

fn nginx_http_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;"
    )
}

/// The upstream: static files from `root`.
pub fn upstream_nginx(dir: &Path, root: &Path, port: u16, nofile: u64) -> String {
    format!(
        "{common}http {{
  {http}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {root};
    location / {{ }}
  }}
}}
",
        common = nginx_common(dir, nofile),
        http = nginx_http_common(dir),
        root = root.display()
    )
}

/// nginx as the proxy under test.
pub fn nginx_proxy(dir: &Path, port: u16, upstream: u16, nofile: u64) -> String {
    format!(
        "{common}http {{
  {http}
  upstream backend {{
    server 127.0.0.1:{upstream};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        common = nginx_common(dir, nofile),
        http = nginx_http_common(dir)
    )
}

/// haproxy's `maxconn` under an open-file limit of `nofile`: it refuses to start unless
/// `ulimit-n` covers two descriptors per connection (client and server side).
pub fn haproxy_maxconn(nofile: u64) -> u64 {
    (nofile.saturating_sub(200) / 2).max(512)
}

/// haproxy as the proxy under test (one thread, keep-alive both sides, no logging).
pub fn haproxy(port: u16, upstream: u16, nofile: u64) -> String {
    format!(
        "global
  nbthread 1
  maxconn {maxconn}
  ulimit-n {nofile}

defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-request 30s
  timeout http-keep-alive 300s

frontend bench
  bind 127.0.0.1:{port}
  default_backend upstream

backend upstream
  server up 127.0.0.1:{upstream}
",
        maxconn = haproxy_maxconn(nofile)
    )
}

/// Envoy as the proxy under test (static bootstrap; `--concurrency 1` on the command line).
pub fn envoy(port: u16, admin: u16, upstream: u16) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }}
"#
    )
}

/// OmniRelay's `omnirelay.toml`: one listener, one route, one cluster.
pub fn omnirelay(port: u16, grpc: u16, admin: u16, upstream: u16) -> String {
    format!(
        r#"[control]
grpc_listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{admin}"

[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"

[[routes]]
name = "all"
path_prefix = "/"
cluster = "upstream"

[[clusters]]
name = "upstream"
endpoints = ["127.0.0.1:{upstream}"]
max_idle_per_endpoint = 64
"#
    )
}
