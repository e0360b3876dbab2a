//! Owned-buffer I/O helpers over monoio's completion-based streams.

use std::{io, os::fd::AsRawFd as _};

use bytes::BytesMut;
use monoio::{
    buf::{IoBuf, IoBufMut, SliceMut},
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent},
    net::TcpStream,
};

/// Read size when a buffer needs room. 64 KiB: a 16 KiB response plus its head arrives in
/// one read instead of two (measured: 16 KiB bodies went from 1.3x to 1.0x haproxy's CPU
/// per request); idle connections hold no buffer, so this costs memory only per request.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reads more bytes, appending them to `buf` (which grows by [`READ_CHUNK`] when full).
/// Returns the buffer and the number of bytes read (0: the peer closed).
pub async fn read_more(stream: &mut TcpStream, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
    let (res, slice) = stream.read(spare(buf)).await;
    (res, slice.into_inner())
}

/// [`read_more`] that `handle`'s canceller can cancel; a cancelled read returns
/// `ECANCELED` and the buffer, or the bytes if they arrived first.
pub async fn read_more_cancelable(
    stream: &mut TcpStream,
    buf: BytesMut,
    handle: CancelHandle,
) -> (io::Result<usize>, BytesMut) {
    let (res, slice) = stream.cancelable_read(spare(buf), handle).await;
    (res, slice.into_inner())
}

/// Grows `buf` by [`READ_CHUNK`] when its spare room is short, for a read to fill.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// The spare room of `buf` (see [`make_room`]), for a read to fill.
fn spare(mut buf: BytesMut) -> SliceMut<BytesMut> {
    make_room(&mut buf);
    let len = buf.len();
    let cap = buf.capacity();
    buf.slice_mut(len..cap)
}

/// What the body relays need of a connection: reading more into a buffer and writing a
/// buffer whole. A [`TcpStream`] does both with io_uring operations while one task owns
/// it; a [`Shared`] view lets two tasks use one socket at once.
pub(crate) trait Stream {
    /// As [`read_more`].
    async fn read_more(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut);
    /// As [`send_all`].
    async fn send_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut);
}

impl Stream for TcpStream {
    async fn read_more(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        read_more(self, buf).await
    }

    async fn send_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        send_all(self, buf).await
    }
}

/// A shared view of a socket, for a request whose body goes up while its response comes
/// down: one task reads the socket while another writes it. Each operation is a
/// non-blocking system call, and only when that would block a wait for readiness (which
/// the epoll driver confirms with `poll(2)`, so a stale readiness cannot spin).
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a>(pub &'a TcpStream);

impl Shared<'_> {
    /// [`Stream::read_more`] by value, for a future that must not borrow the view. A
    /// receive that did not have to wait gives the worker's other tasks a turn before it
    /// returns: a peer that keeps the socket full must not hold the worker (nor keep the
    /// caller's other futures and deadlines from being polled).
    pub async fn recv(self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let mut buf = buf;
        make_room(&mut buf);
        let mut waited = false;
        loop {
            let spare = buf.spare_capacity_mut();
            // SAFETY: the pointer and length describe `buf`'s spare capacity, which the
            // kernel fills; only the bytes it reports are marked initialized below.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                // SAFETY: `recv` initialized `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                if !waited {
                    yield_now().await;
                }
                return (Ok(n), buf);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => {
                    waited = true;
                    if let Err(e) = self.0.readable(false).await {
                        return (Err(e), buf);
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => return (Err(err), buf),
            }
        }
    }

    /// [`Stream::send_all`] by value.
    pub async fn send(self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            // SAFETY: the pointer and length describe initialized bytes of `buf`.
            let n = unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match usize::try_from(n) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => at += n,
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::WouldBlock => {
                            if let Err(e) = self.0.writable(false).await {
                                return (Err(e), buf);
                            }
                        }
                        io::ErrorKind::Interrupted => {}
                        _ => return (Err(err), buf),
                    }
                }
            }
        }
        (Ok(()), buf)
    }

    /// Ends the sending side (`shutdown(2)`, `SHUT_WR`): the peer reads the end of the
    /// stream after what was sent.
    pub fn shutdown_write(self) {
        // SAFETY: a plain system call on a descriptor the view borrows.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) };
    }
}

