//! A bound on the requests handled at once: past it, a request is answered at
//! once instead of queueing, so a burst cannot pile up work (and memory) for
//! callers who gave up meanwhile. tower's concurrency limit and load shed do
//! the work; axum's `HandleError` turns their overload into the answer.

use axum::{error_handling::HandleError, response::Response};
use std::future::Ready;
use tower::{
    BoxError, Layer,
    limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer},
    load_shed::LoadShed,
};

/// Answers a shed request. The wrapped services are infallible, so an
/// overload is the only error.
pub type Answer = fn(BoxError) -> Ready<Response>;

/// A service of `S` whose requests past the limit are shed.
pub type Shed<S> = HandleError<LoadShed<ConcurrencyLimit<S>>, Answer, ()>;

/// Wraps services in [`Shed`]; every service it wraps shares one limit (an
/// axum router wraps each route on its own).
#[derive(Debug, Clone)]
pub struct ShedLayer {
    limit: GlobalConcurrencyLimitLayer,
    answer: Answer,
}

impl ShedLayer {
    /// At most `max` (at least 1) at once; a request holds its permit until
    /// the handler answered.
    pub(crate) fn new(max: usize, answer: Answer) -> Self {
        Self {
            limit: GlobalConcurrencyLimitLayer::new(max.max(1)),
            answer,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandleError::new(LoadShed::new(self.limit.layer(inner)), self.answer)
    }
}

#[cfg(test)]
mod tests {
    use crate::grpc::{OVERLOADED, limit_calls};
    use http::{Request, Response};
    use std::convert::Infallible;
    use tonic::Status;
    use tonic::{Code, body::Body};
    use tower::Layer;
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
        let service = limit_calls(1).layer(inner);

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
