//! The admin listener: readiness and the catalog gauge.

use crate::helpers::spawn_app;
use recommendations::catalog::{Catalog, Category};
use reqwest::StatusCode;

#[tokio::test]
async fn readyz_answers_200_while_serving() {
    let app = spawn_app().await;
    let response = reqwest::get(app.admin_url("/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_report_the_catalog_size_per_category() {
    let app = spawn_app().await;
    let response = reqwest::get(app.admin_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
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

    let text = reqwest::get(app.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let recommend = r#"grpc_method="Recommend",grpc_service="recommendations.v1.Recommendations",grpc_type="unary""#;
    for series in [
        format!("grpc_server_started_total{{{recommend}}} 2"),
        format!(r#"grpc_server_handled_total{{grpc_code="OK",{recommend}}} 1"#),
        format!(r#"grpc_server_handled_total{{grpc_code="InvalidArgument",{recommend}}} 1"#),
        format!(r#"grpc_server_handled_total{{grpc_code="Internal",{recommend}}} 0"#),
        format!("grpc_server_handling_seconds_count{{{recommend}}} 2"),
        // Health and reflection are known methods too, with their streaming kinds.
        r#"grpc_server_started_total{grpc_method="Watch",grpc_service="grpc.health.v1.Health",grpc_type="server_stream"} 0"#.into(),
        r#"grpc_server_started_total{grpc_method="ServerReflectionInfo",grpc_service="grpc.reflection.v1.ServerReflection",grpc_type="bidi_stream"} 0"#.into(),
        "grpc_server_panics_total 0".into(),
    ] {
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
}
