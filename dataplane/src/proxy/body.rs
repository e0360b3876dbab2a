//! Streaming bodies through the proxy without buffering them whole: the request body from
//! the client to the upstream, the response body back. Bodies are decoded (validating the
//! framing) and re-framed for the other side, so a smuggled or malformed body never
//! reaches a peer verbatim.

use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use monoio::net::TcpStream;

use super::{
    deadline::{Timer, within},
    downstream::{self, Downstream},
    io::Stream,
    worker::WorkerCtx,
};
use crate::{
    http1::{self, BodyDecoder, Framing, Http1Error, RequestHead, ResponseHead, Version},
    snapshot::HeaderEdits,
};

/// A failure on the client side of a body transfer.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body violates HTTP/1.1 (or a limit).
    Http(Http1Error),
    /// The client went away.
    Io,
    /// The client stopped sending (or reading).
    Timeout,
}

/// Why a write did not complete.
enum WriteError {
    Io,
    /// The deadline passed with the peer not reading.
    TimedOut,
}

/// [`Stream::send_all`] bounded by `deadline`: a peer that stops reading cannot hold the
/// request, its buffers and connections past it. A timed-out write's buffer stays with
/// the cancelled operation (the runtime frees it when that ends); an empty one comes back.
async fn send_by<S: Stream>(
    stream: &mut S,
    buf: BytesMut,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> (Result<(), WriteError>, BytesMut) {
    match within(timer, deadline, stream.send_all(buf)).await {
        Ok((res, buf)) => (res.map_err(|_| WriteError::Io), buf),
        Err(_) => (Err(WriteError::TimedOut), BytesMut::new()),
    }
}

/// [`send_by`], giving the buffer back cleared, for reuse.
async fn write_by<S: Stream>(
    stream: &mut S,
    out: BytesMut,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> (Result<(), WriteError>, BytesMut) {
    let (res, mut out) = send_by(stream, out, deadline, timer).await;
    out.clear();
    (res, out)
}

impl From<WriteError> for SendError {
    /// A failed write to the upstream.
    fn from(e: WriteError) -> SendError {
        match e {
            WriteError::Io => SendError::Upstream,
            WriteError::TimedOut => SendError::UpstreamTimeout,
        }
    }
}

/// Sending the request failed on this side or that.
pub(crate) enum SendError {
    Upstream,
    /// The upstream did not take the request before the deadline.
    UpstreamTimeout,
    Client(BodyError),
}

/// The most of a request body kept for a retry (Envoy keeps up to its connection buffer
/// limit, 1 MiB by default; a larger body is not retried after it went up).
pub(crate) const KEEP_LIMIT: usize = 64 * 1024;

/// The request body's state across attempts.
pub(crate) struct RequestBody {
    framing: Framing,
    decoder: BodyDecoder,
    expect_continue: bool,
    started: bool,
    bytes: u64,
    /// The body as it went up (framed for the upstream, without a chunked body's last
    /// chunk), while it fits in [`KEEP_LIMIT`]: a later attempt sends it again.
    kept: Option<Vec<u8>>,
}

impl RequestBody {
    /// The body of a request framed as `framing`; `keep`: keep it for a retry (when it
    /// fits).
    pub fn new(
        framing: Framing,
        limits: &http1::Limits,
        expect_continue: bool,
        keep: bool,
    ) -> Self {
        let keep = keep
            && match framing {
                Framing::None | Framing::CloseDelimited => false,
                Framing::ContentLength(n) => n <= KEEP_LIMIT as u64,
                Framing::Chunked => true,
            };
        RequestBody {
            framing,
            decoder: BodyDecoder::new(framing, limits),
            expect_continue,
            started: false,
            bytes: 0,
            kept: keep.then(Vec::new),
        }
    }

    /// Whether any body byte was taken from the client.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether another attempt can send the request again: it has no body, or its body
    /// was read whole and kept.
    pub fn replayable(&self) -> bool {
        !self.has_body() || (self.decoder.is_done() && self.kept.is_some())
    }

    /// Whether the request has a body not yet read whole.
    pub fn unread(&self) -> bool {
        self.has_body() && !self.decoder.is_done()
    }

    /// Body bytes received from the client.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the request has a body to stream after its head.
    pub fn has_body(&self) -> bool {
        self.framing.has_body()
    }

    /// Writes the head of a request without a body, from its own buffer, which comes
    /// back unchanged (for a retry).
    pub async fn send_head(
        &mut self,
        up: &mut TcpStream,
        head: &mut BytesMut,
        deadline: Instant,
        timer: &mut Timer<'_>,
    ) -> Result<(), SendError> {
        let (res, written) = send_by(up, std::mem::take(head), deadline, timer).await;
        *head = written;
        res.map_err(SendError::from)
    }

    /// Answers `Expect: 100-continue` on this hop, before the first body byte is asked
    /// for (the upstream's own 100 is skipped later).
    pub async fn answer_expectation(
        &mut self,
        ds: &mut Downstream,
        deadline: Instant,
        timer: &mut Timer<'_>,
    ) -> Result<(), SendError> {
        if self.expect_continue && ds.buf.is_empty() && !self.started {
            self.expect_continue = false;
            let cont = |out: &mut BytesMut| out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            write_interim(ds.client_side(), cont, deadline, timer)
                .await
                .map_err(SendError::Client)?;
        }
        Ok(())
    }

    /// Writes `out` (the request head) and streams the body after it, from the client
    /// (`client`, with `client_buf` holding what was read of it already) to `up`. On a
    /// later attempt the kept body goes up again instead.
    #[allow(clippy::too_many_arguments)]
    pub async fn pump<C: Stream, U: Stream>(
        &mut self,
        ctx: &WorkerCtx,
        client: &mut C,
        client_buf: &mut BytesMut,
        up: &mut U,
        mut out: BytesMut,
        deadline: Instant,
        timer: &mut Timer<'_>,
    ) -> Result<(), SendError> {
        let chunked = self.framing == Framing::Chunked;
        if self.started
            && let Some(kept) = &self.kept
        {
            out.extend_from_slice(kept);
        }
        loop {
            while !self.decoder.is_done() && !client_buf.is_empty() {
                let d = self
                    .decoder
                    .decode(client_buf)
                    .map_err(|e| SendError::Client(BodyError::Http(e)))?;
                if d.consumed == 0 {
                    break;
                }
                self.started = true;
                self.bytes += d.data.len() as u64;
                let at = out.len();
                let piece = take_piece(client_buf, &d, &mut out, chunked);
                if let Some(kept) = &mut self.kept {
                    let sent = piece.as_deref().unwrap_or(&out[at..]);
                    if kept.len() + sent.len() <= KEEP_LIMIT {
                        kept.extend_from_slice(sent);
                    } else {
                        self.kept = None;
                    }
                }
                if let Some(piece) = piece {
                    let (res, _) = send_by(up, piece, deadline, timer).await;
                    res.map_err(SendError::from)?;
                }
            }
            if self.decoder.is_done() {
                if chunked {
                    out.extend_from_slice(http1::LAST_CHUNK);
                }
                let (res, out) = write_by(up, out, deadline, timer).await;
                ctx.give_buf(out);
                return res.map_err(SendError::from);
            }
            if !out.is_empty() {
                let (res, o) = write_by(up, out, deadline, timer).await;
                out = o;
                res.map_err(SendError::from)?;
            }
            let buf = std::mem::take(client_buf);
            match within(timer, deadline, client.read_more(buf)).await {
                Ok((Ok(0), b)) => {
                    *client_buf = b;
                    let e = self
                        .decoder
                        .finish()
                        .err()
                        .unwrap_or(Http1Error::IncompleteBody);
                    return Err(SendError::Client(BodyError::Http(e)));
                }
                Ok((Ok(_), b)) => *client_buf = b,
                Ok((Err(_), _)) => return Err(SendError::Client(BodyError::Io)),
                Err(_) => return Err(SendError::Client(BodyError::Timeout)),
            }
        }
    }
}

/// Takes the piece `d` that was decoded from the front of `buf` off it, for the peer. When
/// nothing is staged in `out` and the piece is all data (no framing to drop or add), its
/// bytes are handed back, to be sent from where they were read: a large body is not
/// copied once more in user space. Otherwise they are copied into `out` (as a chunk when
/// `chunked`). The piece shares `buf`'s allocation; once it is sent and dropped, `buf`
/// takes the whole allocation back at its next read.
fn take_piece(
    buf: &mut BytesMut,
    d: &http1::Decoded,
    out: &mut BytesMut,
    chunked: bool,
) -> Option<BytesMut> {
    if !chunked && out.is_empty() && d.data == (0..d.consumed) {
        return Some(buf.split_to(d.consumed));
    }
    let data = &buf[d.data.clone()];
    if chunked {
        if !data.is_empty() {
            http1::encode_chunk(data, out);
        }
    } else {
        out.extend_from_slice(data);
    }
    buf.advance(d.consumed);
    None
}

/// The client's side of a response: its stream and the staging buffer for writes to it.
pub(crate) struct ToClient<'a, C> {
    pub stream: &'a mut C,
    pub out: &'a mut BytesMut,
}

/// Writes an interim (1xx) response, made by `fill` into the client's output buffer, to
/// the client by `deadline`.
async fn write_interim<C: Stream>(
    client: ToClient<'_, C>,
    fill: impl FnOnce(&mut BytesMut),
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> Result<(), BodyError> {
    let mut out = std::mem::take(client.out);
    out.clear();
    fill(&mut out);
    let (res, out) = write_by(client.stream, out, deadline, timer).await;
    *client.out = out;
    res.map_err(|e| match e {
        WriteError::Io => BodyError::Io,
        WriteError::TimedOut => BodyError::Timeout,
    })
}

/// Relays an upstream's interim response (103 Early Hints, 102) to an HTTP/1.1 client,
/// without its hop-by-hop fields. An HTTP/1.0 client gets none (RFC 9110 §15.2).
pub(crate) async fn relay_interim<C: Stream>(
    resp: &ResponseHead,
    client_version: Version,
    client: ToClient<'_, C>,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> Result<(), BodyError> {
    if client_version == Version::Http10 {
        return Ok(());
    }
    let head = |out: &mut BytesMut| http1::write_response_head(resp, Framing::None, &[], &[], out);
    write_interim(client, head, deadline, timer).await
}

/// What a response owes the client that asked for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply<'r> {
    /// The request was a HEAD (the response has no body, whatever its framing says).
    pub head_request: bool,
    /// The request's HTTP version.
    pub version: Version,
    /// The connection stays open after the response: the client asked for it and no drain
    /// is announced (clients then move to other instances before the listeners close).
    pub keep_alive: bool,
    /// The route's fields set and removed on the response.
    pub edits: Option<&'r HeaderEdits>,
}

impl<'r> Reply<'r> {
    /// The reply to `request` on `ctx`'s worker, with the route's response `edits`.
    pub fn to(request: &RequestHead, ctx: &WorkerCtx, edits: Option<&'r HeaderEdits>) -> Self {
        Reply {
            head_request: request.is_head(),
            version: request.version(),
            keep_alive: request.keep_alive() && !ctx.drain.is_announced(),
            edits,
        }
    }
}

/// Streams the response `resp` (its head read into `up_buf`, which holds what came after
/// it) to the client. Returns (body bytes sent, whether the client connection may
/// continue, whether the upstream connection may be pooled). The head and the buffer go
/// back to `ctx`'s pool whole (the head points into the buffer's allocation, so it is
/// dropped first).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_response<U: Stream, C: Stream>(
    ctx: &WorkerCtx,
    resp: ResponseHead,
    reply: Reply<'_>,
    up: &mut U,
    up_buf: BytesMut,
    client: ToClient<'_, C>,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> (u64, bool, bool) {
    let (bytes, client_ok, reusable, up_buf) =
        relay(&resp, reply, up, up_buf, client, deadline, timer).await;
    drop(resp);
    ctx.give_buf(up_buf);
    (bytes, client_ok, reusable)
}

