//! A client connection: reads request heads, rejects bad input with the right 4xx and
//! closes, and hands good requests to [`super::forward`].
//!
//! Between requests a connection is *hot* or *idle*. Right after a response on a connection
//! already reused (its second request or later) it is hot: it keeps its buffers and reads
//! the next head directly, so a busy keep-alive connection costs one read per request. If nothing arrives within `client_hot_read` the read is
//! cancelled, the buffers go back to the worker's pool and the connection becomes idle: it
//! waits for readability holding no buffer, then reads.

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use monoio::{io::Canceller, net::TcpStream};

use std::os::fd::AsRawFd as _;

use super::{
    body::ToClient,
    deadline::{self, Timer, within},
    forward,
    idle::IdleToken,
    io::{self, Stream},
    slot::FutureSlot,
    worker::WorkerCtx,
};
use crate::http1::{self, Http1Error, LocalReply, ParseStatus, RequestHead};

/// How long an error response may take to write (its connection closes after it).
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client side of one connection.
pub(crate) struct Downstream {
    pub stream: TcpStream,
    /// Bytes read but not consumed (the start of the next head, or body bytes).
    pub buf: BytesMut,
    /// Staging buffer for writes to the client.
    pub out: BytesMut,
    pub peer: SocketAddr,
    /// Cancels a hot connection's pending read when the hot window passes (made on first
    /// use, dropped when the connection cools).
    pub canceller: Option<Canceller>,
}

impl Downstream {
    /// Sends a minimal error response with `connection: close` (see [`send_error`]).
    pub async fn send_error(&mut self, status: u16, reason: &str, timer: &mut Timer<'_>) {
        send_error(self.client_side(), status, reason, timer).await;
    }

    /// Sends the proxy's own response `to` a request (see [`send_local`]); true when it
    /// went out whole.
    pub async fn send_local(
        &mut self,
        status: u16,
        reason: &str,
        to: LocalReply,
        timer: &mut Timer<'_>,
    ) -> bool {
        send_local(self.client_side(), status, reason, to, timer).await
    }

    /// Sends a response of the proxy's own making `to` a request: `status`, the
    /// `fields` and the `body` (see [`http1::write_own_response`]); true when it went out
    /// whole, within [`ERROR_WRITE_TIMEOUT`].
    pub async fn send_own(
        &mut self,
        status: u16,
        fields: &[(&str, &[u8])],
        body: &[u8],
        to: LocalReply,
        timer: &mut Timer<'_>,
    ) -> bool {
        let write = |out: &mut BytesMut| http1::write_own_response(status, fields, body, to, out);
        send_within(self.client_side(), write, timer, ERROR_WRITE_TIMEOUT).await
    }

    /// The client's side of a response.
    pub fn client_side(&mut self) -> ToClient<'_, TcpStream> {
        ToClient {
            stream: &mut self.stream,
            out: &mut self.out,
        }
    }
}

/// Sends a minimal error response with `connection: close` to `client` (see
/// [`send_local`]).
pub(crate) async fn send_error<C: Stream>(
    client: ToClient<'_, C>,
    status: u16,
    reason: &str,
    timer: &mut Timer<'_>,
) {
    send_local(client, status, reason, LocalReply::CLOSE, timer).await;
}

/// Sends the proxy's own minimal response `to` a request, giving up after
/// [`ERROR_WRITE_TIMEOUT`] on the request's `timer` (a client that does not read cannot
/// hold the connection). Returns whether it went out whole; when not, the connection
/// must close.
pub(crate) async fn send_local<C: Stream>(
    client: ToClient<'_, C>,
    status: u16,
    reason: &str,
    to: LocalReply,
    timer: &mut Timer<'_>,
) -> bool {
    let write = |out: &mut BytesMut| http1::write_local_response(status, reason, to, out);
    send_within(client, write, timer, ERROR_WRITE_TIMEOUT).await
}

