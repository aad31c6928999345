//! Recommend over the wire: results per category, counts, and every INVALID_ARGUMENT case.

use crate::helpers::{SlowSource, mystery_shelf, spawn_app, spawn_app_with_source};
use recommendations::catalog::{Catalog, Category};
use recommendations_proto::v1::{BookCategory, RecommendationRequest};
use std::{collections::HashSet, time::Duration};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn request(category: BookCategory, max_results: i32) -> RecommendationRequest {
    RecommendationRequest {
        user_id: 1,
        category: category.into(),
        max_results,
    }
}

fn assert_invalid_argument_naming(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest detail");
    let fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|violation| violation.field.as_str())
        .collect();
    assert_eq!(fields, [field], "{status:?}");
}

#[tokio::test]
async fn recommend_returns_distinct_books_of_the_asked_category_for_each_category() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let catalog = Catalog::embedded().unwrap();
    for (wire, domain) in [
        (BookCategory::Mystery, Category::Mystery),
        (BookCategory::ScienceFiction, Category::ScienceFiction),
        (BookCategory::SelfHelp, Category::SelfHelp),
    ] {
        let books = client
            .recommend(request(wire, 5))
            .await
            .unwrap()
            .into_inner()
            .recommendations;
        assert_eq!(books.len(), 5, "{wire:?}");
        let ids: HashSet<i32> = books.iter().map(|b| b.id).collect();
        assert_eq!(ids.len(), books.len(), "duplicates: {books:?}");
        for book in &books {
            assert!(
                catalog
                    .books(domain)
                    .iter()
                    .any(|b| b.id == book.id && b.title == book.title),
                "{book:?} is not a {domain} book"
            );
        }
    }
}

#[tokio::test]
async fn recommend_without_max_results_returns_the_default_of_three() {
    let app = spawn_app().await;
    let response = app
        .client()
        .await
        .recommend(request(BookCategory::Mystery, 0))
        .await
        .unwrap();
    assert_eq!(response.into_inner().recommendations.len(), 3);
}

#[tokio::test]
async fn recommend_caps_max_results_at_twenty() {
    let app = spawn_app_with_source(mystery_shelf(30)).await;
    let response = app
        .client()
        .await
        .recommend(request(BookCategory::Mystery, 1000))
        .await
        .unwrap();
    assert_eq!(response.into_inner().recommendations.len(), 20);
}

#[tokio::test]
async fn recommend_returns_every_book_when_the_category_has_fewer_than_asked() {
    let app = spawn_app_with_source(mystery_shelf(2)).await;
    let mut client = app.client().await;
    let mystery = client
        .recommend(request(BookCategory::Mystery, 10))
        .await
        .unwrap();
    assert_eq!(mystery.into_inner().recommendations.len(), 2);
    let self_help = client
        .recommend(request(BookCategory::SelfHelp, 10))
        .await
        .unwrap();
    assert!(self_help.into_inner().recommendations.is_empty());
}

#[tokio::test]
async fn recommend_rejects_an_unspecified_category() {
    let app = spawn_app().await;
    let status = app
        .client()
        .await
        .recommend(request(BookCategory::Unspecified, 3))
        .await
        .unwrap_err();
    assert_invalid_argument_naming(&status, "category");
}

#[tokio::test]
async fn recommend_rejects_an_unknown_category_number() {
    let app = spawn_app().await;
    let status = app
        .client()
        .await
        .recommend(RecommendationRequest {
            user_id: 1,
            category: 99,
            max_results: 3,
        })
        .await
        .unwrap_err();
    assert_invalid_argument_naming(&status, "category");
}

#[tokio::test]
async fn recommend_rejects_a_negative_max_results() {
    let app = spawn_app().await;
    let status = app
        .client()
        .await
        .recommend(request(BookCategory::Mystery, -1))
        .await
        .unwrap_err();
    assert_invalid_argument_naming(&status, "max_results");
}

#[tokio::test]
async fn recommend_rejects_a_negative_user_id() {
    let app = spawn_app().await;
    let status = app
        .client()
        .await
        .recommend(RecommendationRequest {
            user_id: -1,
            ..request(BookCategory::Mystery, 3)
        })
        .await
        .unwrap_err();
    assert_invalid_argument_naming(&status, "user_id");
}

#[tokio::test]
async fn a_slow_book_source_does_not_serialise_concurrent_calls() {
    let app = spawn_app_with_source(SlowSource {
        catalog: Catalog::embedded().unwrap(),
        delay: Duration::from_millis(200),
    })
    .await;
    let client = app.client().await;

    let started = Instant::now();
    client
        .clone()
        .recommend(request(BookCategory::Mystery, 3))
        .await
        .unwrap();
    let one_call = started.elapsed();

    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.recommend(request(BookCategory::Mystery, 3)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let ten_calls = started.elapsed();

    // Serialised, ten calls would take ten times one; concurrent, about one.
    assert!(
        ten_calls < one_call * 5,
        "10 concurrent calls took {ten_calls:?}, one took {one_call:?}"
    );
}
