//! The real gRPC client against a recommendations stand-in that holds its
//! answers: its metrics, and what it refuses to pass on.

use crate::helpers::{FakeRecommendationsServer, config_for, count_li, get_page, spawn_app_with};
use bookshop_test_support::metrics::value;
use prometheus::Registry;

const RECOMMEND: [(&str, &str); 3] = [
    ("grpc_method", "Recommend"),
    ("grpc_service", "recommendations.v1.Recommendations"),
    ("grpc_type", "unary"),
];

/// The value of `name` for the Recommend method, with `extra` labels.
fn recommend(registry: &Registry, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = RECOMMEND.to_vec();
    labels.extend_from_slice(extra);
    value(registry, name, &labels)
}

fn fallbacks(registry: &Registry, reason: &str) -> Option<f64> {
    value(
        registry,
        "marketplace_recommendations_fallback_total",
        &[("reason", reason)],
    )
}

#[tokio::test]
async fn a_call_that_outlasts_the_page_deadline_counts_as_canceled_not_deadline_exceeded() {
    // Never released: whichever deadline fires first (tonic's `grpc-timeout`, which
    // it reports as CANCELLED, or the page's, which drops the call) ends the call.
    let upstream = FakeRecommendationsServer::start().await;
    let app = spawn_app_with(config_for(upstream.addr, 50)).await;
    let (_, html) = get_page(&app.http_url).await;
    assert!(html.contains("recommendations are unavailable"), "{html}");

    let registry = &app.registry;
    assert_eq!(
        recommend(registry, "grpc_client_started_total", &[]),
        Some(1.0)
    );
    let handled = "grpc_client_handled_total";
    assert_eq!(
        recommend(registry, handled, &[("grpc_code", "Canceled")]),
        Some(1.0)
    );
    assert_eq!(
        recommend(registry, handled, &[("grpc_code", "DeadlineExceeded")]),
        Some(0.0)
    );
    assert_eq!(fallbacks(registry, "deadline_exceeded"), Some(1.0));
}

#[tokio::test]
async fn an_answered_call_counts_as_ok() {
    let upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let app = spawn_app_with(config_for(upstream.addr, 5000)).await;
    let (_, html) = get_page(&app.http_url).await;
    assert_eq!(count_li(&html), 3, "{html}");

    assert_eq!(
        recommend(
            &app.registry,
            "grpc_client_handled_total",
            &[("grpc_code", "OK")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_answer_with_more_books_than_asked_is_refused_and_counted_as_an_error() {
    let upstream = FakeRecommendationsServer::answering(Some(4)).await;
    upstream.release();
    let app = spawn_app_with(config_for(upstream.addr, 5000)).await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, 200);
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert_eq!(count_li(&html), 0, "{html}");
    assert_eq!(fallbacks(&app.registry, "error"), Some(1.0));
}
