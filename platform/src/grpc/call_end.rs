//! How a gRPC call ended, found once per call: a response future and body
//! ([`Ending`]) that hand the final [`Status`] to an [`OnEnd`] exactly once. Where
//! the status can arrive: docs/design.md, "Middleware order".

use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tonic::{Code, Status};
use tracing::Span;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a layer does when a call ends.
pub trait OnEnd: Send + 'static {
    /// Called exactly once, with the status the caller sees (or would have seen).
    fn on_end(self, status: &Status);

    /// The span the wrapped future is polled (and dropped) in.
    fn span(&self) -> Option<&Span> {
        None
    }

    /// The span the wrapped body is polled in.
    fn body_span(&self) -> Option<&Span> {
        self.span()
    }
}

/// Go's names of the codes, in numeric order, as go-grpc-prometheus writes
/// `grpc_code` (note `OK` and `Canceled`).
#[rustfmt::skip]
const CODE_NAMES: [&str; 17] = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
];

pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code as usize]
}

/// Every code, in numeric order.
pub fn all_codes() -> impl Iterator<Item = Code> {
    (0..).map(Code::from_i32).take(CODE_NAMES.len())
}

/// The codes the OpenTelemetry RPC conventions mark a SERVER span failed for:
/// the server's fault, not the caller's.
pub fn is_server_fault(code: Code) -> bool {
    use Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// The status a response carries before its body: a trailers-only response's
/// `grpc-status`, a non-200 mapped as tonic's client maps it, or UNKNOWN for
/// an empty 200 without one.
fn status_in_headers<B: Body>(response: &Response<B>) -> Option<Status> {
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Some(status);
    }
    let http_status = response.status();
    if http_status != StatusCode::OK {
        // https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
        let code = match http_status {
            StatusCode::BAD_REQUEST => Code::Internal,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::Unimplemented,
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
            _ => Code::Unknown,
        };
        return Some(Status::new(code, format!("HTTP status {http_status}")));
    }
    response.body().is_end_stream().then(missing_status)
}

fn status_in_trailers(trailers: &HeaderMap) -> Status {
    // OK without copying the trailers into metadata, as `from_header_map` does.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    if trailers.get(GRPC_STATUS).is_some_and(|code| code == "0") {
        return Status::new(Code::Ok, "");
    }
    Status::from_header_map(trailers).unwrap_or_else(missing_status)
}

fn missing_status() -> Status {
    Status::unknown("the response ended without a grpc-status")
}

/// Ends a call dropped before its status arrived as CANCELLED: the inner
/// layers end first, inside the span, as when a call ends normally.
fn end_abandoned<T, C: OnEnd>(mut inner: Pin<&mut Option<T>>, on_end: &mut Option<C>) {
    if let Some(on_end) = on_end.take() {
        {
            let _entered = on_end.span().map(Span::enter);
            inner.set(None);
        }
        on_end.on_end(&Status::cancelled("the call was abandoned before it ended"));
    }
}

pin_project! {
    /// A call's response future, then its body: each ends the call once (if
    /// not ended yet) when it finds the status, or as CANCELLED when dropped.
    pub struct Ending<T, C>
    where
        C: OnEnd,
    {
        #[pin]
        inner: Option<T>,
        on_end: Option<C>,
    }

    impl<T, C> PinnedDrop for Ending<T, C>
    where
        C: OnEnd,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            end_abandoned(this.inner, this.on_end);
        }
    }
}

impl<T, C: OnEnd> Ending<T, C> {
    pub fn new(inner: T, on_end: Option<C>) -> Self {
        Self {
            inner: Some(inner),
            on_end,
        }
    }
}

/// The response: ends the call if its status is in the headers, else hands
/// over to the body. Errors come out as the boxed [`Status`] tonic would make
/// of them, so what was counted is what the caller gets.
impl<F, C, B, E> Future for Ending<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: OnEnd,
    B: Body,
{
    type Output = Result<Response<Ending<B, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = {
            let _entered = this.on_end.as_ref().and_then(OnEnd::span).map(Span::enter);
            let inner = this.inner.as_mut().as_pin_mut();
            ready!(inner.expect("polled after it completed").poll(cx))
        };
        this.inner.set(None);
        let on_end = this.on_end.take().expect("polled after it completed");
        Poll::Ready(match result {
            Err(err) => {
                let status = Status::from_error(err.into());
                on_end.on_end(&status);
                Err(Box::new(status))
            }
            Ok(response) => match status_in_headers(&response) {
                Some(status) => {
                    on_end.on_end(&status);
                    Ok(response.map(|body| Ending::new(body, None)))
                }
                None => Ok(response.map(|body| Ending::new(body, Some(on_end)))),
            },
        })
    }
}

/// The body: ends the call at the trailers or at an error.
impl<B, C> Body for Ending<B, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    C: OnEnd,
{
    type Data = B::Data;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = {
            let _entered = this
                .on_end
                .as_ref()
                .and_then(OnEnd::body_span)
                .map(Span::enter);
            let inner = this.inner.as_mut().as_pin_mut();
            ready!(inner.expect("only emptied when dropped").poll_frame(cx))
        };
        // The status is made only for a call not ended yet.
        let mut end = |status: &dyn Fn() -> Status| {
            if let Some(on_end) = this.on_end.take() {
                on_end.on_end(&status());
            }
        };
        Poll::Ready(match polled {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    end(&|| status_in_trailers(trailers));
                }
                Some(Ok(frame))
            }
            Some(Err(err)) => {
                let status = Status::from_error(err.into());
                end(&|| status.clone());
                Some(Err(status))
            }
            None => {
                end(&missing_status);
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.as_ref();
        inner.map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
    };
    use tonic::codegen::Bytes;

