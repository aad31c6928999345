//! A real marketplace on port 0, over real HTTP: pages, admin and the gRPC client.

use crate::helpers::{
    FakeRecommendations, FakeRecommendationsServer, config_for, count_li, get_page, spawn_app,
    spawn_app_with, spawn_app_with_client, test_config,
};
use bookshop_test_support::{
    metrics::{buckets, labels, series, value},
    net::RefusedPort,
};
use reqwest::StatusCode;
use std::sync::Arc;

#[tokio::test]
async fn the_home_page_lists_three_books_over_http() {
    let app = spawn_app().await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<title>Online Books For You</title>"),
        "{html}"
    );
    assert_eq!(count_li(&html), 3, "{html}");
}

#[tokio::test]
async fn the_admin_listener_answers_health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(
        get_page(&format!("{}/healthz", app.admin_url)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_page(&format!("{}/readyz", app.admin_url)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_degraded_page_is_counted_and_leaves_the_app_ready() {
    let app =
        spawn_app_with_client(test_config(), Arc::new(FakeRecommendations::Unavailable)).await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("recommendations are unavailable"), "{html}");

    let (status, metrics) = get_page(&format!("{}/metrics", app.admin_url)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(r#"marketplace_recommendations_fallback_total{reason="unavailable"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("build_info{"), "{metrics}");
    assert_eq!(
        value(
            &app.registry,
            "marketplace_recommendations_fallback_total",
            &[("reason", "unavailable")]
        ),
        Some(1.0)
    );
    // No cascading failure: the pods stay in rotation while recommendations is down.
    assert_eq!(
        get_page(&format!("{}/readyz", app.admin_url)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn http_metrics_count_each_request_by_route_template_and_status() {
    let app = spawn_app().await;
    for (path, expected) in [
        ("/", StatusCode::OK),
        ("/?category=bogus", StatusCode::BAD_REQUEST),
        ("/nope", StatusCode::NOT_FOUND),
    ] {
        let (status, _) = get_page(&format!("{}{path}", app.http_url)).await;
        assert_eq!(status, expected, "{path}");
    }

    // Exactly these series: the raw path `/nope` never becomes a label value.
    let expected = [
        (
            labels(&[("method", "GET"), ("route", "/"), ("status", "200")]),
            1.0,
        ),
        (
            labels(&[("method", "GET"), ("route", "/"), ("status", "400")]),
            1.0,
        ),
        (
            labels(&[("method", "GET"), ("route", "unmatched"), ("status", "404")]),
            1.0,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        series(&app.registry, "http_server_requests_total"),
        expected
    );
    assert_eq!(
        series(&app.registry, "http_server_request_duration_seconds"),
        expected
    );
    let (bounds, count) = buckets(
        &app.registry,
        "http_server_request_duration_seconds",
        &[("method", "GET"), ("route", "/"), ("status", "200")],
    );
    assert_eq!(
        bounds,
        [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
        ]
    );
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_grpc_client_asks_for_three_books_with_a_grpc_timeout() {
    let mut upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let app = spawn_app_with(config_for(upstream.addr, 5000)).await;

    let (status, html) = get_page(&format!("{}/?category=science_fiction", app.http_url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");
    assert!(html.contains("<li>Held book 1</li>"), "{html}");

    let request = upstream.next_request().await;
    assert_eq!(request.get_ref().max_results, 3);
    assert_eq!(
        request.get_ref().category,
        2,
        "BOOK_CATEGORY_SCIENCE_FICTION"
    );
    assert!(request.metadata().get("grpc-timeout").is_some());
}

/// Istio's sidecars decide whether to trace a call by its `x-request-id`: the
/// page's own goes on to recommendations, and a page without one sends none.
#[tokio::test]
async fn the_call_to_recommendations_carries_the_pages_request_id() {
    let mut upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let app = spawn_app_with(config_for(upstream.addr, 5000)).await;
    let client = reqwest::Client::new();
    for id in [Some("7d0c5a1e-page"), None] {
        let mut page = client.get(&app.http_url);
        if let Some(id) = id {
            page = page.header("x-request-id", id);
        }
        assert_eq!(page.send().await.unwrap().status(), StatusCode::OK);
        let request = upstream.next_request().await;
        let sent = request.metadata().get("x-request-id");
        assert_eq!(sent.map(|v| v.to_str().unwrap()), id);
    }
}

#[tokio::test]
async fn the_grpc_client_degrades_when_nothing_listens_upstream() {
    let refused = RefusedPort::bind();
    let app = spawn_app_with(config_for(refused.addr, 5000)).await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert_eq!(
        value(
            &app.registry,
            "marketplace_recommendations_fallback_total",
            &[("reason", "unavailable")]
        ),
        Some(1.0)
    );
}
