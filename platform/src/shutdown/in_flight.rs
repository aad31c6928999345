//! How many requests are in progress, so that a drain cut short by its timeout
//! (or by a second signal) can say how many it abandoned.
//!
//! A request counts from the moment the server calls the service until its
//! response body is finished or dropped: a streaming call (a health watch, say)
//! holds the drain as long as it streams, and counts as long as it does.

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};
use tower::{Layer, Service};

/// Every request in progress in the process, whichever [`InFlight`] counts it:
/// what a second signal reports, since it exits the process, not one server.
static PROCESS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The requests in progress in the process.
pub(super) fn process_in_flight() -> usize {
    PROCESS_IN_FLIGHT.load(Ordering::Relaxed)
}

/// A count of requests in progress; clones share it.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
}

impl InFlight {
    /// The requests in progress now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one request until the guard is dropped.
    fn enter(&self) -> Guard {
        self.count.fetch_add(1, Ordering::Relaxed);
        PROCESS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Guard {
            count: self.count.clone(),
        }
    }

    /// A layer counting the requests of the service it wraps here.
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer {
            in_flight: self.clone(),
        }
    }
}

/// One request in progress.
#[derive(Debug)]
struct Guard {
    count: Arc<AtomicUsize>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        PROCESS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps services in [`Tracked`].
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    in_flight: InFlight,
}

impl<S> Layer<S> for InFlightLayer {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// Counts each request of `S` as in flight until its response body is done.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Tracked<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        TrackedFuture {
            guard: Some(self.in_flight.enter()),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Hands the request's guard on to its response body.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body that counts its request in flight until it is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<Guard>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_counts_until_its_response_body_is_dropped() {
        let in_flight = InFlight::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let service = in_flight
            .layer()
            .layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::from("body")))
            }));
        let held = in_flight
            .layer()
            .layer(tower::service_fn(move |_: Request<()>| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|go| *go).await;
                    Ok::<_, Infallible>(Response::new(String::new()))
                }
            }));

        let waiting = tokio::spawn(held.oneshot(Request::new(())));
        let response = service.oneshot(Request::new(())).await.unwrap();
        // The answered request's body is alive, the other one's handler is too.
        while in_flight.count() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(process_in_flight() >= 2);
        drop(response);
        assert_eq!(in_flight.count(), 1);

        release.send_replace(true);
        drop(waiting.await.unwrap().unwrap());
        assert_eq!(in_flight.count(), 0);
    }
}
