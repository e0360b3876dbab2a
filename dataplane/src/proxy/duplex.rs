//! A request body streamed upstream while the upstream is watched for an answer.
//!
//! An upstream may answer before it has read the whole body: a refusal (401, 413) that
//! then stops reading, or a full-duplex exchange that streams its response while it reads
//! (and, with flow control, stops reading while its response is not taken). Writing the
//! whole body before reading anything would stall either until the request's deadline.
//! So while the body goes up, a read of the upstream is in flight. When the response head
//! arrives first, it is relayed while the body keeps going up; the connections close
//! afterwards (neither is at a request boundary for certain). An upstream that stops
//! taking the body may still have answered: its answer is read before its close counts.
//!
//! Both directions of each connection are then in use at once, so the sockets are used
//! through [`Shared`] views. A request without a body takes none of this.

use std::{
    future::poll_fn,
    pin::pin,
    sync::atomic::Ordering::Relaxed,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use monoio::net::TcpStream;

use super::{
    body::{self, RequestBody, SendError, ToClient},
    deadline::{self, Timer, within},
    downstream::Downstream,
    io::Shared,
    worker::WorkerCtx,
};
use crate::{
    http1::{self, Http1Error, ParseStatus, RequestHead, ResponseHead},
    snapshot::HeaderEdits,
};

/// How sending a request with a body ended.
pub(super) enum Sent {
    /// The response began after the body went up (or after the upstream stopped taking
    /// it): what arrived of it so far, when its head is due, and whether the body went up
    /// whole (if not, the connection's write half is shut: it carries no other request).
    Response {
        buf: BytesMut,
        head_by: Instant,
        body_up: bool,
    },
    /// The upstream answered before the body was all sent: the response was relayed, and
    /// both connections close (the client's once what it still sends was dropped).
    Answered {
        status: u16,
        head_at: Instant,
        bytes_out: u64,
    },
    Failed(SendError),
    /// The upstream closed (or reset) the connection before a response began.
    Closed,
    BadResponse(Http1Error),
    /// No response began within the attempt's time (after the body went up).
    TimedOut,
}

/// What the watch of the upstream found while the body was still going up.
enum Watch {
    /// Nothing final yet (interim responses were relayed): read on.
    More(BytesMut),
    /// A final response head, the rest of the response after it in the buffer.
    Answer(ResponseHead, BytesMut),
}

/// Sends `up_head` and the request body to `up` while reading `up` for the response.
/// `per_try` bounds the wait for a response after the body went up.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_body(
    ctx: &WorkerCtx,
    request: &RequestHead,
    up: &TcpStream,
    up_head: &BytesMut,
    body_state: &mut RequestBody,
    ds: &mut Downstream,
    (deadline, per_try): (Instant, Option<Duration>),
    edits: Option<&HeaderEdits>,
    timer: &mut Timer<'_>,
) -> Sent {
    if let Err(e) = body_state.answer_expectation(ds, deadline, timer).await {
        return Sent::Failed(e);
    }
    let mut out = ctx.take_buf();
    out.extend_from_slice(up_head);
    let Downstream {
        stream: client,
        buf: client_buf,
        out: client_out,
        ..
    } = ds;
    let (client, upstream) = (Shared(client), Shared(up));
    let (mut pump_client, mut pump_up) = (client, upstream);
    // The pump has a timer of its own: the watch and the relay use the request's.
    let mut pump_timer = pin!(deadline::timer(deadline));
    let mut pump = pin!(body_state.pump(
        ctx,
        &mut pump_client,
        client_buf,
        &mut pump_up,
        out,
        deadline,
        &mut pump_timer,
    ));
    let mut watch = pin!(upstream.recv(ctx.take_buf()));

    // The body going up, the upstream read in flight: whichever ends first.
    let (resp, up_buf) = loop {
        let first = poll_fn(|cx| {
            if let Poll::Ready(sent) = pump.as_mut().poll(cx) {
                return Poll::Ready(Err(sent));
            }
            watch.as_mut().poll(cx).map(Ok)
        })
        .await;
        let read = match first {
            Err(Err(SendError::Client(e))) => return Sent::Failed(SendError::Client(e)),
            Err(pumped) => {
                // The body is up, or the upstream stopped taking it (it may have answered
                // and closed: its answer is read before its close counts). Either way the
                // response is read as for any request; one after a partial body closes
                // the client connection.
                if pumped.is_err() {
                    upstream.shutdown_write();
                }
                let head_by = per_try.map_or(deadline, |p| deadline.min(Instant::now() + p));
                return match within(timer, head_by, watch.as_mut()).await {
                    Ok((Ok(n), buf)) if n > 0 => Sent::Response {
                        buf,
                        head_by,
                        body_up: pumped.is_ok(),
                    },
                    Ok((_, buf)) => {
                        ctx.give_buf(buf);
                        pumped.map_or_else(Sent::Failed, |()| Sent::Closed)
                    }
                    Err(_) => Sent::TimedOut,
                };
            }
            Ok(read) => read,
        };
        let buf = match read {
            (Ok(n), buf) if n > 0 => buf,
            (_, buf) => {
                ctx.give_buf(buf);
                return Sent::Closed;
            }
        };
        let mut watch_client = client;
        let mut to_client = ToClient {
            stream: &mut watch_client,
            out: &mut *client_out,
        };
        match watch_answer(request, buf, &mut to_client, deadline, timer).await {
            Ok(Watch::More(buf)) => watch.set(upstream.recv(buf)),
            Ok(Watch::Answer(resp, buf)) => break (resp, buf),
            Err(e) => return e,
        }
    };

    // An early answer: relayed while the body keeps going up, until the answer is done
    // (what the client has not sent by then is read and dropped before the connection
    // closes, see `downstream::linger`). When the pump fails, the upstream's side of the
    // request ends (its write half is shut), so it finishes or gives up.
    let head_at = Instant::now();
    let status = resp.status();
    let reply = body::Reply {
        keep_alive: false,
        ..body::Reply::to(request, ctx, edits)
    };
    let mut pumped = false;
    let bytes_out = {
        let mut relay_client = client;
        let mut relay_up = upstream;
        let to_client = ToClient {
            stream: &mut relay_client,
            out: &mut *client_out,
        };
        let mut relay = pin!(body::relay_response(
            ctx,
            resp,
            reply,
            &mut relay_up,
            up_buf,
            to_client,
            deadline,
            timer
        ));
        poll_fn(|cx| {
            if !pumped && let Poll::Ready(sent) = pump.as_mut().poll(cx) {
                pumped = true;
                if let Err(e) = sent {
                    if matches!(e, SendError::Client(body::BodyError::Http(_))) {
                        ctx.stats.bad_requests.fetch_add(1, Relaxed);
                    }
                    upstream.shutdown_write();
                }
            }
            relay.as_mut().poll(cx).map(|(bytes, _, _)| bytes)
        })
        .await
    };
    Sent::Answered {
        status,
        head_at,
        bytes_out,
    }
}

/// Looks at what the upstream sent while the body was going up: interim responses are
/// relayed (103) or skipped (100) and taken off `buf`; a final head is parsed off it.
async fn watch_answer(
    request: &RequestHead,
    mut buf: BytesMut,
    client: &mut ToClient<'_, Shared<'_>>,
    deadline: Instant,
    timer: &mut Timer<'_>,
) -> Result<Watch, Sent> {
    loop {
        match ResponseHead::parse(&mut buf, &http1::Limits::default()) {
            Ok(ParseStatus::Complete { head, .. })
                if head.is_informational() && head.status() != 101 =>
            {
                if head.status() != 100 {
                    let to = ToClient {
                        stream: &mut *client.stream,
                        out: &mut *client.out,
                    };
                    if body::relay_interim(&head, request.version(), to, deadline, timer)
                        .await
                        .is_err()
                    {
                        return Err(Sent::Failed(SendError::Client(body::BodyError::Io)));
                    }
                }
            }
            Ok(ParseStatus::Complete { head, .. }) => return Ok(Watch::Answer(head, buf)),
            Ok(ParseStatus::Partial) => return Ok(Watch::More(buf)),
            Err(e) => return Err(Sent::BadResponse(e)),
        }
    }
}
