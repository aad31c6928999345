//! The graceful-shutdown sequence of docs/design.md: on SIGTERM or Ctrl-C turn
//! not-ready, keep serving for the delay, then stop accepting and give
//! in-flight requests a bounded time. A second signal exits at once.

mod in_flight;

pub use in_flight::InFlight;

use crate::readiness::Readiness;
use std::{future::Future, time::Duration};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed now, not when
/// first polled: a signal in between would kill the process outright.
///
/// A second signal exits at once with 128 + its number (143, 130), logging
/// the requests it abandons (tokio never restores a signal's default action).
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|err| tracing::error!(%err, "cannot listen for {name}"))
            .ok()
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = listen(SignalKind::interrupt(), "Ctrl-C");
    async move {
        tokio::select! {
            () = recv(interrupt.as_mut()) => tracing::info!("received Ctrl-C"),
            () = recv(terminate.as_mut()) => tracing::info!("received SIGTERM"),
        }
        tokio::spawn(async move {
            let (name, code) = tokio::select! {
                () = recv(interrupt.as_mut()) => ("Ctrl-C", 130),
                () = recv(terminate.as_mut()) => ("SIGTERM", 143),
            };
            let abandoned_requests = in_flight::process_in_flight();
            tracing::warn!(
                signal = name,
                abandoned_requests,
                "second signal: exiting at once"
            );
            // exit() runs no destructors.
            crate::telemetry::flush_logs();
            std::process::exit(code);
        });
    }
}

/// The next signal of a stream; one we cannot listen for never arrives.
async fn recv(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Drives one process's shutdown: readiness, the delay, the stop of the
/// listeners and the bound on draining.
#[derive(Clone, Debug)]
pub struct Shutdown {
    readiness: Readiness,
    in_flight: InFlight,
    stop: CancellationToken,
    delay: Duration,
    timeout: Duration,
}

impl Shutdown {
    pub fn new(delay: Duration, timeout: Duration) -> Self {
        let (readiness, in_flight, stop) = Default::default();
        Self {
            readiness,
            in_flight,
            stop,
            delay,
            timeout,
        }
    }

    /// The readiness flag `/readyz` and gRPC health report.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The requests in progress, for the main listeners' middleware.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Resolves when listeners must stop accepting new connections.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Runs `serve` (whose listeners wait on [`Shutdown::stopped`]) until
    /// `trigger` resolves, then drains. Returns `serve`'s own result if it
    /// ends first, and `Ok` when draining ends, in time or not.
    pub async fn run<E>(
        &self,
        trigger: impl Future<Output = ()>,
        serve: impl Future<Output = Result<(), E>>,
    ) -> Result<(), E> {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result,
            () = trigger => {}
        }

        self.readiness.set_not_ready();
        let delay_seconds = self.delay.as_secs_f64();
        tracing::info!(
            delay_seconds,
            "shutdown began: not ready, still serving during the delay"
        );
        tokio::select! {
            result = &mut serve => return result,
            () = tokio::time::sleep(self.delay) => {}
        }

        self.stop.cancel();
        let timeout_seconds = self.timeout.as_secs_f64();
        tracing::info!(
            timeout_seconds,
            in_flight_requests = self.in_flight.count(),
            "listeners closed; waiting for in-flight requests"
        );
        let drained = tokio::time::timeout(self.timeout, serve).await;
        drained.unwrap_or_else(|_| {
            tracing::warn!(
                timeout_seconds,
                abandoned_requests = self.in_flight.count(),
                "in-flight requests did not finish in time; abandoning them"
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::sync::oneshot;

    #[tokio::test(start_paused = true)]
    async fn readiness_turns_before_the_listeners_stop() {
        let shutdown = Shutdown::new(Duration::from_secs(5), Duration::from_secs(20));
        let (trigger_tx, trigger_rx) = oneshot::channel::<()>();
        let serve = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.readiness().not_ready().await;
                let turned_at = tokio::time::Instant::now();
                shutdown.stopped().await;
                Ok::<_, Infallible>(turned_at.elapsed())
            }
        };
        let (elapsed_tx, elapsed_rx) = oneshot::channel();
        let serve = async move {
            let elapsed = serve.await?;
            elapsed_tx.send(elapsed).unwrap();
            Ok::<_, Infallible>(())
        };
        trigger_tx.send(()).unwrap();
        shutdown
            .run(async { trigger_rx.await.unwrap() }, serve)
            .await
            .unwrap();
        assert_eq!(elapsed_rx.await.unwrap(), Duration::from_secs(5));
        assert!(!shutdown.readiness().is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn draining_is_bounded_by_the_timeout() {
        let shutdown = Shutdown::new(Duration::ZERO, Duration::from_secs(20));
        let start = tokio::time::Instant::now();
        let never_drains = std::future::pending::<Result<(), Infallible>>();
        shutdown.run(async {}, never_drains).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_server_that_fails_early_returns_its_error() {
        let shutdown = Shutdown::new(Duration::ZERO, Duration::from_secs(20));
        let result = shutdown
            .run(std::future::pending(), async { Err("bind lost") })
            .await;
        assert_eq!(result, Err("bind lost"));
        assert!(shutdown.readiness().is_ready());
    }
}
