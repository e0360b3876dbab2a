//! Upstreams that answer while the request body is still coming: one that streams its
//! response as it reads (full duplex, with flow control), one that refuses at once and
//! stops reading. curl is the client.
//!
//! The upstream is this file's own small server: no packaged server here answers an
//! HTTP/1.1 request before reading its body and keeps the connection open without reading
//! (nginx reads and drops the rest, or closes), and none streams an echo while it reads.
//! Its socket buffers are small, so an upstream that is not read stops reading at once.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Stack, curl, write_config};
use omnirelay_test_support::{Capability, require_caps};
use sha2::{Digest as _, Sha256};

/// Socket buffer size of the test upstream's connections.
const SMALL_BUFFER: libc::c_int = 32 * 1024;
/// Upload size: several times what loopback buffers in both directions can hold.
const UPLOAD: usize = 48 << 20;
/// How long the refusing upstream holds a connection open without reading.
const HOLD: Duration = Duration::from_secs(20);

/// The test upstream: `/echo` answers 200 at once and streams the body back (chunked) as
/// it reads it; `/refuse` answers 413 at once, then holds the connection without reading;
/// `/refuse-and-close` answers 413 and closes at once.
struct Upstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
                    set_buffer(&conn, opt);
                }
                let stop = Arc::clone(&stop2);
                std::thread::spawn(move || serve(conn, &stop));
            }
        });
        Upstream { port, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn set_buffer(conn: &TcpStream, opt: libc::c_int) {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&SMALL_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {opt}");
}

/// Serves one request on `conn` (the connection closes after it).
fn serve(mut conn: TcpStream, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let Ok(n) = conn.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    if text.starts_with("post /refuse-and-close ") {
        // Closing with the body unread resets the connection: the proxy's next write
        // fails, with the answer already waiting to be read.
        let _ = conn
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\n\r\ntoo large\n");
        return;
    }
    if text.starts_with("post /refuse ") {
        let _ = conn
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\n\r\ntoo large\n");
        let until = Instant::now() + HOLD;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    // Echo: the head at once, then each piece of the body as it arrives.
    if conn
        .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        .is_err()
    {
        return;
    }
    let mut pending = head[body_start..].to_vec();
    let mut left = length;
    loop {
        let take = pending.len().min(left);
        if take > 0 {
            let mut chunk = format!("{take:x}\r\n").into_bytes();
            chunk.extend_from_slice(&pending[..take]);
            chunk.extend_from_slice(b"\r\n");
            if conn.write_all(&chunk).is_err() {
                return;
            }
            left -= take;
        }
        if left == 0 {
            let _ = conn.write_all(b"0\r\n\r\n");
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending = buf[..n].to_vec(),
        }
    }
}

/// A stack whose default route goes to `up`, with a 60 s request timeout (longer than
/// any of these exchanges should take; a stall shows as the timeout's 504).
fn stack_for(up: &Upstream) -> Stack {
    let stack = Stack::start();
    let v = stack.dp_version();
    let config = common::config(&stack.ports, "duplex").replace(
        "retry = { max_retries = 2, on = [\"connect-failure\"] }",
        "timeouts = { request_ms = 60000 }",
    ) + &format!(
        "\n[[clusters]]\nname = \"duplex\"\nendpoints = [\"127.0.0.1:{}\"]\n",
        up.port
    );
    write_config(&stack.config_path, &config);
    stack.wait_dp_version_above(v);
    stack
}

fn upload_file(stack: &Stack) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..UPLOAD).map(|i| (i % 253) as u8).collect();
    let file = stack.dir.path().join("upload");
    std::fs::write(&file, &data).unwrap();
    (file, data)
}

/// An upstream that streams its response while it reads the body gets the whole body,
/// and the client the whole echo: the proxy reads the response while it writes the body
/// (writing the body first would stall both sides once their buffers fill).
#[test]
fn a_full_duplex_upstream_streams_its_answer_while_the_body_goes_up() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let up = Upstream::start();
    let stack = stack_for(&up);
    let (file, data) = upload_file(&stack);
    let out = stack.dir.path().join("echo");
    let started = Instant::now();
    let res = curl(&[
        "-s",
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{http_code}",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &stack.url("/echo"),
    ]);
    assert_eq!(String::from_utf8_lossy(&res.stdout), "200");
    let echoed = std::fs::read(&out).unwrap();
    assert_eq!(echoed.len(), data.len(), "echo length");
    assert!(
        Sha256::digest(&echoed) == Sha256::digest(&data),
        "echo differs"
    );
    eprintln!("{} MiB echoed in {:?}", UPLOAD >> 20, started.elapsed());
}

/// An upstream that refuses an upload at once (413) and then neither reads nor closes:
/// the client gets the refusal (not a 504 at the deadline), and the connection closes.
#[test]
fn an_upstream_refusing_an_upload_without_reading_it_answers_at_once() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let up = Upstream::start();
    let stack = stack_for(&up);
    let (file, _) = upload_file(&stack);
    for expect in ["Expect: 100-continue", "Expect:"] {
        let text = common::upload(&stack.url("/refuse"), &file, expect);
        assert_eq!(text, "too large\n\n413", "{expect}");
    }
    // A small upload (all of it sent before the answer comes) is refused the same way.
    let res = curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-d",
        "x",
        &stack.url("/refuse"),
    ]);
    assert_eq!(String::from_utf8_lossy(&res.stdout), "too large\n\n413");
}

/// An upstream that refuses an upload and closes at once (resetting the connection, the
/// body unread): its answer reaches the client, not a 502 for the failed write that
/// follows the reset.
#[test]
fn an_upstream_refusing_an_upload_and_closing_is_heard() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let up = Upstream::start();
    let stack = stack_for(&up);
    let (file, _) = upload_file(&stack);
    for i in 0..5 {
        let text = common::upload(&stack.url("/refuse-and-close"), &file, "Expect:");
        assert_eq!(text, "too large\n\n413", "attempt {i}");
    }
}
