//! The deadline for a request head on one connection, apart from the time the
//! connection sits idle between requests. hyper's own header read timeout starts
//! as soon as an answer is sent, so it closes every kept-alive connection idle
//! that long, racing a client that reuses it just then (a pooling client, Envoy
//! above all, keeps it far longer). Here, as Envoy's `request_headers_timeout`,
//! the clock starts with the first byte of a head (of the first one: with the
//! connection) and stops once the head is read.

use pin_project_lite::pin_project;
use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// What the connection's service tells its stream: each request whose head was
/// read, and whether no more heads will come (HTTP/2, an upgrade).
#[derive(Debug, Default)]
pub(super) struct Heads {
    read: AtomicU64,
    done: AtomicBool,
}

impl Heads {
    /// A request's head was read and handed to the service.
    pub(super) fn read<B>(&self, request: &http::Request<B>) {
        self.read.fetch_add(1, Ordering::Relaxed);
        // HTTP/2 multiplexes requests on frames that flow while idle, an upgrade
        // hands the stream over: neither has heads between answers to time.
        if request.version() >= http::Version::HTTP_2
            || request.headers().contains_key(http::header::UPGRADE)
        {
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

pin_project! {
    /// A stream whose reads fail with `TimedOut` once a request head has taken
    /// longer than the timeout.
    pub(super) struct HeadDeadline<S> {
        #[pin]
        stream: S,
        heads: Arc<Heads>,
        timeout: Duration,
        // Heads read as of the last look: a change ends the running deadline.
        seen: u64,
        // An answer went out: the next bytes read begin a head.
        answered: bool,
        running: bool,
        deadline: Pin<Box<Sleep>>,
    }
}

impl<S> HeadDeadline<S> {
    /// `stream`, with the first head's deadline running from now.
    pub(super) fn new(stream: S, heads: Arc<Heads>, timeout: Duration) -> Self {
        Self {
            stream,
            heads,
            timeout,
            seen: 0,
            answered: false,
            running: true,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<S: AsyncRead> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        heads_read(this.heads, this.seen, this.running);
        if *this.running && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole request head within the header read timeout",
            )));
        }
        let before = buf.filled().len();
        ready!(this.stream.poll_read(cx, buf))?;
        if *this.answered && buf.filled().len() > before && !this.heads.done.load(Ordering::Relaxed)
        {
            *this.answered = false;
            *this.running = true;
            let deadline = Instant::now() + *this.timeout;
            this.deadline.as_mut().reset(deadline);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        answering(this.heads, this.seen, this.answered, this.running);
        this.stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        answering(this.heads, this.seen, this.answered, this.running);
        this.stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// A head read since the last look ends the deadline running for it.
fn heads_read(heads: &Heads, seen: &mut u64, running: &mut bool) {
    let read = heads.read.load(Ordering::Relaxed);
    if read != *seen {
        *seen = read;
        *running = false;
    }
}

/// A write once a head was read is an answer (HTTP/1 writes nothing while a
/// head comes in): the next head's deadline starts with its first byte. Before
/// the first head (HTTP/2's settings), the first deadline keeps running.
///
/// One gap: a request body sent after a `100 Continue` counts as a head and
/// must arrive within the timeout.
fn answering(heads: &Heads, seen: &mut u64, answered: &mut bool, running: &mut bool) {
    heads_read(heads, seen, running);
    if *seen > 0 {
        *answered = true;
        *running = false;
    }
}
