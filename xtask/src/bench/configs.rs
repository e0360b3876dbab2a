//! The configs the harness writes: the upstream nginx and each proxy under test as an
//! equivalent plain HTTP/1.1 reverse proxy (one worker, upstream keep-alive, no access log)
//! to that upstream. Equivalent includes the work on each request's head: every proxy adds
//! the fields OmniRelay adds by default (X-Forwarded-For, Forwarded, Via,
//! X-Forwarded-Proto and a generated X-Request-Id), which the harness checks at start
//! through the upstream's [`FORWARDING_PATH`].

use std::path::Path;

/// Where the upstream takes POSTed bodies (read to their end, then [`UPLOAD_REPLY`]).
pub const UPLOAD_PATH: &str = "/upload";
/// The upstream's answer to a POST: what nginx's `echo ok` writes.
pub const UPLOAD_REPLY: &str = "ok\n";
/// nginx's echo module (Debian's nginx-light depends on it), which reads a request body
/// to its end before answering.
pub const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

/// Where the upstream answers with the forwarding fields it received, one `name: value`
/// line per field of [`FORWARDING_FIELDS`] (empty when absent).
pub const FORWARDING_PATH: &str = "/forwarding";
/// The fields every proxy under test adds to the requests it forwards.
pub const FORWARDING_FIELDS: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "via",
    "x-forwarded-proto",
    "x-request-id",
];

/// The upstream's [`FORWARDING_PATH`] location.
fn forwarding_location() -> String {
    let lines: String = FORWARDING_FIELDS
        .iter()
        .map(|f| format!("{f}: $http_{}\\n", f.replace('-', "_")))
        .collect();
    format!(
        "location = {FORWARDING_PATH} {{
      default_type text/plain;
      return 200 \"{lines}\";
    }}"
    )
}

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
    upstream_nginx_with(dir, root, port, nofile, false)
}

/// The upstream, with `uploads`: also [`UPLOAD_PATH`], which reads a POSTed body of any
/// size to its end (in memory up to 4 MiB) and answers [`UPLOAD_REPLY`].
pub fn upstream_nginx_with(
    dir: &Path,
    root: &Path,
    port: u16,
    nofile: u64,
    uploads: bool,
) -> String {
    let (module, upload) = if uploads {
        (
            format!("load_module {ECHO_MODULE};\n"),
            format!(
                "location = {UPLOAD_PATH} {{
      client_max_body_size 0;
      client_body_buffer_size 4m;
      echo_read_request_body;
      echo ok;
    }}"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "{module}{common}http {{
  {http}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {root};
    location / {{ }}
    {forwarding}
    {upload}
  }}
}}
",
        common = nginx_common(dir, nofile),
        http = nginx_http_common(dir),
        root = root.display(),
        forwarding = forwarding_location(),
    )
}

/// Two upstreams in one nginx for `snapshot-propagation`: every path on `old` answers
/// `old_body`, every path on `new` answers `new_body` (so a client tells which route
/// served it by the body).
pub fn upstream_pair(
    dir: &Path,
    (old, old_body): (u16, &str),
    (new, new_body): (u16, &str),
    nofile: u64,
) -> String {
    format!(
        "{common}http {{
  {http}
  server {{
    listen 127.0.0.1:{old} backlog=4096;
    location / {{ return 200 \"{old_body}\"; }}
  }}
  server {{
    listen 127.0.0.1:{new} backlog=4096;
    location / {{ return 200 \"{new_body}\"; }}
  }}
}}
",
        common = nginx_common(dir, nofile),
        http = nginx_http_common(dir),
    )
}

/// What nginx as the proxy under test adds for large bodies, so that it streams like the
/// other proxies: request bodies are passed on as they arrive (not spooled to a temp
/// file first), responses are buffered in memory only (never in temp files), no body size
/// limit, and 64 KiB buffers like OmniRelay's reads, both directions (its 4 KiB and
/// 16 KiB defaults cost it two to three times the CPU per 1 MiB body here).
pub const NGINX_LARGE_BODIES: &str = "proxy_request_buffering off; proxy_max_temp_file_size 0; \
     client_max_body_size 0; client_body_buffer_size 64k; proxy_buffer_size 64k; \
     proxy_buffers 4 64k;";

/// What haproxy as the proxy under test adds for large bodies: 64 KiB buffers (its default
/// is 16 KiB), like OmniRelay's reads.
pub const HAPROXY_LARGE_BODIES: &str = "tune.bufsize 65536";

/// nginx as the proxy under test (with [`NGINX_LARGE_BODIES`] when `large_bodies`).
pub fn nginx_proxy(
    dir: &Path,
    port: u16,
    upstream: u16,
    nofile: u64,
    large_bodies: bool,
) -> String {
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
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Forwarded \"for=$remote_addr;proto=$scheme;host=\\\"$http_host\\\"\";
      proxy_set_header Via \"1.1 nginx\";
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
      {large}
    }}
  }}
}}
",
        common = nginx_common(dir, nofile),
        http = nginx_http_common(dir),
        large = if large_bodies { NGINX_LARGE_BODIES } else { "" },
    )
}

/// haproxy's `maxconn` under an open-file limit of `nofile`: it refuses to start unless
/// `ulimit-n` covers two descriptors per connection (client and server side).
pub fn haproxy_maxconn(nofile: u64) -> u64 {
    (nofile.saturating_sub(200) / 2).max(512)
}

/// haproxy as the proxy under test (one thread, keep-alive both sides, no logging; with
/// [`HAPROXY_LARGE_BODIES`] when `large_bodies`).
pub fn haproxy(port: u16, upstream: u16, nofile: u64, large_bodies: bool) -> String {
    format!(
        "global
  nbthread 1
  maxconn {maxconn}
  ulimit-n {nofile}
  {large}

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
  option forwardfor
  http-request set-header Forwarded \"for=%[src];proto=http;host=\\\"%[req.hdr(host)]\\\"\"
  http-request add-header Via \"1.1 haproxy\"
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Request-Id %[uuid]
  server up 127.0.0.1:{upstream}
",
        maxconn = haproxy_maxconn(nofile),
        large = if large_bodies {
            HAPROXY_LARGE_BODIES
        } else {
            ""
        },
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
          use_remote_address: true
          via: "1.1 envoy"
          route_config:
            request_headers_to_add:
            - header:
                key: forwarded
                value: 'for=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;proto=http;host="%REQ(:AUTHORITY)%"'
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
