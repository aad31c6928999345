//! The deadline for a request head, apart from the connection's idle time:
//! hyper's own starts as soon as an answer is sent, racing a pooling client that
//! reuses the connection (docs/reliability.md). Here, as Envoy's
//! `request_headers_timeout`, it runs from a head's first byte (the first
//! head's: from the connection) until the head is read.

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

/// What the connection's service tells its stream: each head read, and whether
/// no more will come (HTTP/2, an upgrade).
#[derive(Debug, Default)]
pub(super) struct Heads {
    read: AtomicU64,
    done: AtomicBool,
}

impl Heads {
    pub(super) fn read<B>(&self, request: &http::Request<B>) {
        self.read.fetch_add(1, Ordering::Relaxed);
        // HTTP/2 frames flow while idle, an upgrade hands the stream over:
        // neither has heads between answers to time.
        if request.version() >= http::Version::HTTP_2
            || request.headers().contains_key(http::header::UPGRADE)
        {
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

pin_project! {
    /// A stream whose reads fail with `TimedOut` once a head took too long.
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
/// head comes in): the next deadline starts with the next byte read. Before the
/// first head (HTTP/2's settings) the first deadline runs on. One gap: a body
/// sent after a `100 Continue` counts as a head.
fn answering(heads: &Heads, seen: &mut u64, answered: &mut bool, running: &mut bool) {
    heads_read(heads, seen, running);
    if *seen > 0 {
        *answered = true;
        *running = false;
    }
}
