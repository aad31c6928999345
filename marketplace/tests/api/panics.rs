//! A panicking page handler answers the shop's 500 page, is counted and logged
//! once, and the pages after it are served as before. The panicking route is the
//! test's own: production has none.

use crate::helpers::{FakeRecommendations, count_li};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
    routing::get,
};
use bookshop_test_support::{metrics::value, spans::Captured};
use marketplace::{AppState, pages, with_middleware};
use platform::{http::HttpServerMetrics, shutdown::InFlight};
use prometheus::Registry;
use std::{sync::Arc, time::Duration};
use tower::ServiceExt;

/// What the panic says; it must never reach the client.
const PANIC: &str = "the handler broke";

/// The marketplace's pages and middleware, plus `/panic`, which panics.
fn router_with_a_panicking_route(registry: &Registry) -> Router {
    let state = AppState::new(
        Arc::new(FakeRecommendations::Books),
        Duration::from_secs(5),
        registry,
    )
    .unwrap();
    let pages = pages().route("/panic", get(panicking));
    with_middleware(
        pages,
        state,
        HttpServerMetrics::register(registry).unwrap(),
        256,
        InFlight::default(),
    )
}

async fn panicking() -> &'static str {
    panic!("{PANIC}")
}

async fn get_page(router: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

// Captured logs are this thread's: the default current-thread runtime keeps
// the request on it.
#[tokio::test]
async fn a_panicking_handler_answers_the_error_page_is_counted_and_logged_once_and_the_next_page_is_served()
 {
    let captured = Captured::install();
    let registry = Registry::new();
    let router = router_with_a_panicking_route(&registry);

    let (status, headers, html) = get_page(&router, "/panic").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        html.contains("<title>Online Books For You</title>"),
        "{html}"
    );
    assert!(html.contains("Something went wrong"), "{html}");
    assert!(!html.contains(PANIC), "the panic leaked: {html}");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let (status, _, html) = get_page(&router, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");

    assert_eq!(value(&registry, "http_server_panics_total", &[]), Some(1.0));
    assert_eq!(
        value(
            &registry,
            "http_server_requests_total",
            &[("method", "GET"), ("route", "/panic"), ("status", "500")]
        ),
        Some(1.0)
    );
    let lines = captured.logs.with_message("an HTTP handler panicked");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["panic"], PANIC);
}