/// Returns after one turn of the worker's other tasks (the task is woken again at once).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

impl Stream for Shared<'_> {
    async fn read_more(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        self.recv(buf).await
    }

    async fn send_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        self.send(buf).await
    }
}

/// Writes all of `buf` and returns it as it was. One send takes a buffer whole unless the
/// socket's send buffer fills up; only then does the rest go through monoio's write loop
/// (whose future and slicing cost more than the send itself on small writes).
pub async fn send_all(stream: &mut TcpStream, buf: BytesMut) -> (io::Result<()>, BytesMut) {
    let len = buf.len();
    if len == 0 {
        return (Ok(()), buf);
    }
    let (res, buf) = stream.write(buf).await;
    match res {
        Ok(n) if n == len => (Ok(()), buf),
        Ok(0) => (Err(io::ErrorKind::WriteZero.into()), buf),
        Ok(n) => {
            let (res, rest) = stream.write_all(buf.slice(n..)).await;
            (res.map(drop), rest.into_inner())
        }
        Err(e) => (Err(e), buf),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::BytesMut;
    use monoio::{
        buf::IoBuf as _,
        io::{AsyncReadRent, AsyncWriteRentExt as _},
        net::{TcpListener, TcpStream},
    };

    use super::{Shared, send_all};

    /// Writes a buffer larger than the socket takes at once, then a small one, to a reader
    /// that starts late: the first send is partial and the rest goes through the fallback
    /// loop. Every byte arrives, in order, and the buffers come back whole.
    async fn partial_send_round_trip() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
        let reader = monoio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Let the writer fill the socket first.
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut got = Vec::new();
            loop {
                let (n, buf) = s.read(Vec::with_capacity(1 << 20)).await;
                match n.unwrap() {
                    0 => break got,
                    _ => got.extend_from_slice(&buf),
                }
            }
        });
        let mut w = TcpStream::connect(addr).await.unwrap();
        let (res, back) = send_all(&mut w, BytesMut::from(&data[..])).await;
        res.unwrap();
        assert_eq!(
            back.len(),
            data.len(),
            "send_all gives the buffer back whole"
        );
        let (res, back) = send_all(&mut w, BytesMut::from(&b"tail"[..])).await;
        res.unwrap();
        assert_eq!(&back[..], b"tail", "a short buffer comes back whole too");
        drop(w);
        let mut want = data;
        want.extend_from_slice(b"tail");
        let got = reader.await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes arrive in order");
    }

    /// Sends 16 MiB to an echo peer through one [`Shared`] view while another reads the
    /// echo through a second view of the same socket. Neither could finish alone: the
    /// peer stops reading while its echo is not taken.
    async fn shared_views_read_and_write_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = monoio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let (n, b) = s.read(buf).await;
                let n = n.unwrap();
                if n == 0 {
                    break;
                }
                let (res, b) = s.write_all(b.slice(..n)).await;
                res.unwrap();
                buf = b.into_inner();
            }
        });
        let data: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 249) as u8).collect();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (reader, writer) = (Shared(&stream), Shared(&stream));
        let want = data.len();
        let read_all = async move {
            let mut got = BytesMut::new();
            while got.len() < want {
                let (n, b) = reader.recv(got).await;
                assert!(n.unwrap() > 0, "echo ended early");
                got = b;
            }
            got
        };
        let write_all = async move {
            let (res, back) = writer.send(BytesMut::from(&data[..])).await;
            res.unwrap();
            writer.shutdown_write();
            back
        };
        let (got, sent) = monoio::join!(read_all, write_all);
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the echo comes back whole and in order");
        echo.await;
    }

    /// Runs the future `make` builds on the io_uring driver (when the kernel has it) and
    /// on the epoll driver.
    pub(crate) fn on_both_drivers<F: Future<Output = ()>>(make: impl Fn() -> F) {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(mut rt) => rt.block_on(make()),
            Err(e) => eprintln!("io_uring unavailable ({e}): only the epoll driver is tested"),
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(make());
    }

    #[test]
    fn shared_views_of_one_socket_read_and_write_concurrently() {
        on_both_drivers(shared_views_read_and_write_at_once);
    }

    #[test]
    fn a_partial_send_is_finished_and_the_buffer_returned() {
        on_both_drivers(partial_send_round_trip);
    }
}
