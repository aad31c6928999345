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
