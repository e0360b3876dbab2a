//! The client side's timeouts and start-up paths, through the real binaries: an idle
//! keep-alive connection is closed by the worker's idle reaper after the listener's idle
//! timeout from the config (not before), and a changed timeout applies live; a stalled
//! request head gets 408 and a close; a data plane starts from a saved
//! snapshot file with no control daemon and serves its routes (and refuses a truncated,
//! tampered or missing file, naming it and the reason); and with io_uring made unavailable
//! to the process (a seccomp filter), the workers fall back to epoll, say so, serve, and
//! still close idle connections.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use common::{Ports, config, curl, get, nginx_servers, start_control, start_dataplane};
use omnirelay_test_support::{
    nginx::Nginx,
    process::{ChildGuard, TempDir, free_port, wait_for_port},
};

const IDLE_MS: u64 = 600;
const HEAD_MS: u64 = 600;

struct Site {
    ports: Ports,
    _nginx: Nginx,
    control: ChildGuard,
    dataplane: ChildGuard,
    dir: TempDir,
    config_path: std::path::PathBuf,
}

/// The test config with the listener's client timeouts set.
fn timed_config(ports: &Ports, idle_ms: u64, head_ms: u64) -> String {
    let timeouts = format!("timeouts = {{ idle_ms = {idle_ms}, head_ms = {head_ms} }}\n");
    let text = config(ports, "one").replacen("limits = {", &(timeouts + "limits = {"), 1);
    assert!(text.contains("idle_ms"), "the listener line moved: {text}");
    text
}

fn site() -> Site {
    site_with(&[])
}

fn site_with(extra: &[&str]) -> Site {
    let ports = Ports::new();
    let nginx = Nginx::start(&nginx_servers(&ports), &[ports.up1, ports.up2]).unwrap();
    let dir = TempDir::new("timeouts");
    let cfg = dir.path().join("omnirelay.toml");
    std::fs::write(&cfg, timed_config(&ports, IDLE_MS, HEAD_MS)).unwrap();
    let control = start_control(&dir, &cfg, &ports);
    let dataplane = start_dataplane(&dir, &ports, extra);
    Site {
        ports,
        _nginx: nginx,
        control,
        dataplane,
        dir,
        config_path: cfg,
    }
}

/// The data plane's running snapshot version, from its admin API.
fn dp_version(ports: &Ports) -> u64 {
    let url = format!("http://127.0.0.1:{}/snapshot", ports.dp_admin);
    let out = curl(&["-s", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["version"].as_u64().unwrap_or(0)
}

/// Reads until the peer closes (or 5 s pass); returns what arrived and when it closed.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, Option<Instant>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, Some(Instant::now())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, Some(Instant::now()));
            }
            Err(_) => return (got, None),
        }
    }
}

/// One request on a new keep-alive connection to `port`, then idle: the data plane must
/// close it after about [`IDLE_MS`], not before.
fn assert_closed_when_idle(port: u16) {
    assert_closed_after(port, IDLE_MS);
}

/// One request on a new keep-alive connection to `port`, then idle: the data plane must
/// close it after about `idle_ms`, not before.
fn assert_closed_after(port: u16, idle_ms: u64) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 512];
    let n = conn.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    let (rest, closed) = read_to_close(&mut conn);
    let closed = closed.expect("the idle connection was not closed within 5 s");
    let after = closed - idle_since;
    assert!(rest.is_empty(), "nothing more is sent before the close");
    // Closed no earlier than the timeout and within a reaper tick (a quarter) plus slack.
    assert!(
        after >= Duration::from_millis(idle_ms - 50) && after < Duration::from_millis(idle_ms * 3),
        "idle connection closed after {after:?}, timeout {idle_ms} ms"
    );
}

#[test]
fn a_changed_idle_timeout_in_the_config_applies_to_connections_idle_after_it() {
    let s = site();
    let before = dp_version(&s.ports);
    assert!(before > 0, "no snapshot running");
    const LONGER_MS: u64 = 1500;
    std::fs::write(&s.config_path, timed_config(&s.ports, LONGER_MS, HEAD_MS)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dp_version(&s.ports) <= before {
        assert!(
            Instant::now() < deadline,
            "the data plane did not take the changed config:\n{}",
            s.dataplane.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Closed after the new timeout, which the old one would have been well inside.
    assert_closed_after(s.ports.proxy, LONGER_MS);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = site();
    assert_closed_when_idle(s.ports.proxy);
    let mut first = [0u8; 512];

    // A connection that never sends anything is idle from the start.
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", s.ports.proxy)).unwrap();
    let (_, closed) = read_to_close(&mut silent);
    let after = closed.expect("silent connection not closed") - t0;
    assert!(after >= Duration::from_millis(IDLE_MS - 50), "{after:?}");

    // A connection that keeps sending requests within the timeout stays open.
    let mut busy = TcpStream::connect(("127.0.0.1", s.ports.proxy)).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(IDLE_MS / 2));
        busy.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let n = busy.read(&mut first).unwrap();
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200"),
            "kept-alive request failed"
        );
    }
}

