//! A minimal HTTP/1.1 client for readiness checks and the idle-connection test: one GET on
//! a keep-alive connection, the response read to its end (content-length or chunked).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Status and body length of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body_len: usize,
}

/// Connects to `addr` (timeouts of `timeout` for connect, read and write).
pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends `GET path` on `s` and reads the whole response, leaving the connection open.
pub fn get(s: &mut TcpStream, path: &str) -> anyhow::Result<Reply> {
    get_reading(s, path).map(|(r, _)| r)
}

/// [`get`], returning the response body too (as sent: chunked framing is not removed).
pub fn get_reading(s: &mut TcpStream, path: &str) -> anyhow::Result<(Reply, Vec<u8>)> {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: omnirelay-bench\r\n\r\n"
    )?;
    read_response_body(s)
}

/// Sends `POST path` with `body` on `s` and reads the whole response.
pub fn post(s: &mut TcpStream, path: &str, body: &[u8]) -> anyhow::Result<Reply> {
    post_reading(s, path, body).map(|(r, _)| r)
}

/// [`post`], returning the response body too (as sent: chunked framing is not removed).
pub fn post_reading(
    s: &mut TcpStream,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(Reply, Vec<u8>)> {
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: omnirelay-bench\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    read_response_body(s)
}

/// Reads one whole response from `s`, with its body.
fn read_response_body(s: &mut TcpStream) -> anyhow::Result<(Reply, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).context("reading the response head")?;
        if n == 0 {
            bail!(
                "connection closed before the response head ({} bytes)",
                buf.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .map(str::to_owned)
    };
    let mut body = buf.split_off(head_end);
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        while body.len() < len {
            let n = s.read(&mut chunk).context("reading the body")?;
            if n == 0 {
                bail!("connection closed after {} of {len} body bytes", body.len());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        return Ok((
            Reply {
                status,
                body_len: len,
            },
            body,
        ));
    }
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        while find(&body, b"0\r\n\r\n").is_none() {
            let n = s.read(&mut chunk).context("reading the chunked body")?;
            if n == 0 {
                bail!("connection closed inside a chunked body");
            }
            body.extend_from_slice(&chunk[..n]);
        }
        return Ok((
            Reply {
                status,
                body_len: dechunked_len(&body),
            },
            body,
        ));
    }
    bail!("response has neither content-length nor chunked framing")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the data in a complete chunked body.
fn dechunked_len(mut body: &[u8]) -> usize {
    let mut total = 0;
    while let Some(eol) = find(body, b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        total += size;
        body = body.get(eol + 2 + size + 2..).unwrap_or_default();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_lengths_add_up() {
        assert_eq!(
            dechunked_len(b"5\r\nhello\r\na;x=1\r\n0123456789\r\n0\r\n\r\n"),
            15
        );
        assert_eq!(dechunked_len(b"0\r\n\r\n"), 0);
    }
}
