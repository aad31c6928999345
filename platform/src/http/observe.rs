//! One observer per HTTP request: a SERVER span continuing the caller's trace,
//! the `http_server_*` metrics, one access line, and the span's ids in a
//! `traceresponse` header, so a person (or a test) can find a page's trace.

use super::{HttpServerMetrics, OTHER_METHOD, UNMATCHED_ROUTE, known_method, route_of};
use crate::telemetry::{REQUEST_ID, TraceParent, call_span, extract, with_request_id};
use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use opentelemetry::trace::SpanKind;
use std::time::Instant;
use tracing::{Instrument as _, Span, field::Empty};

/// W3C Trace Context level 2's response header, absent when tracing is off.
pub const TRACERESPONSE: &str = "traceresponse";

/// `RUST_LOG` directives name it (`platform::http::trace=warn`): it stays put.
const ACCESS_TARGET: &str = "platform::http::trace";

/// Runs the rest of the stack inside the request's span, then counts, times
/// and logs the answer.
pub(super) async fn observe(
    State(metrics): State<HttpServerMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let span = server_span(&request);
    let method = request.method().clone();
    let route = route_of(&request).cloned();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let id = request.headers().get(REQUEST_ID).cloned();
    let serve = next.run(request).instrument(span.clone());
    let mut response = with_request_id(id, serve).await;

    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    metrics.observe(&[known_method(&method), route, status.as_str()], elapsed);

    // OpenTelemetry has no unsigned integers: a u16 would become a string.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // A 4xx is the client's mistake, not a server failure.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(ids) = TraceParent::of(&span) {
        let value = HeaderValue::from_bytes(&ids.text())
            .expect("hex digits and dashes are a valid header value");
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    // The span as the line's parent, not entered: the same ids, for less.
    tracing::info!(
        target: ACCESS_TARGET,
        parent: &span,
        method = method.as_str(),
        route,
        path,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request finished"
    );
    response
}

/// The request's span, a child of the trace context its headers carry, named
/// `{method} {route}` (`{method}` when no route matched; `HTTP` for a method
/// outside the standard set) as the semantic conventions ask.
fn server_span(request: &Request) -> Span {
    let method = known_method(request.method());
    let route = route_of(request).map(MatchedPath::as_str);
    let name_method = if method == OTHER_METHOD {
        "HTTP"
    } else {
        method
    };
    let name = match route {
        Some(route) => format!("{name_method} {route}"),
        None => name_method.to_owned(),
    };
    let remote = Some(extract(request.headers()));
    let span = call_span(remote, &name, SpanKind::Server, || {
        tracing::info_span!(
            "HTTP request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.request.method_original = Empty,
            http.route = route,
            url.path = request.uri().path(),
            http.response.status_code = Empty,
        )
    });
    if method == OTHER_METHOD {
        span.record("http.request.method_original", request.method().as_str());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        Router,
        body::Body,
        http::{Method, StatusCode},
        middleware::from_fn_with_state,
        routing::get,
    };
    use bookshop_test_support::spans::{Captured, attribute};
    use opentelemetry::{
        Value,
        trace::{SpanId, Status, TraceId},
    };
    use tower::ServiceExt;

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
            .layer(from_fn_with_state(
                HttpServerMetrics::register(&prometheus::Registry::new()).unwrap(),
                observe,
            ))
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

        let span = captured.spans.server_span();
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
    async fn the_response_names_the_server_span_in_a_traceresponse_header() {
        let captured = Captured::install();
        let response = app().oneshot(get_request("/books/7")).await.unwrap();
        let header = response.headers()[TRACERESPONSE]
            .to_str()
            .unwrap()
            .to_owned();
        let ids = captured.spans.server_span().span_context;
        assert_eq!(
            header,
            format!("00-{}-{}-01", ids.trace_id(), ids.span_id())
        );
    }

    #[tokio::test]
    async fn without_tracing_there_is_no_traceresponse_header() {
        // No OpenTelemetry layer in this thread: tracing is off.
        let response = app().oneshot(get_request("/books/7")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(TRACERESPONSE).is_none());
    }

    #[tokio::test]
    async fn an_unmatched_request_is_named_by_its_method_and_has_no_route() {
        let captured = Captured::install();
        assert_eq!(send(get_request("/nope")).await, StatusCode::NOT_FOUND);

        let span = captured.spans.server_span();
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

        let span = captured.spans.server_span();
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
        let span = captured.spans.server_span();
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

        let span = captured.spans.server_span();
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

        let server = captured.spans.server_span();
        let client = captured
            .spans
            .all()
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

        let lines = captured.logs.json_lines();
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
