//! `http_server_requests_total` and `http_server_request_duration_seconds`,
//! by `method`, `route` (the template) and `status`; `http_server_panics_total`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Registry,
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry,
};
use std::time::Duration;

const LABELS: [&str; 3] = ["method", "route", "status"];

/// The HTTP server metrics, registered once and shared by every route.
#[derive(Clone, Debug)]
pub struct HttpServerMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    panics: IntCounter,
}

impl HttpServerMetrics {
    /// Registers the metrics in `registry`; fails if they are already there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let duration = HistogramOpts::new(
            "http_server_request_duration_seconds",
            "Time from receiving an HTTP request to its response head, in seconds.",
        );
        let duration = duration.buckets(crate::metrics::LATENCY_BUCKETS.to_vec());
        Ok(Self {
            requests: register_int_counter_vec_with_registry!(
                "http_server_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &LABELS,
                registry
            )?,
            duration: register_histogram_vec_with_registry!(duration, &LABELS, registry)?,
            panics: register_int_counter_with_registry!(
                "http_server_panics_total",
                "HTTP handlers that panicked; each request answered 500.",
                registry
            )?,
        })
    }

    pub(super) fn panics(&self) -> IntCounter {
        self.panics.clone()
    }

    pub(super) fn observe(&self, labels: &[&str; 3], elapsed: Duration) {
        self.requests.with_label_values(labels).inc();
        let duration = self.duration.with_label_values(labels);
        duration.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::UNMATCHED_ROUTE;
    use axum::http::Request;
    use axum::{
        Router,
        body::Body,
        http::{Method, StatusCode},
        middleware::from_fn_with_state,
        routing::get,
    };
    use bookshop_test_support::metrics::{Labels, labels, series};
    use std::collections::BTreeMap;
    use tower::ServiceExt;

    fn app(registry: &Registry) -> Router {
        Router::new()
            .route("/", get(|| async { "home" }))
            .route("/books/{id}", get(|| async { "a book" }))
            .route(
                "/broken",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .layer(from_fn_with_state(
                HttpServerMetrics::register(registry).unwrap(),
                super::super::observe::observe,
            ))
    }

    async fn send(app: &Router, method: Method, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    }

    /// The labels of one request's series.
    fn request(method: &str, route: &str, status: &str) -> Labels {
        labels(&[("method", method), ("route", route), ("status", status)])
    }

    #[tokio::test]
    async fn requests_are_labelled_by_route_template_and_status() {
        let registry = Registry::new();
        let app = app(&registry);
        assert_eq!(send(&app, Method::GET, "/books/1").await, StatusCode::OK);
        assert_eq!(send(&app, Method::GET, "/books/2").await, StatusCode::OK);
        assert_eq!(
            send(&app, Method::GET, "/broken").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(send(&app, Method::GET, "/").await, StatusCode::OK);

        let expected = BTreeMap::from([
            (request("GET", "/", "200"), 1.0),
            (request("GET", "/books/{id}", "200"), 2.0),
            (request("GET", "/broken", "500"), 1.0),
        ]);
        assert_eq!(series(&registry, "http_server_requests_total"), expected);
        assert_eq!(
            series(&registry, "http_server_request_duration_seconds"),
            expected
        );
    }

    #[tokio::test]
    async fn unmatched_paths_share_one_route_label() {
        let registry = Registry::new();
        let app = app(&registry);
        for path in ["/nope", "/wp-admin/setup.php", "/books"] {
            assert_eq!(send(&app, Method::GET, path).await, StatusCode::NOT_FOUND);
        }
        assert_eq!(
            series(&registry, "http_server_requests_total"),
            BTreeMap::from([(request("GET", UNMATCHED_ROUTE, "404"), 3.0)])
        );
    }

    #[tokio::test]
    async fn a_wrong_method_keeps_the_route_and_unknown_methods_are_bounded() {
        let registry = Registry::new();
        let app = app(&registry);
        assert_eq!(
            send(&app, Method::POST, "/").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(
            send(&app, made_up, "/").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            series(&registry, "http_server_requests_total"),
            BTreeMap::from([
                (request("POST", "/", "405"), 1.0),
                (request("_OTHER", "/", "405"), 1.0),
            ])
        );
    }

    #[tokio::test]
    async fn a_custom_fallback_is_counted_as_unmatched() {
        let registry = Registry::new();
        let app = Router::new()
            .route("/", get(|| async { "home" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
            .layer(from_fn_with_state(
                HttpServerMetrics::register(&registry).unwrap(),
                super::super::observe::observe,
            ));
        assert_eq!(send(&app, Method::GET, "/").await, StatusCode::OK);
        assert_eq!(
            send(&app, Method::GET, "/nope").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            series(&registry, "http_server_requests_total"),
            BTreeMap::from([
                (request("GET", "/", "200"), 1.0),
                (request("GET", UNMATCHED_ROUTE, "404"), 1.0),
            ])
        );
    }

    #[test]
    fn the_duration_histogram_spans_half_a_millisecond_to_ten_seconds() {
        let registry = Registry::new();
        let metrics = HttpServerMetrics::register(&registry).unwrap();
        metrics.observe(&["GET", "/", "200"], Duration::ZERO);
        let text = crate::metrics::render(&registry).unwrap();
        assert!(
            text.contains(r#"http_server_request_duration_seconds_bucket{method="GET",route="/",status="200",le="0.0005"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_server_request_duration_seconds_bucket{method="GET",route="/",status="200",le="10"}"#),
            "{text}"
        );
        assert_eq!(
            text.matches("http_server_request_duration_seconds_bucket")
                .count(),
            15
        );
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let registry = Registry::new();
        HttpServerMetrics::register(&registry).unwrap();
        assert!(HttpServerMetrics::register(&registry).is_err());
    }
}
