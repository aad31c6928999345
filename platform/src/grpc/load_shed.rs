//! A bound on the calls a gRPC service handles at once: past it, a call is
//! answered RESOURCE_EXHAUSTED at once instead of queueing, so a burst cannot pile
//! up work (and memory) for callers whose deadlines expire meanwhile.
//!
//! It wraps one service (`tonic::service::LayerExt::named_layer`), not the whole
//! server, so that health checks and reflection are still answered under load: a
//! readiness probe failing because the pod is busy would move its load onto the
//! others and spread the overload.
//!
//! Not tower's `LoadShed` over a `GlobalConcurrencyLimit`, as the HTTP side does:
//! their overload is an error, and a tonic service must be infallible (its errors
//! are statuses in the response). A semaphore's `try_acquire` is the same test.

use http::{Request, Response};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// What a shed caller reads; it should back off and retry, elsewhere if it can.
pub const OVERLOADED: &str = "too many calls in progress; retry later";

/// Wraps a service in [`LimitCalls`]; every service it wraps shares one limit.
#[derive(Debug, Clone)]
pub struct LimitCallsLayer {
    permits: Arc<Semaphore>,
}

impl LimitCallsLayer {
    /// At most `max` calls at once (`max` is at least 1: a limit of 0 would
    /// refuse everything).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<S> Layer<S> for LimitCallsLayer {
    type Service = LimitCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitCalls {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// Runs a call of `S` if a permit is free, holding it until the handler has
/// answered; answers RESOURCE_EXHAUSTED otherwise.
#[derive(Debug, Clone)]
pub struct LimitCalls<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for LimitCalls<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's generated services are always ready: this never waits.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => LimitFuture::Admitted {
                inner: self.inner.call(request),
                _permit: permit,
            },
            Err(_) => LimitFuture::Shed,
        }
    }
}

pin_project! {
    /// The response future of [`LimitCalls`].
    #[project = LimitProj]
    pub enum LimitFuture<F> {
        /// Running, with its permit.
        Admitted { #[pin] inner: F, _permit: OwnedSemaphorePermit },
        /// Over the limit: answered at once.
        Shed,
    }
}

impl<F> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitProj::Admitted { inner, .. } => inner.poll(cx),
            // Trailers-only, like any status a handler returns.
            LimitProj::Shed => Poll::Ready(Ok(Status::resource_exhausted(OVERLOADED).into_http())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tower::ServiceExt;

    /// Answers OK once `release` is sent (or dropped).
    fn held(
        release: tokio::sync::watch::Receiver<bool>,
    ) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
    {
        tower::service_fn(move |_: Request<()>| {
            let mut release = release.clone();
            async move {
                let _ = release.wait_for(|go| *go).await;
                Ok::<_, Infallible>(Response::new(Body::default()))
            }
        })
    }

    fn code(response: &Response<Body>) -> Code {
        Status::from_header_map(response.headers()).map_or(Code::Ok, |status| status.code())
    }

    #[tokio::test]
    async fn past_the_limit_a_call_is_answered_resource_exhausted_until_a_permit_is_back() {
        let (release, released) = tokio::sync::watch::channel(false);
        let layer = LimitCallsLayer::new(1);
        let service = layer.layer(held(released));

        let first = tokio::spawn(service.clone().oneshot(Request::new(())));
        // The first call holds the only permit until released.
        while layer.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let shed = service.clone().oneshot(Request::new(())).await.unwrap();
        let status = Status::from_header_map(shed.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), OVERLOADED);

        release.send_replace(true);
        assert_eq!(code(&first.await.unwrap().unwrap()), Code::Ok);
        assert_eq!(layer.permits.available_permits(), 1, "the permit is back");
        let after = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(code(&after), Code::Ok);
    }
}
