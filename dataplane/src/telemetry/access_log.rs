//! The access log: one JSON line per request, written by a dedicated thread. Workers hand
//! records over through a bounded channel and never block: when the writer falls behind,
//! the record is dropped and counted.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::Metrics;

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request head arrived.
    pub start: SystemTime,
    /// Listener name.
    pub listener: Arc<str>,
    /// Route name (empty: no route matched).
    pub route: Arc<str>,
    /// Cluster name (empty: none).
    pub cluster: Arc<str>,
    /// Upstream endpoint that answered, if any.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Client address.
    pub client: std::net::SocketAddr,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Whole request duration.
    pub duration: Duration,
    /// Time to the upstream's response head, from the start of the attempt that got it
    /// (for the first attempt: from routing, a microsecond or two before the send).
    pub upstream_time: Option<Duration>,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    /// The request id (generated when absent).
    pub request_id: String,
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl AccessRecord {
    /// The record as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut o = String::with_capacity(256);
        let ts = self.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        o.push_str(&format!(
            "{{\"time\":{}.{:03}",
            ts.as_secs(),
            ts.subsec_millis()
        ));
        for (k, v) in [
            ("listener", &*self.listener),
            ("route", &*self.route),
            ("cluster", &*self.cluster),
            ("method", &self.method),
            ("path", &self.path),
            ("request_id", &self.request_id),
        ] {
            o.push_str(&format!(",\"{k}\":"));
            json_str(&mut o, v);
        }
        o.push_str(",\"client\":");
        json_str(&mut o, &self.client.to_string());
        o.push_str(",\"endpoint\":");
        match self.endpoint {
            Some(e) => json_str(&mut o, &e.to_string()),
            None => o.push_str("null"),
        }
        o.push_str(&format!(
            ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3},\"upstream_ms\":{},\"attempts\":{}}}",
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration.as_secs_f64() * 1e3,
            self.upstream_time
                .map_or("null".to_owned(), |d| format!("{:.3}", d.as_secs_f64() * 1e3)),
            self.attempts
        ));
        o
    }
}

/// The sending side, cloned into every worker.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Records for the writer; `None` tells it to flush and end (see [`AccessLog::close`]).
    tx: Option<mpsc::SyncSender<Option<AccessRecord>>>,
    metrics: Arc<Metrics>,
    /// The writer thread, shared by every clone (see [`AccessLog::close`]).
    writer: Option<Arc<Mutex<Option<JoinHandle<()>>>>>,
    /// Asks the writer to open its file again (see [`AccessLog::reopen`]).
    reopen: Option<Arc<AtomicBool>>,
}

/// Where the writer writes.
enum Sink {
    /// A stream given at start (stdout, a test's buffer).
    Fixed(Box<dyn Write + Send>),
    /// A file, buffered, that can be opened again by path.
    File {
        path: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
    },
}

fn open_append(path: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(std::io::BufWriter::new(file))
}

impl Sink {
    /// Opens the file again (a rotation renamed the old one); on failure, keeps writing
    /// to the one it has.
    fn reopen(&mut self, dropped: &AtomicU64) {
        if let Sink::File { path, file } = self {
            if file.flush().is_err() {
                // What the old file's buffer held is lost with it: counted.
                let lines = file.buffer().iter().filter(|&&b| b == b'\n').count();
                dropped.fetch_add(lines as u64, Ordering::Relaxed);
            }
            match open_append(path) {
                Ok(f) => {
                    *file = f;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "access log not reopened; still writing to the file it had");
                }
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Fixed(w) => w.write(buf),
            Sink::File { file, .. } => file.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Fixed(w) => w.flush(),
            Sink::File { file, .. } => file.flush(),
        }
    }
}

