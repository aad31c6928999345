//! HTTP server middleware for axum routers, written as `axum::middleware::from_fn`:
//! a SERVER span, an access log line and a `traceresponse` header per request
//! ([`trace`]), and the `http_server_*` Prometheus metrics ([`metrics`]); and
//! panicking handlers answered with a 500 page ([`catch_panics`]), and requests
//! past a concurrency limit shed with 503 ([`limit_concurrency`]); and [`serve`],
//! which serves a router with bounds on request heads. The order
//! they go on in is written once, in the marketplace's `pages::router`.
//!
//! Both name a request by its route template (axum's [`MatchedPath`]), never
//! by its raw path, so they go on with `Router::layer`, where routing is done.

mod load_shed;
mod metrics;
mod panic;
mod serve;
mod trace;

pub use load_shed::{RETRY_AFTER_SECONDS, limit_concurrency};
pub use metrics::HttpServerMetrics;
pub use panic::{PanicAnswer, PanicPage, catch_panics};
pub use serve::{ConnectionLimits, MIN_HEADER_BYTES, serve};
pub use trace::TRACERESPONSE;

use axum::{Router, extract::MatchedPath, http::Method, middleware};

/// Traces, logs and counts every request `router` answers: `Router::layer`, not
/// `route_layer`, so the fallback's 404s count too.
pub fn instrument<S>(router: Router<S>, metrics: HttpServerMetrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // The layer added last is outermost. Trace is, so its span is current while
    // everything inside runs: the handler's log lines and client spans hang off
    // it, and the metrics time the same work the span does.
    router
        .layer(middleware::from_fn_with_state(metrics, metrics::record))
        .layer(middleware::from_fn(trace::trace))
}

/// The route template a request matched, `None` when it matched no route
/// (the fallback answers those).
fn route_of<B>(request: &axum::http::Request<B>) -> Option<&MatchedPath> {
    request.extensions().get::<MatchedPath>()
}

/// The method as OpenTelemetry's semantic conventions bound it: one of the
/// standard methods, else `_OTHER`, so a client cannot mint label values.
fn known_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER_METHOD,
    }
}

/// The `route` of requests no route matched, in metrics and access lines:
/// one value whatever the path, so scanners probing random paths cannot grow
/// the series count.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method value of a request whose method is not a standard one.
const OTHER_METHOD: &str = "_OTHER";

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request, routing::get};
    use bookshop_testing::spans::{Captured, attribute};
    use opentelemetry::Value;
    use prometheus::Registry;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_layers_trace_log_and_count_each_request_once() {
        let captured = Captured::install();
        let registry = Registry::new();
        let app = instrument(
            Router::new().route("/", get(|| async { "home" })),
            HttpServerMetrics::register(&registry).unwrap(),
        );

        let response = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(response.status().is_success());

        let span = captured.spans.server_span();
        assert_eq!(span.name, "GET /");
        assert_eq!(attribute(&span, "http.route"), Some(Value::from("/")));
        assert_eq!(captured.logs.with_message("request finished").len(), 1);
        let text = crate::metrics::render(&registry).unwrap();
        assert!(
            text.contains(r#"http_server_requests_total{method="GET",route="/",status="200"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_value() {
        assert_eq!(known_method(&Method::GET), "GET");
        assert_eq!(known_method(&Method::PATCH), "PATCH");
        assert_eq!(
            known_method(&Method::from_bytes(b"PROPFIND").unwrap()),
            OTHER_METHOD
        );
    }
}