/// Sends what `write` puts in `client`'s buffer within `limit`; whether it went out whole.
async fn send_within<C: Stream>(
    client: ToClient<'_, C>,
    write: impl FnOnce(&mut BytesMut),
    timer: &mut Timer<'_>,
    limit: Duration,
) -> bool {
    let mut out = std::mem::take(client.out);
    out.clear();
    write(&mut out);
    let until = Instant::now() + limit;
    let written = within(timer, until, client.stream.send_all(out)).await;
    // Timed out: the buffer went with the cancelled write; the connection closes.
    match written {
        Ok((sent, mut out)) => {
            out.clear();
            *client.out = out;
            sent.is_ok()
        }
        Err(_) => {
            *client.out = BytesMut::new();
            false
        }
    }
}

/// The most a request body may take on the wire (with its chunk framing, when chunked)
/// for the proxy to read and drop it after answering the request itself, so the
/// connection can carry the next request (nginx discards any size; this bounds what a
/// refused request can cost).
pub(crate) const DISCARD_MAX: u64 = 64 * 1024;

/// How long the rest of such a body may take to arrive.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads and drops the body, framed as `framing`, of the request just answered (the bytes
/// in `ds.buf` first), leaving what follows it (a pipelined request) in `ds.buf`. False
/// when it did not all arrive within [`DISCARD_TIMEOUT`], took more than [`DISCARD_MAX`]
/// bytes, was malformed, or the client closed: the connection then closes.
pub(crate) async fn discard_body(
    ds: &mut Downstream,
    framing: http1::Framing,
    timer: &mut Timer<'_>,
) -> bool {
    let until = Instant::now() + DISCARD_TIMEOUT;
    // Data never takes more than the wire: a chunk announced larger fails at its size.
    let limits = http1::Limits {
        max_body_bytes: Some(DISCARD_MAX),
        ..http1::Limits::default()
    };
    let mut body = http1::BodyDecoder::new(framing, &limits);
    let mut budget = DISCARD_MAX;
    loop {
        match drop_buffered(&mut body, &mut ds.buf, &mut budget) {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
        let buf = std::mem::take(&mut ds.buf);
        match within(timer, until, io::read_more(&mut ds.stream, buf)).await {
            Ok((Ok(read), b)) if read > 0 => ds.buf = b,
            Ok((_, b)) => {
                ds.buf = b;
                return false;
            }
            // The buffer went with the cancelled read; the connection closes.
            Err(_) => return false,
        }
    }
}

/// Drops what `buf` holds of the body `body` decodes, each byte (framing too) taken from
/// `budget`: `Some(true)` when the body ended (what follows it stays in `buf`),
/// `Some(false)` when more is to be read, `None` when it is malformed or over the budget.
fn drop_buffered(
    body: &mut http1::BodyDecoder,
    buf: &mut BytesMut,
    budget: &mut u64,
) -> Option<bool> {
    while !body.is_done() {
        let used = body.decode(buf).ok()?.consumed;
        if used == 0 {
            return Some(false);
        }
        *budget = budget.checked_sub(used as u64)?;
        bytes::Buf::advance(buf, used);
    }
    Some(true)
}

/// How long a client still sending a request body after its (final) response is read,
/// the bytes dropped: closing a socket with unread bytes resets the connection, and the
/// reset can overtake the response at the client.
const LINGER: Duration = Duration::from_secs(2);

/// Half-closes a client connection after its response and drops what the client still
/// sends, until it closes or [`LINGER`] passes, so the close that follows does not reset
/// the connection under a response the client has not read yet.
/// The connection's write buffer goes back to the pool first, and what the client sends
/// is read into its read buffer (whatever it held is no longer wanted).
pub(crate) async fn linger(ctx: &WorkerCtx, ds: &mut Downstream, timer: &mut Timer<'_>) {
    ctx.give_buf(std::mem::take(&mut ds.out));
    let client = io::Shared(&ds.stream);
    client.shutdown_write();
    let until = Instant::now() + LINGER;
    let mut buf = std::mem::take(&mut ds.buf);
    loop {
        buf.clear();
        match within(timer, until, client.recv(buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            Ok((_, b)) => {
                ds.buf = b;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Ends an idle registration when the wait ends, or when the task is dropped mid-wait
/// (before its socket is closed, so the reaper never touches a reused descriptor).
struct IdleGuard<'a> {
    ctx: &'a WorkerCtx,
    token: IdleToken,
}

impl IdleGuard<'_> {
    /// Ends the registration; false when the reaper got there first.
    fn finish(self) -> bool {
        let kept = self.ctx.idle.borrow_mut().remove(self.token);
        std::mem::forget(self);
        kept
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.ctx.idle.borrow_mut().remove(self.token);
    }
}

/// How reading the next head ended.
enum NextHead {
    Head(RequestHead),
    /// Clean close or idle timeout between requests.
    Closed,
    /// Nothing arrived within the hot-read window: wait for readability instead.
    Cooled,
    /// Bad input: answered and the connection must close.
    Rejected,
}

/// A connection's handle on its worker, counted in the worker's active connections while
/// it lives: the count drops when the task ends, however it ends.
struct Active(Rc<WorkerCtx>);

impl std::ops::Deref for Active {
    type Target = WorkerCtx;
    fn deref(&self) -> &WorkerCtx {
        &self.0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The task that serves requests on one client connection until it closes (counted in
/// the worker's active connections while it lives).
///
/// Not an `async fn`: an async fn keeps a copy of its arguments beside the locals they
/// are moved into, for the whole life of the task. Here the state is built first and the
/// async block uses what it captured in place, which keeps an idle connection's task
/// small (`worker::tests` prints the sizes).
pub(crate) fn serve(
    ctx: Rc<WorkerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    listen_index: u32,
) -> impl Future<Output = ()> {
    ctx.stats.connections_active.fetch_add(1, Ordering::Relaxed);
    let ctx = Active(ctx);
    let _ = stream.set_nodelay(true);
    let mut ds = Downstream {
        stream,
        buf: BytesMut::new(),
        out: BytesMut::new(),
        peer,
        canceller: None,
    };
    async move {
        // Hot since when: the last response went out at this time and the connection is
        // reading the next head directly (None: not hot).
        let mut hot: Option<Instant> = None;
        // Requests served so far (saturating): a connection turns hot only once it has
        // been reused, so a client that sends one request and then idles (or thousands of
        // them at once) never holds read buffers for the hot window.
        let mut served_count: u8 = 0;
        // Heap room for the request future (several KiB), reused while the connection
        // is hot and released when it goes idle.
        let mut slot = FutureSlot::new();
        loop {
            // An idle connection waits for readability here, holding no buffer, no
            // snapshot, no request state and no timer: the worker's idle reaper shuts the
            // socket down when the idle timeout passes. The heavier request future below
            // lives in the slot only while a request is being read or served.
            if ds.buf.is_empty() && hot.is_none() {
                if served_count > 0 && ctx.drain.is_draining() {
                    // Closed rather than kept idle: the worker is shutting down (a new
                    // connection still gets its first request served, see `worker::drain`).
                    return;
                }
                let deadline = Instant::now() + ctx.client_idle_timeout(listen_index);
                let token = ctx.idle.borrow_mut().register(
                    ds.stream.as_raw_fd(),
                    deadline,
                    served_count == 0,
                );
                let guard = IdleGuard { ctx: &ctx, token };
                let ready = ds.stream.readable(false).await;
                if !guard.finish() || ready.is_err() {
                    return;
                }
            }
            // On the heap: reading a head and serving the request (routing, upstream
            // exchange, body relay) takes several KiB of state; an idle keep-alive
            // connection's task holds only this small loop, not room for a request it is
            // not serving.
            // Bytes already buffered (a pipelined request) are parsed first, not waited on.
            let hot_read = hot.filter(|_| ds.buf.is_empty());
            let served;
            (served, ds) = slot
                .run(|| request(Rc::clone(&ctx.0), ds, listen_index, hot_read))
                .await;
            match served {
                Served::Close => return,
                Served::KeepAlive { sent } => {
                    served_count = served_count.saturating_add(1);
                    hot = (served_count >= 2 && !ctx.settings.client_hot_read.is_zero())
                        .then_some(sent);
                }
                Served::Cooled => hot = None,
            }
            if ds.buf.is_empty() && hot.is_none() {
                // Idle keep-alive connections hold no buffers (they go back to the
                // worker's pool) and no request memory.
                ctx.give_buf(std::mem::take(&mut ds.buf));
                ctx.give_buf(std::mem::take(&mut ds.out));
                slot.release();
            }
        }
    }
}

/// What serving one request left the connection as.
enum Served {
    /// Open, a response just went out (at `sent`): read the next head directly.
    KeepAlive { sent: Instant },
    /// Open, but quiet for the whole hot-read window: wait for readability.
    Cooled,
    /// Closed or to be closed.
    Close,
}

/// Reads one request head and serves the request. `hot`: the connection served a request
/// whose response went out at this time and nothing is buffered; the first read waits
/// only until `client_hot_read` after that. Takes
/// and gives back the connection, so that the future borrows nothing and can live in the
/// connection's [`FutureSlot`] across requests.
async fn request(
    ctx: Rc<WorkerCtx>,
    mut ds: Downstream,
    listen_index: u32,
    hot: Option<Instant>,
) -> (Served, Downstream) {
    // One async fn, not a wrapper around another: each level of nesting copies the inner
    // future (several KiB) into the outer one once per request.
    // The one timer every deadline of this request uses (see `deadline`).
    let mut timer = std::pin::pin!(deadline::timer(ctx.started));
    let served = 'served: {
        let Some(cfg) = ctx.holder.current() else {
            ds.send_error(503, "no configuration loaded yet", &mut timer)
                .await;
            break 'served Served::Close;
        };
        // Found by address, not index: a new snapshot may reorder or remove listeners.
        let bound = ctx.listen_addr(listen_index);
        let Some(listener) = bound.and_then(|a| cfg.listener_by_addr(a)) else {
            ds.send_error(
                503,
                "listener removed by the current configuration",
                &mut timer,
            )
            .await;
            break 'served Served::Close;
        };
        let l = &cfg.listeners[listener];
        let limits = http1::Limits {
            max_head_bytes: l.limits.max_header_bytes,
            max_headers: l.limits.max_headers,
            max_body_bytes: Some(l.limits.max_body_bytes),
            ..http1::Limits::default()
        };
        let head = match next_head(&ctx, &mut ds, &limits, l.head_timeout, hot, &mut timer).await {
            NextHead::Head(h) => h,
            NextHead::Cooled => break 'served Served::Cooled,
            NextHead::Closed | NextHead::Rejected => break 'served Served::Close,
        };
        let started = Instant::now();
        let scope = forward::Scope {
            ctx: &ctx,
            cfg: &cfg,
            listener,
            limits: &limits,
        };
        let handled = forward::handle(&scope, &mut ds, head, started, &mut timer);
        match handled.await {
            Some(sent) => Served::KeepAlive { sent },
            None => Served::Close,
        }
    };
    (served, ds)
}

async fn next_head(
    ctx: &WorkerCtx,
    ds: &mut Downstream,
    limits: &http1::Limits,
    head_timeout: Duration,
    hot: Option<Instant>,
    timer: &mut Timer<'_>,
) -> NextHead {
    if ds.buf.capacity() == 0 {
        ds.buf = ctx.take_buf();
    }
    if ds.out.capacity() == 0 {
        ds.out = ctx.take_buf();
    }
    if let Some(since) = hot {
        match hot_read(ctx, ds, since, timer).await {
            HotRead::Data => {}
            HotRead::Cooled => return NextHead::Cooled,
            HotRead::Closed => return NextHead::Closed,
        }
    }
    // Set at the first read this head needs (a hot read usually brings it whole).
    let mut deadline = None;
    loop {
        match RequestHead::parse(&mut ds.buf, limits) {
            Ok(ParseStatus::Complete { head, .. }) => return NextHead::Head(head),
            Ok(ParseStatus::Partial) => {}
            Err(e) => return reject(ctx, ds, &e, timer).await,
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + head_timeout);
        // The buffer moves into the read; on a timeout it is gone with the cancelled
        // read, so remember whether part of a head had arrived.
        let partial = !ds.buf.is_empty();
        let buf = std::mem::take(&mut ds.buf);
        let read = within(timer, deadline, io::read_more(&mut ds.stream, buf)).await;
        match read {
            Ok((Ok(0), buf)) => {
                ds.buf = buf;
                if !ds.buf.is_empty() {
                    // Closed mid-head: nothing sensible to answer.
                    ctx.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                }
                return NextHead::Closed;
            }
            Ok((Ok(_), buf)) => ds.buf = buf,
            Ok((Err(_), _)) => return NextHead::Closed,
            Err(_) => {
                if !partial {
                    return NextHead::Closed;
                }
                ds.send_error(408, "request head not received in time", timer)
                    .await;
                return NextHead::Rejected;
            }
        }
    }
}

/// How a hot connection's first read ended.
enum HotRead {
    /// Bytes arrived (in `ds.buf`).
    Data,
    /// Nothing within the window; the read was cancelled and its buffer is back.
    Cooled,
    /// The client closed, or the read failed.
    Closed,
}

/// The first read of a hot connection: directly into its buffer, for at most
/// `client_hot_read`. On expiry the read is cancelled and awaited, so bytes the kernel
/// delivered in the meantime are kept, never lost with a dropped operation.
async fn hot_read(
    ctx: &WorkerCtx,
    ds: &mut Downstream,
    since: Instant,
    timer: &mut Timer<'_>,
) -> HotRead {
    let until = since + ctx.settings.client_hot_read;
    let handle = ds.canceller.get_or_insert_with(Canceller::new).handle();
    let buf = std::mem::take(&mut ds.buf);
    let mut read = std::pin::pin!(io::read_more_cancelable(&mut ds.stream, buf, handle));
    let (res, buf) = match within(timer, until, read.as_mut()).await {
        Ok(done) => done,
        Err(_) => {
            // The canceller is spent; a connection that turns hot again makes a new one.
            if let Some(c) = ds.canceller.take() {
                drop(c.cancel());
            }
            read.await
        }
    };
    ds.buf = buf;
    match res {
        Ok(0) => HotRead::Closed,
        Ok(_) => HotRead::Data,
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => HotRead::Cooled,
        Err(_) => HotRead::Closed,
    }
}

async fn reject(
    ctx: &WorkerCtx,
    ds: &mut Downstream,
    e: &Http1Error,
    timer: &mut Timer<'_>,
) -> NextHead {
    ctx.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %ds.peer, status = e.status(), "rejecting request: {e}");
    ds.send_error(e.status(), e.reason(), timer).await;
    // The client may still be sending (the rest of an oversized head, a body).
    linger(ctx, ds, timer).await;
    NextHead::Rejected
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        os::fd::AsRawFd as _,
        pin::pin,
        time::{Duration, Instant},
    };

    use bytes::BytesMut;
    use monoio::net::TcpStream;

    use super::{DISCARD_MAX, ToClient, drop_buffered, send_within};
    use crate::http1::{self, Framing, LocalReply};
    use crate::proxy::{deadline::timer, io::tests::on_both_drivers};

    /// Drops `pieces` in turn as they would arrive (each appended to what is left) from a
    /// budget of [`DISCARD_MAX`]; the result after each, and what the buffer holds then.
    fn drop_pieces(framing: Framing, pieces: &[&[u8]]) -> (Vec<Option<bool>>, BytesMut) {
        let limits = http1::Limits {
            max_body_bytes: Some(DISCARD_MAX),
            ..http1::Limits::default()
        };
        let mut body = http1::BodyDecoder::new(framing, &limits);
        let (mut buf, mut budget) = (BytesMut::new(), DISCARD_MAX);
        let seen = pieces
            .iter()
            .map(|p| {
                buf.extend_from_slice(p);
                drop_buffered(&mut body, &mut buf, &mut budget)
            })
            .collect();
        (seen, buf)
    }

    /// A chunked body of exactly 64 KiB on the wire (framing included) is dropped; one
    /// byte more is not; nor is a chunk announced larger, before its data comes.
    #[test]
    fn a_dropped_body_takes_at_most_64_kib_on_the_wire() {
        let chunked = |n: usize| {
            let mut wire = format!("{n:x}\r\n").into_bytes();
            wire.resize(wire.len() + n, b'x');
            wire.extend_from_slice(b"\r\n0\r\n\r\n");
            wire
        };
        let exact = chunked(65_523);
        assert_eq!(exact.len() as u64, DISCARD_MAX);
        let (seen, rest) = drop_pieces(Framing::Chunked, &[&exact, b"GET"]);
        assert_eq!(
            (seen, &rest[..]),
            (vec![Some(true), Some(true)], &b"GET"[..])
        );
        let over = chunked(65_524);
        assert_eq!(drop_pieces(Framing::Chunked, &[&over]).0, [None]);
        assert_eq!(drop_pieces(Framing::Chunked, &[b"10001\r\n"]).0, [None]);
        let (seen, _) = drop_pieces(Framing::Chunked, &[b"5\r\nhe", b"llo\r\nzz\r\n"]);
        assert_eq!(seen, [Some(false), None], "a malformed size fails");
    }

    /// What follows a dropped body (after its trailer, or its Content-Length) stays for
    /// the next request, also when the body comes a byte at a time.
    #[test]
    fn a_dropped_body_leaves_the_next_request() {
        let wire = b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let (seen, rest) = drop_pieces(Framing::Chunked, &[wire]);
        assert_eq!(
            (seen, &rest[..]),
            (vec![Some(true)], &b"GET / HTTP/1.1\r\n"[..])
        );
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (seen, rest) = drop_pieces(Framing::Chunked, &bytes);
        let ended = seen.iter().position(|s| *s == Some(true)).unwrap();
        assert_eq!(ended, wire.len() - b"GET / HTTP/1.1\r\n".len() - 1);
        assert!(seen[..ended].iter().all(|s| *s == Some(false)), "{seen:?}");
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        let (seen, rest) = drop_pieces(Framing::ContentLength(10), &[b"hello", b"worldGET"]);
        assert_eq!(
            (seen, &rest[..]),
            (vec![Some(false), Some(true)], &b"GET"[..])
        );
    }

    /// Writes on `fd` without blocking until the socket takes no more.
    fn fill(fd: i32) {
        let chunk = [0u8; 64 * 1024];
        for _ in 0..100_000 {
            // SAFETY: `chunk` is valid for its length; `fd` is an open socket.
            let n = unsafe {
                libc::send(
                    fd,
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN)
                );
                return;
            }
        }
        panic!("the socket never filled");
    }

    /// An error response to a client that reads nothing (its window and our send buffer
    /// full) gives up at the limit, and the connection's buffer is dropped with the
    /// write; one to a client that reads is delivered and the buffer kept.
    async fn error_write_is_bounded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().unwrap();
        fill(stream.as_raw_fd());
        let mut out = BytesMut::with_capacity(4096);
        let mut t = pin!(timer(Instant::now()));
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        let client = ToClient {
            stream: &mut stream,
            out: &mut out,
        };
        let bad =
            |out: &mut BytesMut| http1::write_local_response(400, "bad", LocalReply::CLOSE, out);
        let sent = send_within(client, bad, &mut t, limit).await;
        assert!(!sent);
        let took = started.elapsed();
        assert!(took >= limit, "gave up after {took:?}");
        assert!(took < limit * 10, "took {took:?}");
        assert_eq!(
            out.capacity(),
            0,
            "the buffer went with the cancelled write"
        );

        // A client that reads: the response arrives whole, the buffer stays.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (mut peer2, _) = listener.accept().unwrap();
        let mut out = BytesMut::with_capacity(4096);
        let client = ToClient {
            stream: &mut stream,
            out: &mut out,
        };
        let large = |out: &mut BytesMut| {
            http1::write_local_response(431, "head too large", LocalReply::CLOSE, out);
        };
        assert!(send_within(client, large, &mut t, limit).await);
        assert!(out.capacity() >= 4096 && out.is_empty());
        // Read with a bound (a blocking read here holds up the runtime's thread).
        peer2
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"head too large\n") {
            let n = peer2.read(&mut buf).expect("the response arrives");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 431 "));
        drop(peer);
    }

    #[test]
    fn an_error_response_to_a_client_that_does_not_read_gives_up_at_its_limit() {
        on_both_drivers(error_write_is_bounded);
    }
}