    /// Records every status it is handed.
    #[derive(Clone, Default)]
    struct Ends(Arc<Mutex<Vec<(Code, String)>>>);

    impl OnEnd for Ends {
        fn on_end(self, status: &Status) {
            let end = (status.code(), status.message().to_owned());
            self.0.lock().unwrap().push(end);
        }
    }

    impl Ends {
        fn codes(&self) -> Vec<Code> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(code, _)| *code)
                .collect()
        }
    }

    /// A body of ready frames; pending once they run out unless `ends`.
    #[derive(Default)]
    struct Frames {
        frames: VecDeque<Result<Frame<Bytes>, Status>>,
        ends: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(frame)),
                None if self.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.ends && self.frames.is_empty()
        }
    }

    fn body(frames: Vec<Result<Frame<Bytes>, Status>>, ends: bool) -> Frames {
        Frames {
            frames: frames.into(),
            ends,
        }
    }

    fn data() -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::from_static(b"message")))
    }

    fn trailers(code: Code) -> Result<Frame<Bytes>, Status> {
        let mut trailers = HeaderMap::new();
        Status::new(code, "").add_header(&mut trailers).unwrap();
        Ok(Frame::trailers(trailers))
    }

    async fn call(
        response: Result<Response<Frames>, BoxError>,
        ends: &Ends,
    ) -> Result<Response<Ending<Frames, Ends>>, BoxError> {
        Ending::new(std::future::ready(response), Some(ends.clone())).await
    }

    async fn read_to_end(body: &mut Ending<Frames, Ends>) {
        while std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .is_some()
        {}
    }

    #[tokio::test]
    async fn a_trailers_only_response_ends_the_call_at_its_headers() {
        let ends = Ends::default();
        let response = Status::not_found("no such book").into_http::<Frames>();
        let response = call(Ok(response), &ends).await.unwrap();
        assert_eq!(
            *ends.0.lock().unwrap(),
            [(Code::NotFound, "no such book".to_owned())]
        );
        drop(response);
        assert_eq!(ends.codes(), [Code::NotFound], "ended once");
    }

    #[tokio::test]
    async fn a_successful_call_ends_at_its_trailers_once() {
        let ends = Ends::default();
        let response = Response::new(body(vec![data(), trailers(Code::Ok)], true));
        let mut body = call(Ok(response), &ends).await.unwrap().into_body();
        assert_eq!(ends.codes(), [], "not before the trailers");
        read_to_end(&mut body).await;
        drop(body);
        assert_eq!(ends.codes(), [Code::Ok]);
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_is_the_one_that_counts() {
        let ends = Ends::default();
        let response = Response::new(body(vec![data(), trailers(Code::DataLoss)], true));
        let mut body = call(Ok(response), &ends).await.unwrap().into_body();
        read_to_end(&mut body).await;
        assert_eq!(ends.codes(), [Code::DataLoss]);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_trailers_ends_the_call_as_cancelled() {
        let ends = Ends::default();
        let response = Response::new(body(vec![data()], false));
        let body = call(Ok(response), &ends).await.unwrap().into_body();
        drop(body);
        assert_eq!(ends.codes(), [Code::Cancelled]);
    }

    #[test]
    fn a_future_dropped_before_the_response_ends_the_call_as_cancelled() {
        let ends = Ends::default();
        let future = Ending::new(
            std::future::pending::<Result<Response<Frames>, BoxError>>(),
            Some(ends.clone()),
        );
        drop(future);
        assert_eq!(ends.codes(), [Code::Cancelled]);
    }

    #[tokio::test]
    async fn a_body_that_ends_without_a_status_ends_the_call_as_unknown() {
        let ends = Ends::default();
        let response = Response::new(body(vec![data()], true));
        let mut body = call(Ok(response), &ends).await.unwrap().into_body();
        read_to_end(&mut body).await;
        assert_eq!(ends.codes(), [Code::Unknown]);
    }

    #[tokio::test]
    async fn an_error_becomes_the_status_tonic_would_make_of_it() {
        let ends = Ends::default();
        // What tonic's channel fails with when a call's `grpc-timeout` expires.
        let Err(err) = call(Err(Box::new(tonic::TimeoutExpired(()))), &ends).await else {
            panic!("the error passes through");
        };
        let status = err.downcast::<Status>().expect("a Status comes out");
        assert_eq!(status.code(), Code::Cancelled);
        assert_eq!(ends.codes(), [Code::Cancelled]);
    }

    #[tokio::test]
    async fn an_http_error_without_grpc_status_maps_as_tonic_maps_it() {
        let ends = Ends::default();
        let mut response = Response::new(body(vec![data()], true));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        call(Ok(response), &ends).await.unwrap();
        assert_eq!(ends.codes(), [Code::Unavailable]);
    }

    #[test]
    fn code_names_are_go_grpc_prometheus_ones_in_numeric_order() {
        for (number, code) in all_codes().enumerate() {
            assert_eq!(code as usize, number);
        }
        assert_eq!(all_codes().last(), Some(Code::Unauthenticated));
        let names: Vec<&str> = all_codes().map(code_name).collect();
        assert_eq!(
            names,
            [
                "OK",
                "Canceled",
                "Unknown",
                "InvalidArgument",
                "DeadlineExceeded",
                "NotFound",
                "AlreadyExists",
                "PermissionDenied",
                "ResourceExhausted",
                "FailedPrecondition",
                "Aborted",
                "OutOfRange",
                "Unimplemented",
                "Internal",
                "Unavailable",
                "DataLoss",
                "Unauthenticated",
            ]
        );
    }
}
