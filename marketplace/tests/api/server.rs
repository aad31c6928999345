//! A real marketplace on port 0, over real HTTP: pages, admin and the gRPC client.

use crate::helpers::{
    FakeRecommendations, FakeRecommendationsServer, count_li, get_page, spawn_app, spawn_app_with,
    spawn_app_with_client, test_config,
};
use marketplace::Config;
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
    // No cascading failure: the pods stay in rotation while recommendations is down.
    assert_eq!(
        get_page(&format!("{}/readyz", app.admin_url)).await.0,
        StatusCode::OK
    );
}

fn config_for(upstream: std::net::SocketAddr, timeout_ms: u64) -> Config {
    Config {
        recommendations_host: upstream.ip().to_string(),
        recommendations_port: upstream.port(),
        recommendations_timeout_ms: timeout_ms,
        ..test_config()
    }
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

    let request = upstream.requests.recv().await.unwrap();
    assert_eq!(request.get_ref().max_results, 3);
    assert_eq!(
        request.get_ref().category,
        2,
        "BOOK_CATEGORY_SCIENCE_FICTION"
    );
    assert!(request.metadata().get("grpc-timeout").is_some());
}

#[tokio::test]
async fn the_grpc_client_degrades_when_nothing_listens_upstream() {
    // A port that was free a moment ago: connecting is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(config_for(closed, 5000)).await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("recommendations are unavailable"), "{html}");
    let (_, metrics) = get_page(&format!("{}/metrics", app.admin_url)).await;
    assert!(
        metrics.contains(r#"marketplace_recommendations_fallback_total{reason="unavailable"} 1"#),
        "{metrics}"
    );
}
