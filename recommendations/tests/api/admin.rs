//! The admin listener: readiness and the catalog gauge.

use crate::helpers::spawn_app;
use bookshop_test_support::metrics::value;
use recommendations::catalog::{Catalog, Category};
use reqwest::StatusCode;

#[tokio::test]
async fn readyz_answers_200_while_serving() {
    let app = spawn_app().await;
    let (status, _) = app.get_admin("/readyz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_report_the_catalog_size_per_category() {
    let app = spawn_app().await;
    let (status, text) = app.get_admin("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let catalog = Catalog::embedded().unwrap();
    for category in Category::ALL {
        let count = catalog.books(category).len();
        let series = format!("recommendations_catalog_books{{category=\"{category}\"}} {count}");
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
    assert!(
        text.contains("build_info{service=\"recommendations\""),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_each_call_by_method_and_code_as_go_grpc_prometheus_does() {
    use recommendations_proto::v1::{BookCategory, RecommendationRequest};
    let app = spawn_app().await;
    let mut client = app.client().await;
    let valid = RecommendationRequest {
        user_id: 1,
        category: BookCategory::Mystery.into(),
        max_results: 3,
    };
    client.recommend(valid).await.unwrap();
    let invalid = RecommendationRequest::default();
    client.recommend(invalid).await.unwrap_err();

    let registry = &app.registry;
    let recommend = [
        ("grpc_type", "unary"),
        ("grpc_service", "recommendations.v1.Recommendations"),
        ("grpc_method", "Recommend"),
    ];
    let with_code = |code| {
        let mut labels = recommend.to_vec();
        labels.push(("grpc_code", code));
        value(registry, "grpc_server_handled_total", &labels)
    };
    assert_eq!(
        value(registry, "grpc_server_started_total", &recommend),
        Some(2.0)
    );
    assert_eq!(with_code("OK"), Some(1.0));
    assert_eq!(with_code("InvalidArgument"), Some(1.0));
    assert_eq!(with_code("Internal"), Some(0.0));
    assert_eq!(
        value(registry, "grpc_server_handling_seconds", &recommend),
        Some(2.0)
    );
    // Health and reflection are known methods too, with their streaming kinds.
    let health_watch = [
        ("grpc_type", "server_stream"),
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Watch"),
    ];
    assert_eq!(
        value(registry, "grpc_server_started_total", &health_watch),
        Some(0.0)
    );
    let reflection = [
        ("grpc_type", "bidi_stream"),
        ("grpc_service", "grpc.reflection.v1.ServerReflection"),
        ("grpc_method", "ServerReflectionInfo"),
    ];
    assert_eq!(
        value(registry, "grpc_server_started_total", &reflection),
        Some(0.0)
    );
    assert_eq!(value(registry, "grpc_server_panics_total", &[]), Some(0.0));
}
