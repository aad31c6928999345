//! A SERVER span per HTTP request, continuing the caller's trace, and one
//! access log line when the request is answered.
//!
//! Hand-written rather than tower-http's `TraceLayer`: its `OnResponse` sees
//! the response but not the request, and the access line needs both.

use super::{OTHER_METHOD, UNMATCHED_ROUTE, known_method, route_of};
use axum::{
    extract::MatchedPath,
    http::{Method, Request, Response},
};
use opentelemetry_http::HeaderExtractor;
use pin_project_lite::pin_project;
use std::{
    fmt::Display,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};
use tower::{Layer, Service};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Wraps services in [`Trace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer {
    _private: (),
}

impl TraceLayer {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

/// Runs `S` inside a SERVER span named `{method} {route}` and logs one line
/// per answered request.
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let span = server_span(&request);
        let access = Access {
            method: request.method().clone(),
            route: route_of(&request).cloned(),
            path: request.uri().path().to_owned(),
            started: Instant::now(),
        };
        // Entered for the call too: some services start their work in `call`.
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner,
            span,
            access: Some(access),
        }
    }
}

/// The request's span, a child of the trace context its headers carry.
fn server_span<B>(request: &Request<B>) -> Span {
    let method = known_method(request.method());
    let route = route_of(request).map(MatchedPath::as_str);
    // Semantic conventions: `{method} {route}`, just `{method}` when no route
    // matched, and `HTTP` standing for a method outside the standard set.
    let name_method = if method == OTHER_METHOD {
        "HTTP"
    } else {
        method
    };
    let name = match route {
        Some(route) => format!("{name_method} {route}"),
        None => name_method.to_owned(),
    };
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.request.method_original = Empty,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = Empty,
    );
    if method == OTHER_METHOD {
        span.record("http.request.method_original", request.method().as_str());
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Fails only when no OpenTelemetry layer is installed (the SDK disabled,
    // some tests): then there is no trace to continue.
    let _ = span.set_parent(parent);
    span
}

/// What the access line says besides the status.
struct Access {
    method: Method,
    route: Option<MatchedPath>,
    path: String,
    started: Instant,
}

pin_project! {
    /// The response future of [`Trace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        access: Option<Access>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let Some(access) = this.access.take() else {
            return Poll::Ready(result);
        };
        let duration_ms = access.started.elapsed().as_secs_f64() * 1000.0;
        let method = access.method.as_str();
        let route = access
            .route
            .as_ref()
            .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        let path = access.path.as_str();
        match &result {
            Ok(response) => {
                let status = response.status();
                // An i64: OpenTelemetry has no unsigned integers, and
                // tracing-opentelemetry would turn a u16 into a string.
                this.span
                    .record("http.response.status_code", i64::from(status.as_u16()));
                // Only 5xx: a 4xx is the client's mistake, not a server failure.
                if status.is_server_error() {
                    this.span.record("otel.status_code", "ERROR");
                }
                tracing::info!(
                    method,
                    route,
                    path,
                    status = status.as_u16(),
                    duration_ms,
                    "request finished"
                );
            }
            Err(err) => {
                this.span.record("otel.status_code", "ERROR");
                tracing::error!(method, route, path, duration_ms, %err, "request failed");
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::test_support::LogBuffer;
    use axum::{Router, body::Body, http::StatusCode, routing::get};
    use opentelemetry::{
        Value,
        trace::{SpanId, SpanKind, Status, TraceId, TracerProvider as _},
    };
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        propagation::TraceContextPropagator,
        trace::{SdkTracerProvider, SpanData, SpanExporter},
    };
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;
    use tracing::subscriber::DefaultGuard;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps ended spans in memory.
    #[derive(Clone, Debug, Default)]
    struct Spans(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Spans {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Spans and JSON log lines of this thread, while it lives. Tests run on a
    /// current-thread runtime, so everything the request does is captured.
    pub(in crate::http) struct Captured {
        spans: Spans,
        logs: LogBuffer,
        _provider: SdkTracerProvider,
        _default: DefaultGuard,
    }

    impl Captured {
        pub(in crate::http) fn install() -> Self {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            let spans = Spans::default();
            // The simple processor exports as each span ends: no flush to wait for.
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build();
            let logs = LogBuffer::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(writer),
                );
            Self {
                spans,
                logs,
                _provider: provider,
                _default: tracing::subscriber::set_default(subscriber),
            }
        }

        /// The spans that ended so far, in the order they ended.
        pub(in crate::http) fn spans(&self) -> Vec<SpanData> {
            self.spans.0.lock().unwrap().clone()
        }

        /// The one ended server span.
        pub(in crate::http) fn server_span(&self) -> SpanData {
            let mut servers: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|span| span.span_kind == SpanKind::Server)
                .collect();
            assert_eq!(servers.len(), 1, "{servers:#?}");
            servers.remove(0)
        }

        pub(in crate::http) fn log_lines(&self) -> Vec<serde_json::Value> {
            self.logs.json_lines()
        }
    }

    pub(in crate::http) fn attribute(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes
            .iter()
            .find(|pair| pair.key.as_str() == key)
            .map(|pair| pair.value.clone())
    }

    fn app() -> Router {
        Router::new()
            .route("/books/{id}", get(|| async { "a book" }))
            .route(
                "/broken",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .route(
                "/nested",
                get(|| async {
                    // As the marketplace's gRPC client span would be.
                    tracing::info_span!("client call").in_scope(|| "called");
                }),
            )
            .layer(TraceLayer::new())
    }

    async fn send(request: Request<Body>) -> StatusCode {
        app().oneshot(request).await.unwrap().status()
    }

    fn get_request(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_gets_a_server_span_named_by_its_route_template() {
        let captured = Captured::install();
        assert_eq!(send(get_request("/books/7")).await, StatusCode::OK);

        let span = captured.server_span();
        assert_eq!(span.name, "GET /books/{id}");
        let expected = [
            ("http.request.method", Value::from("GET")),
            ("http.route", Value::from("/books/{id}")),
            ("url.path", Value::from("/books/7")),
            ("http.response.status_code", Value::I64(200)),
        ];
        for (key, value) in expected {
            assert_eq!(attribute(&span, key), Some(value), "{key}: {span:#?}");
        }
        assert_eq!(span.status, Status::Unset);
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "a root without traceparent"
        );
    }

    #[tokio::test]
    async fn an_unmatched_request_is_named_by_its_method_and_has_no_route() {
        let captured = Captured::install();
        assert_eq!(send(get_request("/nope")).await, StatusCode::NOT_FOUND);

        let span = captured.server_span();
        assert_eq!(span.name, "GET");
        assert_eq!(attribute(&span, "http.route"), None);
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            Some(Value::I64(404))
        );
        // A 4xx is the client's mistake: the server span stays unset.
        assert_eq!(span.status, Status::Unset);
    }

    #[tokio::test]
    async fn a_method_outside_the_standard_set_is_reported_as_other() {
        let captured = Captured::install();
        let request = Request::builder()
            .method(Method::from_bytes(b"BREW").unwrap())
            .uri("/books/1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(request).await, StatusCode::METHOD_NOT_ALLOWED);

        let span = captured.server_span();
        assert_eq!(span.name, "HTTP /books/{id}");
        assert_eq!(
            attribute(&span, "http.request.method"),
            Some(Value::from("_OTHER"))
        );
        assert_eq!(
            attribute(&span, "http.request.method_original"),
            Some(Value::from("BREW"))
        );
    }

    #[tokio::test]
    async fn a_server_error_marks_the_span_as_failed() {
        let captured = Captured::install();
        assert_eq!(
            send(get_request("/broken")).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let span = captured.server_span();
        assert!(matches!(span.status, Status::Error { .. }), "{span:#?}");
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            Some(Value::I64(500))
        );
    }

    #[tokio::test]
    async fn the_span_continues_the_trace_of_the_traceparent_header() {
        let captured = Captured::install();
        let request = Request::get("/books/1")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(request).await, StatusCode::OK);

        let span = captured.server_span();
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("b7ad6b7169203331").unwrap()
        );
        assert!(span.parent_span_is_remote);
    }

    #[tokio::test]
    async fn the_handler_runs_inside_the_server_span() {
        let captured = Captured::install();
        assert_eq!(send(get_request("/nested")).await, StatusCode::OK);

        let server = captured.server_span();
        let client = captured
            .spans()
            .into_iter()
            .find(|span| span.name == "client call")
            .expect("the handler's span ended");
        assert_eq!(client.parent_span_id, server.span_context.span_id());
        assert_eq!(
            client.span_context.trace_id(),
            server.span_context.trace_id()
        );
    }

    #[tokio::test]
    async fn each_request_logs_one_access_line_inside_its_span() {
        let captured = Captured::install();
        assert_eq!(send(get_request("/books/7")).await, StatusCode::OK);
        assert_eq!(send(get_request("/nope")).await, StatusCode::NOT_FOUND);

        let lines = captured.log_lines();
        let access: Vec<_> = lines
            .iter()
            .filter(|line| line["message"] == "request finished")
            .collect();
        assert_eq!(access.len(), 2, "{lines:#?}");
        let (found, missing) = (access[0], access[1]);
        assert_eq!(found["level"], "INFO");
        assert_eq!(found["method"], "GET");
        assert_eq!(found["route"], "/books/{id}");
        assert_eq!(found["path"], "/books/7");
        assert_eq!(found["status"], 200);
        assert!(found["duration_ms"].as_f64().is_some(), "{found}");
        assert_eq!(found["span"]["name"], "HTTP request", "{found}");
        assert_eq!(missing["route"], UNMATCHED_ROUTE);
        assert_eq!(missing["path"], "/nope");
        assert_eq!(missing["status"], 404);
    }
}