/// [`relay_response`], giving the read buffer back to the caller.
async fn relay<U: Stream, C: Stream>(
    resp: &ResponseHead,
    reply: Reply<'_>,
    up: &mut U,
    mut up_buf: BytesMut,
    client: ToClient<'_, C>,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> (u64, bool, bool, BytesMut) {
    let client_version = reply.version;
    let framing = match resp.framing(reply.head_request) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("invalid upstream response framing: {e}");
            downstream::send_error(client, 502, "invalid response from upstream", timer).await;
            return (0, false, false, up_buf);
        }
    };
    let ds_framing = http1::downstream_framing(framing, client_version);
    let ToClient {
        stream: ds_stream,
        out: ds_out,
    } = client;
    let mut out = std::mem::take(ds_out);
    out.clear();
    // Say what becomes of the client connection when the request asked (RFC 9112 §9.6)
    // or when HTTP/1.0 keeps it open only on request (§9.3).
    let stays = reply.keep_alive && ds_framing != Framing::CloseDelimited;
    let connection: &[(&str, &[u8])] = match (stays, client_version) {
        (false, _) if ds_framing != Framing::CloseDelimited => &[("connection", b"close")],
        (true, Version::Http10) => &[("connection", b"keep-alive")],
        _ => &[],
    };
    let (with_route, remove) = match reply.edits {
        Some(e) => (Some(e.with_set(connection)), &e.remove[..]),
        None => (None, &[][..]),
    };
    let extras = with_route.as_deref().unwrap_or(connection);
    http1::write_response_head(resp, ds_framing, extras, remove, &mut out);
    let mut decoder = BodyDecoder::new(framing, &http1::Limits::default());
    let chunked = ds_framing == Framing::Chunked;
    let mut sent = 0u64;
    let complete;
    loop {
        while !decoder.is_done() && !up_buf.is_empty() {
            let d = match decoder.decode(&up_buf) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("invalid upstream response body: {e}");
                    let (_, o) = write_by(ds_stream, out, deadline, timer).await;
                    *ds_out = o;
                    return (sent, false, false, up_buf);
                }
            };
            if d.consumed == 0 {
                break;
            }
            sent += d.data.len() as u64;
            if let Some(piece) = take_piece(&mut up_buf, &d, &mut out, chunked) {
                let (res, _) = send_by(ds_stream, piece, deadline, timer).await;
                if res.is_err() {
                    *ds_out = out;
                    return (sent, false, false, up_buf);
                }
            }
        }
        if decoder.is_done() {
            complete = true;
            break;
        }
        if !out.is_empty() {
            let (res, o) = write_by(ds_stream, out, deadline, timer).await;
            out = o;
            if res.is_err() {
                *ds_out = out;
                return (sent, false, false, up_buf);
            }
        }
        match within(timer, deadline, up.read_more(up_buf)).await {
            Ok((Ok(0), b)) => {
                up_buf = b;
                complete = decoder.finish().is_ok() && framing == Framing::CloseDelimited;
                break;
            }
            Ok((Ok(_), b)) => up_buf = b,
            Ok((Err(_), b)) => {
                let (_, o) = write_by(ds_stream, out, deadline, timer).await;
                *ds_out = o;
                return (sent, false, false, b);
            }
            Err(_) => {
                let (_, o) = write_by(ds_stream, out, deadline, timer).await;
                *ds_out = o;
                return (sent, false, false, BytesMut::new());
            }
        }
    }
    if complete && chunked {
        out.extend_from_slice(http1::LAST_CHUNK);
    }
    let (res, o) = write_by(ds_stream, out, deadline, timer).await;
    *ds_out = o;
    let client_ok = res.is_ok() && complete && stays;
    let reusable =
        complete && framing != Framing::CloseDelimited && resp.keep_alive() && up_buf.is_empty();
    (sent, client_ok, reusable, up_buf)
}
