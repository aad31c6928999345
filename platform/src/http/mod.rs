//! HTTP server middleware for axum routers ([`with_layers`]): one observer per
//! request (`observe`, `metrics`), load shedding with 503, panics answered
//! with the service's 500 page. They name a request by its route template
//! (axum's [`MatchedPath`]), never its raw path, so they go on with
//! `Router::layer`, after routing. And [`serve`], with bounds on request heads.

mod head_deadline;
mod metrics;
mod observe;
mod serve;

pub use metrics::HttpServerMetrics;
pub use observe::TRACERESPONSE;
pub use serve::{ConnectionLimits, MIN_HEADER_BYTES, serve};

use crate::{panic::OnPanic, shed::ShedLayer, shutdown::InFlight};
use axum::{
    Router,
    extract::MatchedPath,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use std::{future::ready, sync::Arc};
use tower::ServiceBuilder;

/// Seconds a shed client is asked to wait before trying again.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// What a panicking request is answered with, forced to 500: the service's
/// own error page, made inside the request's span.
pub type PanicPage = Arc<dyn Fn() -> Response + Send + Sync>;

/// What the HTTP layers need besides the service's own response headers.
pub struct Layers {
    /// The `http_server_*` metrics, `http_server_panics_total` included.
    pub metrics: HttpServerMetrics,
    /// The most requests handled at once; past it a request is answered 503.
    pub max_concurrent_requests: usize,
    pub panic_page: PanicPage,
    /// Counts each request until its response ends.
    pub in_flight: InFlight,
}

/// `router` with every layer on, in the order of docs/design.md: in-flight
/// count, observer, `headers` (the service's response headers, set over any
/// the answer has), load shedding, panics. `Router::layer`, not `route_layer`:
/// the fallback's 404s get them too. One `Router::layer` for the whole stack:
/// axum boxes each call's layer, and clones the boxes for every request.
pub fn with_layers(
    router: Router,
    layers: Layers,
    headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
) -> Router {
    let page = layers.panic_page;
    let panics = OnPanic {
        panics: layers.metrics.panics(),
        message: "an HTTP handler panicked",
        answer: move || {
            let mut response = page();
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        },
    };
    let shed = ShedLayer::new(layers.max_concurrent_requests, |_| {
        let busy = "The shop is busy; please try again in a moment.\n";
        let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
        ready((StatusCode::SERVICE_UNAVAILABLE, retry, busy).into_response())
    });
    let headers: Arc<[(HeaderName, HeaderValue)]> = headers.into_iter().collect();
    let set_headers = move |mut response: Response| {
        for (name, value) in headers.iter() {
            response.headers_mut().insert(name, value.clone());
        }
        response
    };
    router.layer(
        ServiceBuilder::new()
            .layer(layers.in_flight.layer())
            .layer(middleware::from_fn_with_state(
                layers.metrics,
                observe::observe,
            ))
            .map_response(set_headers)
            .layer(shed)
            .layer(panics.layer()),
    )
}

/// The route template a request matched; `None` for the fallback's.
fn route_of<B>(request: &axum::http::Request<B>) -> Option<&MatchedPath> {
    request.extensions().get::<MatchedPath>()
}

/// The method as OpenTelemetry's conventions bound it: a standard one, else
/// `_OTHER`, so a client cannot mint label values.
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

/// The `route` of requests no route matched: one value whatever the path, so
/// scanners probing random paths cannot grow the series count.
pub const UNMATCHED_ROUTE: &str = "unmatched";

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
            [],
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