/// One request on `conn` and its whole response (the `/who` body of upstream one).
fn roundtrip(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\none\n") {
        let n = conn
            .read(&mut buf)
            .expect("no complete response within 5 s");
        assert_ne!(
            n,
            0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn requests_on_either_side_of_the_hot_read_window_are_served() {
    // After a response the worker reads the next request directly for 2 ms (set here;
    // the default `--client-hot-read-ms` is 20), then cancels that read, takes the buffer
    // back and waits for readability. Requests sent before, at and after the expiry take each path: the hot
    // read, the cancelled read followed by the readiness wait, and (at the edge) a read
    // that completes as it is cancelled, whose bytes must be kept. That last race is
    // handled by construction (the cancelled read is awaited, never dropped); this test
    // cannot force it, only give it chances.
    let s = site_with(&["--client-hot-read-ms", "2"]);
    let mut conn = TcpStream::connect(("127.0.0.1", s.ports.proxy)).unwrap();
    for i in 0..60u64 {
        // 0 to 4.75 ms, in 250 µs steps, three times over.
        std::thread::sleep(Duration::from_micros((i % 20) * 250));
        let resp = roundtrip(&mut conn);
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
    }
    // And after a long quiet spell (cold: buffers returned, readiness wait), still served.
    std::thread::sleep(Duration::from_millis(50));
    assert!(roundtrip(&mut conn).starts_with("HTTP/1.1 200"));
}

#[test]
fn pipelined_requests_on_a_hot_connection_are_not_held_for_the_window() {
    // A hot window of a whole second: a hot connection that waited for new bytes while a
    // complete request sat in its buffer would answer that request a second late.
    let s = site_with(&["--client-hot-read-ms", "1000"]);
    let mut conn = TcpStream::connect(("127.0.0.1", s.ports.proxy)).unwrap();
    for _ in 0..2 {
        assert!(roundtrip(&mut conn).starts_with("HTTP/1.1 200"));
    }
    let t0 = Instant::now();
    conn.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\nGET /who HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.windows(6).filter(|w| w == b"\r\none\n").count() < 2 {
        let n = conn.read(&mut buf).expect("two responses within 5 s");
        assert_ne!(n, 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "two pipelined responses took {took:?} (the hot window is 1 s)"
    );
}

#[test]
fn a_stalled_request_head_gets_408_and_the_connection_closes() {
    let s = site();
    let mut conn = TcpStream::connect(("127.0.0.1", s.ports.proxy)).unwrap();
    let t0 = Instant::now();
    conn.write_all(b"GET /who HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .unwrap();
    let (got, closed) = read_to_close(&mut conn);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let after = closed.expect("not closed after 408") - t0;
    assert!(
        after >= Duration::from_millis(HEAD_MS - 50),
        "408 after {after:?}"
    );
    // The worker keeps serving others.
    let (code, body) = get(&format!("http://127.0.0.1:{}/who", s.ports.proxy));
    assert_eq!((code, body.as_slice()), (200, b"one\n".as_slice()));
}

fn dataplane_from_file(
    file: &std::path::Path,
    key: &std::path::Path,
    dir: &TempDir,
) -> (ChildGuard, u16) {
    let admin = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnirelay-dataplane"));
    cmd.arg("--snapshot-file")
        .arg(file)
        .arg("--public-key")
        .arg(key)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--workers", "1", "--access-log", "off", "--wait", "2"]);
    let log = dir.path().join(format!("dp-file-{admin}.log"));
    (
        ChildGuard::spawn("omnirelay-dataplane", cmd, &log).unwrap(),
        admin,
    )
}

/// Starts a data plane on `file` that must refuse it: it exits, naming the file and
/// saying `why`, and serves nothing.
fn refused(file: &std::path::Path, key: &std::path::Path, dir: &TempDir, proxy: u16, why: &str) {
    let (mut dp, admin) = dataplane_from_file(file, key, dir);
    assert!(
        omnirelay_test_support::process::wait_until(Duration::from_secs(10), || !dp.is_running()),
        "a data plane started from {}:\n{}",
        file.display(),
        dp.log()
    );
    let log = dp.log();
    assert!(
        log.contains(&file.display().to_string()) && log.contains(why),
        "the error should name {} and say {why:?}:\n{log}",
        file.display()
    );
    for port in [proxy, admin] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} is served after a refused start"
        );
    }
}

#[test]
fn a_data_plane_starts_from_a_snapshot_file_and_refuses_a_bad_one() {
    use omnirelay_proto::v1::SignedSnapshot;
    use prost::Message as _;

    let mut s = site();
    // Save the published snapshot through the control daemon's HTTP pull, then stop the
    // daemon and the data plane: the one started from the file has nobody else to ask,
    // and nobody else serves its port.
    let file = s.dir.path().join("snapshot.bin");
    let out = curl(&[
        "-s",
        "-o",
        file.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{}/v1/snapshot", s.ports.control_admin),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let key = s.dir.path().join("state/snapshot-signing.pub");
    s.dataplane.kill();
    s.control.kill();
    assert!(
        omnirelay_test_support::process::wait_until(Duration::from_secs(5), || {
            TcpStream::connect(("127.0.0.1", s.ports.proxy)).is_err()
        }),
        "the proxy port is still served"
    );

    let (mut dp, admin) = dataplane_from_file(&file, &key, &s.dir);
    assert!(
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], s.ports.proxy)),
            Duration::from_secs(10)
        ),
        "data plane from file did not start:\n{}",
        dp.log()
    );
    // The file's route: "default" to cluster "one", which says "one" at /who.
    let (code, body) = get(&format!("http://127.0.0.1:{}/who", s.ports.proxy));
    assert_eq!(
        (code, body.as_slice()),
        (200, b"one\n".as_slice()),
        "{}",
        dp.log()
    );
    assert!(wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], admin)),
        Duration::from_secs(5)
    ));
    let snap = curl(&["-s", &format!("http://127.0.0.1:{admin}/snapshot")]);
    let v: serde_json::Value = serde_json::from_slice(&snap.stdout).unwrap();
    assert!(v["version"].as_u64().unwrap() >= 1, "{v}");
    assert!(dp.is_running());
    dp.kill();
    assert!(
        omnirelay_test_support::process::wait_until(Duration::from_secs(5), || {
            TcpStream::connect(("127.0.0.1", s.ports.proxy)).is_err()
        }),
        "the proxy port is still served"
    );

    // Bad files: refused at start with the file named and the reason given.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = s.dir.path().join("truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &truncated,
        &key,
        &s.dir,
        s.ports.proxy,
        "snapshot does not decode",
    );

    let mut signed = SignedSnapshot::decode(bytes.as_slice()).unwrap();
    let last = signed.payload.len() - 1;
    signed.payload[last] ^= 0x01;
    let tampered = s.dir.path().join("tampered.bin");
    std::fs::write(&tampered, signed.encode_to_vec()).unwrap();
    refused(
        &tampered,
        &key,
        &s.dir,
        s.ports.proxy,
        "signature does not verify",
    );

    let missing = s.dir.path().join("missing.bin");
    refused(&missing, &key, &s.dir, s.ports.proxy, "reading");
}

