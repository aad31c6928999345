//! HTTP server middleware for axum routers: one observer per request, with its
//! SERVER span, access line, `traceresponse` header and `http_server_*` metrics
//! ([`observe`], [`metrics`]); requests past a concurrency limit shed with 503
//! ([`load_shed`]); panicking handlers answered with a 500 page ([`panic`]).
//! [`with_layers`] stacks them in the order written down in [`crate::layers`].
//! And [`serve`], which serves a router with bounds on request heads and on idle
//! kept-alive connections.
//!
//! They name a request by its route template (axum's [`MatchedPath`]), never by
//! its raw path, so they go on with `Router::layer`, where routing is done.

mod head_deadline;
mod load_shed;
mod metrics;
mod observe;
mod panic;
mod serve;

pub use load_shed::RETRY_AFTER_SECONDS;
pub use metrics::HttpServerMetrics;
pub use observe::TRACERESPONSE;
pub use panic::PanicPage;
pub use serve::{ConnectionLimits, MIN_HEADER_BYTES, serve};

use crate::shutdown::InFlight;
use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::Method,
    middleware,
    response::IntoResponse,
    routing::Route,
};
use std::convert::Infallible;
use tower::{Layer, Service};

/// What the HTTP layers need besides the service's own response headers.
pub struct Layers {
    /// The `http_server_*` metrics, `http_server_panics_total` included.
    pub metrics: HttpServerMetrics,
    /// The most requests handled at once; past it a request is answered 503.
    pub max_concurrent_requests: usize,
    /// The page a panicking handler answers with, forced to 500.
    pub panic_page: PanicPage,
    /// Counts each request until its response ends.
    pub in_flight: InFlight,
}

/// `router` with every layer on, in the order of [`crate::layers`]: in-flight
/// count, observer, `headers` (the service's response headers, on every answer:
/// error pages and 503s included), load shedding, panics.
///
/// Each goes on with `Router::layer` (not `route_layer`), so the fallback's
/// 404s get all of them, and the observer can read the matched route.
pub fn with_layers<L>(router: Router, layers: Layers, headers: L) -> Router
where
    L: Layer<Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Response: IntoResponse + 'static,
    <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    // The layer added last is outermost.
    let router = panic::catch_panics(router, layers.metrics.panics(), layers.panic_page);
    load_shed::limit_concurrency(router, layers.max_concurrent_requests)
        .layer(headers)
        .layer(middleware::from_fn_with_state(
            layers.metrics,
            observe::observe,
        ))
        .layer(layers.in_flight.layer())
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
    use bookshop_test_support::spans::{Captured, attribute};
    use opentelemetry::Value;
    use prometheus::Registry;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_layers_trace_log_and_count_each_request_once() {
        let captured = Captured::install();
        let registry = Registry::new();
        let in_flight = InFlight::default();
        let layers = Layers {
            metrics: HttpServerMetrics::register(&registry).unwrap(),
            max_concurrent_requests: 1,
            panic_page: std::sync::Arc::new(|| "oops".into_response()),
            in_flight: in_flight.clone(),
        };
        let app = with_layers(
            Router::new().route("/", get(|| async { "home" })),
            layers,
            tower::layer::util::Identity::new(),
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
        drop(response);
        assert_eq!(in_flight.count(), 0, "the body is gone");
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