impl AccessLog {
    /// A log that discards everything (access logging off).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        AccessLog {
            tx: None,
            metrics,
            writer: None,
            reopen: None,
        }
    }

    /// Starts the writer thread on `sink`; `capacity` records may wait before new ones are
    /// dropped.
    pub fn start(
        sink: Box<dyn Write + Send>,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        Self::spawn(Sink::Fixed(sink), capacity, metrics)
    }

    /// Starts the writer thread appending to the file at `path`, opened again after
    /// [`AccessLog::reopen`] (a log rotation renamed it).
    pub fn start_file(
        path: PathBuf,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let file = open_append(&path)?;
        Self::spawn(Sink::File { path, file }, capacity, metrics)
    }

    fn spawn(mut sink: Sink, capacity: usize, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Option<AccessRecord>>(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let (reopen_rx, dropped) = (Arc::clone(&reopen), Arc::clone(&metrics));
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut pending = 0usize;
                // Set while writes fail: the failure is logged once, not per line.
                let mut failing = false;
                loop {
                    // Flush when the channel is idle, not per line.
                    let message = if pending > 0 {
                        match rx.recv_timeout(Duration::from_millis(100)) {
                            Ok(m) => Some(m),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    } else {
                        match rx.recv() {
                            Ok(m) => Some(m),
                            Err(_) => break,
                        }
                    };
                    if reopen_rx.swap(false, Ordering::AcqRel) {
                        sink.reopen(&dropped.access_log_dropped);
                    }
                    match message {
                        Some(Some(r)) => {
                            let mut line = r.to_json();
                            line.push('\n');
                            match sink.write_all(line.as_bytes()) {
                                Ok(()) => {
                                    if failing {
                                        tracing::info!("access log writes succeed again");
                                    }
                                    failing = false;
                                    pending += 1;
                                }
                                Err(e) => {
                                    if !failing {
                                        tracing::error!(error = %e, "access log write failed; lines are dropped (and counted) until writes succeed");
                                    }
                                    failing = true;
                                    dropped.access_log_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(None) => break,
                        None => {
                            let _ = sink.flush();
                            pending = 0;
                        }
                    }
                }
                let _ = sink.flush();
            })?;
        Ok(AccessLog {
            tx: Some(tx),
            metrics,
            writer: Some(Arc::new(Mutex::new(Some(writer)))),
            reopen: Some(reopen),
        })
    }

    /// Has the writer open its file again before its next line (SIGUSR1, after a log
    /// rotation); false, doing nothing, for a log that is no file (stdout, off).
    pub fn reopen(&self) -> bool {
        if let Some(r) = &self.reopen {
            r.store(true, Ordering::Release);
        }
        self.reopen.is_some()
    }

    /// Has the writer write every record handed over so far, flush and end, waiting up
    /// to `within` for it; records logged afterwards (by workers still running) are
    /// dropped and counted. Returns whether the writer ended in time.
    pub fn close(mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        let Some((tx, writer)) = self.tx.take().zip(self.writer.take()) else {
            return true;
        };
        // Queued behind the records already handed over (a full queue is waited on).
        loop {
            match tx.try_send(None) {
                Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => break,
                Err(mpsc::TrySendError::Full(_)) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(mpsc::TrySendError::Full(_)) => return false,
            }
        }
        loop {
            let mut handle = writer.lock().unwrap_or_else(|p| p.into_inner());
            match handle.take_if(|h| h.is_finished()) {
                Some(h) => {
                    let _ = h.join();
                    return true;
                }
                None if handle.is_none() => return true,
                None if Instant::now() >= until => return false,
                None => {}
            }
            drop(handle);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether records are written at all (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands a record to the writer; drops and counts it if the writer is behind.
    pub fn log(&self, record: AccessRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(Some(record)).is_err()
        {
            self.metrics
                .access_log_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AccessRecord {
        AccessRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            listener: "public".into(),
            route: "api".into(),
            cluster: "backend".into(),
            endpoint: Some("127.0.0.1:9000".parse().unwrap()),
            client: "127.0.0.1:5555".parse().unwrap(),
            method: "GET".into(),
            path: "/a\"b".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            upstream_time: Some(Duration::from_micros(900)),
            attempts: 1,
            request_id: id.into(),
        }
    }

    #[test]
    fn a_record_is_one_json_object() {
        let line = record("r1").to_json();
        assert!(line.starts_with("{\"time\":1700000000.123,"), "{line}");
        assert!(line.contains("\"path\":\"/a\\\"b\""), "{line}");
        assert!(line.contains("\"endpoint\":\"127.0.0.1:9000\""));
        assert!(line.contains("\"status\":200"));
        assert!(line.contains("\"duration_ms\":1.500"));
        assert!(line.contains("\"request_id\":\"r1\""));
        assert!(line.ends_with('}'));
    }

    /// A sink that blocks until released, to make the writer fall behind.
    struct Gate(Arc<std::sync::Mutex<()>>, Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _g = self.0.lock().unwrap();
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_writer_drops_and_counts_instead_of_blocking() {
        let metrics = Arc::new(Metrics::default());
        let gate = Arc::new(std::sync::Mutex::new(()));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = gate.lock().unwrap();
        let log = AccessLog::start(
            Box::new(Gate(Arc::clone(&gate), Arc::clone(&out))),
            4,
            Arc::clone(&metrics),
        )
        .unwrap();
        for i in 0..50 {
            log.log(record(&format!("r{i}")));
        }
        let dropped = metrics.access_log_dropped.load(Ordering::Relaxed);
        assert!(dropped >= 40, "dropped {dropped}");
        drop(held);
        drop(log);
        std::thread::sleep(Duration::from_millis(300));
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written.lines().count() as u64 + dropped,
            50,
            "every record written or counted"
        );
    }

    /// A sink whose writes fail while `broken` is set (a full disk).
    struct Flaky(Arc<AtomicBool>, Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("no space left"));
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A failed write drops (and counts) its line; the writer goes on with the next.
    #[test]
    fn a_failed_write_costs_its_line_not_the_log() {
        let metrics = Arc::new(Metrics::default());
        let broken = Arc::new(AtomicBool::new(true));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = AccessLog::start(
            Box::new(Flaky(Arc::clone(&broken), Arc::clone(&out))),
            16,
            Arc::clone(&metrics),
        )
        .unwrap();
        log.log(record("lost"));
        let until = Instant::now() + Duration::from_secs(5);
        while metrics.access_log_dropped.load(Ordering::Relaxed) == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(metrics.access_log_dropped.load(Ordering::Relaxed), 1);
        broken.store(false, Ordering::Relaxed);
        log.log(record("kept"));
        assert!(log.close(Duration::from_secs(5)));
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(written.contains("\"request_id\":\"kept\""), "{written}");
        assert!(!written.contains("lost"), "{written}");
    }
}
