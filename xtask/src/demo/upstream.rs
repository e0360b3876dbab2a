//! A tiny HTTP/1.1 upstream for the demo: answers every request with a line naming itself,
//! with keep-alive, on a thread per connection. Only the demo uses it; the tests use nginx.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// A running demo upstream; stops accepting when dropped.
#[derive(Debug)]
pub struct DemoUpstream {
    stop: Arc<AtomicBool>,
}

impl DemoUpstream {
    /// Listens on `addr` and answers "hello from NAME".
    pub fn start(addr: SocketAddr, name: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("demo upstream cannot listen on {addr}: {e}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || serve(s, name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(DemoUpstream { stop })
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let mut request = String::new();
        // Request line and headers; the demo sends no bodies.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {
                    if request.is_empty() {
                        request = line.trim().to_owned();
                    }
                }
            }
        }
        let body = format!("hello from {name} ({request})\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
