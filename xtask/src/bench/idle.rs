//! Memory per idle keep-alive connection: open N client connections to a proxy, each sends
//! one request and reads its response, all are held open, and the proxy's resident memory
//! (VmRSS summed over its processes) is compared with what it was just before, on a proxy
//! started afresh for this test (after load, freed memory would absorb the connections).

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{http, peers::Running};

/// Upper bound for opening all connections (the slowest peer needs a few seconds for 10k).
const OPEN_BUDGET: Duration = Duration::from_secs(120);

/// What the idle-connection test found for one proxy.
#[derive(Debug, Clone, Default)]
pub struct RssReport {
    pub peer: String,
    pub idle_kib: u64,
    pub before_kib: u64,
    pub with_conns_kib: u64,
    pub wanted: u32,
    pub opened: u32,
    pub still_open: u32,
    pub open_s: f64,
    pub error: Option<String>,
    /// Why fewer connections than asked were opened (a proxy's connection cap).
    pub note: Option<String>,
}

impl RssReport {
    pub fn kib_per_conn(&self) -> Option<f64> {
        (self.opened > 0 && self.error.is_none())
            .then(|| (self.with_conns_kib as f64 - self.before_kib as f64) / f64::from(self.opened))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "proxy": self.peer,
            "status": if self.error.is_none() { "ok" } else { "failed" },
            "error": self.error,
            "idle_kib": self.idle_kib,
            "before_kib": self.before_kib,
            "with_conns_kib": self.with_conns_kib,
            "connections": self.wanted,
            "opened": self.opened,
            "still_open": self.still_open,
            "open_s": self.open_s,
            "note": self.note,
            "kib_per_conn": self.kib_per_conn(),
        })
    }
}

/// Opens `n` idle keep-alive connections to `r` (one GET of `path` each) and measures.
pub fn measure(r: &mut Running, n: u32, path: &str, idle_kib: u64) -> RssReport {
    let mut rep = RssReport {
        peer: r.peer.name().into(),
        idle_kib,
        before_kib: r.proxy.rss_kib(),
        ..Default::default()
    };
    let mut n = n;
    if let Some((cap, why)) = r.conn_cap.clone().filter(|(cap, _)| *cap < n) {
        rep.note = Some(format!("{cap} connections instead of {n}: {why}"));
        n = cap;
    }
    rep.wanted = n;
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n as usize);
    for i in 0..n {
        if started.elapsed() > OPEN_BUDGET {
            rep.error = Some(format!(
                "only {i} of {n} connections within {OPEN_BUDGET:?}"
            ));
            break;
        }
        let opened = http::connect(r.addr, Duration::from_secs(5)).and_then(|mut s| {
            let reply = http::get(&mut s, path)?;
            anyhow::ensure!(reply.status == 200, "status {}", reply.status);
            Ok(s)
        });
        match opened {
            Ok(s) => conns.push(s),
            Err(e) => {
                rep.error = Some(format!("connection {i} of {n}: {e:#}"));
                break;
            }
        }
    }
    rep.opened = u32::try_from(conns.len()).unwrap_or(u32::MAX);
    rep.open_s = started.elapsed().as_secs_f64();
    // Let the proxy settle (deferred frees, buffer shrinking) before measuring.
    std::thread::sleep(Duration::from_secs(1));
    rep.with_conns_kib = r.proxy.rss_kib();
    rep.still_open = conns.iter().filter(|s| is_open(s)).count() as u32;
    if rep.error.is_none() && rep.still_open < rep.opened {
        rep.error = Some(format!(
            "the proxy closed {} of {} idle connections",
            rep.opened - rep.still_open,
            rep.opened
        ));
    }
    if !r.proxy.alive() {
        rep.error = Some(format!("the proxy died:\n{}", r.proxy.log_tail(10)));
    }
    drop(conns);
    std::thread::sleep(Duration::from_millis(500));
    rep
}

/// Whether the peer has not closed `s` (no EOF, no error, nothing unread).
fn is_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}
