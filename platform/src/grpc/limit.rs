//! A bound on the calls one gRPC service handles at once: past it, a call is
//! answered RESOURCE_EXHAUSTED at once instead of queueing, so a burst cannot
//! pile up work (and memory) for callers whose deadlines expire meanwhile.
//!
//! It wraps one service (`tonic::service::LayerExt::named_layer`), not the whole
//! server, so that health checks and reflection are still answered under load: a
//! readiness probe failing because the pod is busy would move its load onto the
//! others and spread the overload.
//!
//! tower's concurrency limit and load shed do the work. Their overload is an
//! error, and a service tonic routes to must be infallible (its errors are
//! statuses in the response), so axum's `HandleError` answers it.

use axum::{error_handling::HandleError, response::IntoResponse as _};
use std::future::{Ready, ready};
use tonic::Status;
use tower::{
    BoxError, Layer,
    limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer},
    load_shed::{LoadShed, error::Overloaded},
};

/// What a shed caller reads; it should back off and retry, elsewhere if it can.
pub const OVERLOADED: &str = "too many calls in progress; retry later";

type Answer = fn(BoxError) -> Ready<axum::response::Response>;

/// A service of `S` whose calls past the limit are shed.
pub type LimitCalls<S> = HandleError<LoadShed<ConcurrencyLimit<S>>, Answer, ()>;

/// Wraps a service in [`LimitCalls`]; every service it wraps shares one limit.
#[derive(Debug, Clone)]
pub struct LimitCallsLayer {
    limit: GlobalConcurrencyLimitLayer,
}

impl LimitCallsLayer {
    /// At most `max` calls at once (`max` is at least 1: a limit of 0 would
    /// refuse everything). A call holds its permit until the handler answered.
    pub fn new(max: usize) -> Self {
        Self {
            limit: GlobalConcurrencyLimitLayer::new(max.max(1)),
        }
    }
}

impl<S> Layer<S> for LimitCallsLayer {
    type Service = LimitCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandleError::new(LoadShed::new(self.limit.layer(inner)), answer as Answer)
    }
}

/// Trailers-only RESOURCE_EXHAUSTED for a shed call, like any status a handler
/// returns; the inner service is infallible, so nothing else is an error.
fn answer(err: BoxError) -> Ready<axum::response::Response> {
    debug_assert!(err.is::<Overloaded>(), "{err}");
    ready(
        Status::resource_exhausted(OVERLOADED)
            .into_http::<axum::body::Body>()
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use std::convert::Infallible;
    use tonic::{Code, body::Body};
    use tower::{Service, ServiceExt};

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

    fn code(response: &axum::response::Response) -> Code {
        Status::from_header_map(response.headers()).map_or(Code::Ok, |status| status.code())
    }

    #[tokio::test]
    async fn past_the_limit_a_call_is_answered_resource_exhausted_until_a_permit_is_back() {
        let (release, released) = tokio::sync::watch::channel(false);
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let inner = held(released).map_request(move |request| {
            let _ = arrived_tx.send(());
            request
        });
        let service = LimitCallsLayer::new(1).layer(inner);

        let first = tokio::spawn(service.clone().oneshot(Request::new(())));
        // The first call holds the only permit until released.
        arrived
            .recv()
            .await
            .expect("the first call reaches its handler");
        let shed = service.clone().oneshot(Request::new(())).await.unwrap();
        let status = Status::from_header_map(shed.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), OVERLOADED);

        release.send_replace(true);
        assert_eq!(code(&first.await.unwrap().unwrap()), Code::Ok);
        let after = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(code(&after), Code::Ok, "the permit is back");
    }
}
