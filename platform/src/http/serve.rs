//! Serving a router like `axum::serve`, with bounds on what a client may hold: a
//! request head must arrive within a deadline and fit in a size (against
//! slowloris), and a kept-alive connection closes only after an idle spell
//! longer than its clients keep it pooled.

use super::head_deadline::{HeadDeadline, Heads};
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{future::Future, io, pin::pin, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The bounds every connection is served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a request head: the first from when it
    /// connects, each later one from its first byte.
    pub header_read_timeout: Duration,
    /// How long an HTTP/1 connection may sit idle between an answer and the
    /// next head: longer than clients keep one pooled (Envoy: an hour).
    pub idle_timeout: Duration,
    /// The most bytes a request head may take (431 past it); at least
    /// [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
}

/// hyper's smallest read buffer, and so the smallest `max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serves `router` (HTTP/1.1, and HTTP/2 with prior knowledge) until `stop`
/// resolves; then accepts no new connection and returns once every open one
/// has finished its request in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max_header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's clock runs from an answer to the end of the next head: the
        // idle bound. The head's own runs in HeadDeadline.
        .header_read_timeout(limits.idle_timeout.max(limits.header_read_timeout))
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut stop = pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let router = router.clone();
        tokio::spawn(async move {
            let heads = Arc::new(Heads::default());
            let stream = HeadDeadline::new(stream, Arc::clone(&heads), limits.header_read_timeout);
            let service = TowerToHyperService::new(router.map_request(move |request| {
                heads.read(&request);
                request
            }));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            finished(watcher.watch(connection).await);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn finished(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(err) = result {
        // A client going away, a timeout, a malformed request: not an operator's business.
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// As `axum::serve`: a per-connection error is skipped, anything else (out of
/// file descriptors) logged and retried after a pause.
async fn accept_failed(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept a connection; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
