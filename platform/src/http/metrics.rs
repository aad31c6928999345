//! `http_server_requests_total` and `http_server_request_duration_seconds`,
//! labelled by `method`, `route` (the template) and `status`.

use super::{UNMATCHED_ROUTE, known_method, route_of};
use axum::{
    extract::MatchedPath,
    http::{Request, Response},
};
use pin_project_lite::pin_project;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};
use tower::{Layer, Service};

/// The `status` of a request whose service failed instead of answering
/// (never under axum, whose services are infallible).
const FAILED_STATUS: &str = "error";

/// From half a millisecond (a cached page) to ten seconds (past any deadline).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const LABELS: [&str; 3] = ["method", "route", "status"];

/// The two HTTP server metrics, registered once and shared by every route.
#[derive(Clone, Debug)]
pub struct HttpServerMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpServerMetrics {
    /// Registers the metrics in `registry`; fails if they are already there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_server_requests_total",
                "HTTP requests answered, by method, route template and status.",
            ),
            &LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Time from receiving an HTTP request to its response head, in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &LABELS,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    fn observe(&self, labels: &[&str; 3], started: Instant) {
        self.requests.with_label_values(labels).inc();
        self.duration
            .with_label_values(labels)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Wraps services in [`Metrics`].
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: HttpServerMetrics,
}

impl MetricsLayer {
    pub fn new(metrics: HttpServerMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts and times every request `S` answers.
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    metrics: HttpServerMetrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let pending = Pending {
            metrics: self.metrics.clone(),
            method: known_method(request.method()),
            route: route_of(&request).cloned(),
            started: Instant::now(),
        };
        ResponseFuture {
            inner: self.inner.call(request),
            pending: Some(pending),
        }
    }
}

/// What a request's observation needs once its status is known.
struct Pending {
    metrics: HttpServerMetrics,
    method: &'static str,
    route: Option<MatchedPath>,
    started: Instant,
}

pin_project! {
    /// The response future of [`Metrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(pending) = this.pending.take() {
            let route = pending
                .route
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            let status = result.as_ref().map(|response| response.status());
            let status = match &status {
                Ok(status) => status.as_str(),
                Err(_) => FAILED_STATUS,
            };
            pending
                .metrics
                .observe(&[pending.method, route, status], pending.started);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        Router,
        body::Body,
        http::{Method, StatusCode},
        routing::get,
    };
    use prometheus::proto::{MetricFamily, MetricType};
    use tower::ServiceExt;

    fn app(registry: &Registry) -> Router {
        Router::new()
            .route("/", get(|| async { "home" }))
            .route("/books/{id}", get(|| async { "a book" }))
            .route(
                "/broken",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .layer(MetricsLayer::new(
                HttpServerMetrics::register(registry).unwrap(),
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

    /// Every series of `family` in `registry`, as its labels and its value:
    /// the count for counters, the sample count for histograms.
    fn series(registry: &Registry, family: &str) -> Vec<([String; 3], u64)> {
        let families: Vec<MetricFamily> = registry.gather();
        let Some(family) = families.iter().find(|found| found.name() == family) else {
            return Vec::new();
        };
        let mut series: Vec<_> = family
            .get_metric()
            .iter()
            .map(|metric| {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == name)
                        .map(|pair| pair.value().to_owned())
                        .unwrap_or_default()
                };
                let value = match family.get_field_type() {
                    MetricType::HISTOGRAM => metric.get_histogram().get_sample_count(),
                    _ => metric.get_counter().get_value() as u64,
                };
                ([label("method"), label("route"), label("status")], value)
            })
            .collect();
        series.sort();
        series
    }

    fn labels(method: &str, route: &str, status: &str) -> [String; 3] {
        [method.into(), route.into(), status.into()]
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

        let expected = vec![
            (labels("GET", "/", "200"), 1),
            (labels("GET", "/books/{id}", "200"), 2),
            (labels("GET", "/broken", "500"), 1),
        ];
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
            vec![(labels("GET", UNMATCHED_ROUTE, "404"), 3)]
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
            vec![
                (labels("POST", "/", "405"), 1),
                (labels("_OTHER", "/", "405"), 1),
            ]
        );
    }

    #[tokio::test]
    async fn a_custom_fallback_is_counted_as_unmatched() {
        let registry = Registry::new();
        let app = Router::new()
            .route("/", get(|| async { "home" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
            .layer(MetricsLayer::new(
                HttpServerMetrics::register(&registry).unwrap(),
            ));
        assert_eq!(send(&app, Method::GET, "/").await, StatusCode::OK);
        assert_eq!(
            send(&app, Method::GET, "/nope").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            series(&registry, "http_server_requests_total"),
            vec![
                (labels("GET", "/", "200"), 1),
                (labels("GET", UNMATCHED_ROUTE, "404"), 1),
            ]
        );
    }

    #[test]
    fn the_duration_histogram_spans_half_a_millisecond_to_ten_seconds() {
        let registry = Registry::new();
        let metrics = HttpServerMetrics::register(&registry).unwrap();
        metrics.observe(&["GET", "/", "200"], Instant::now());
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