/// Makes `io_uring_setup(2)` fail with ENOSYS in the child (x86_64 only; other syscalls
/// and architectures are allowed).
fn deny_io_uring(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SYS_IO_URING_SETUP: u32 = 425;
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 4,
        }, // ld arch
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld nr
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: SYS_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    // SAFETY: runs in the forked child before exec; prctl with a filter that lives on the
    // child's copy of this stack frame until the call returns.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn without_io_uring_the_workers_fall_back_to_epoll_say_so_and_serve() {
    if !cfg!(target_arch = "x86_64") {
        omnirelay_test_support::skip::report("the seccomp filter of this test is x86_64-only");
        return;
    }
    let ports = Ports::new();
    let _nginx = Nginx::start(&nginx_servers(&ports), &[ports.up1, ports.up2]).unwrap();
    let dir = TempDir::new("epoll");
    let cfg = dir.path().join("omnirelay.toml");
    std::fs::write(&cfg, timed_config(&ports, IDLE_MS, HEAD_MS)).unwrap();
    let _control = start_control(&dir, &cfg, &ports);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnirelay-dataplane"));
    cmd.arg("--control")
        .arg(format!("http://127.0.0.1:{}", ports.grpc))
        .arg("--public-key")
        .arg(dir.path().join("state/snapshot-signing.pub"))
        .args(["--admin", &format!("127.0.0.1:{}", ports.dp_admin)])
        .args(["--workers", "2", "--access-log", "off"]);
    deny_io_uring(&mut cmd);
    let dp = ChildGuard::spawn("omnirelay-dataplane", cmd, &dir.path().join("dp.log")).unwrap();
    assert!(
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], ports.proxy)),
            Duration::from_secs(15)
        ),
        "data plane did not start without io_uring:\n{}",
        dp.log()
    );
    let (code, body) = get(&format!("http://127.0.0.1:{}/who", ports.proxy));
    assert_eq!((code, body.as_slice()), (200, b"one\n".as_slice()));
    let log = dp.log();
    assert_eq!(
        log.matches("io_uring unavailable: running on the epoll driver")
            .count(),
        2,
        "one line per worker expected:\n{log}"
    );
    assert!(
        log.contains("driver=\"epoll\"") || log.contains("driver=epoll"),
        "{log}"
    );
    // The idle reaper's shutdown(2) also ends an idle wait on the epoll driver.
    assert_closed_when_idle(ports.proxy);
}
