//! `GET /?…` with any query string, through the marketplace's real page
//! router (recommendations faked: the other side of the boundary): never a
//! panic, and the page or the 400 page docs/design.md promises (the check the
//! proptest properties use too).

#![no_main]

use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    http::{Request, Uri},
};
use bookshop_test_support::oracles::page::check_page;
use libfuzzer_sys::fuzz_target;
use marketplace::{AppState, Book, Category, Recommendations, RecommendationsError};
use std::{sync::Arc, sync::LazyLock, time::Duration};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Answers as many books as asked for, at once.
struct Shelf;

#[async_trait]
impl Recommendations for Shelf {
    async fn recommend(
        &self,
        _category: Category,
        max_results: u32,
    ) -> Result<Vec<Book>, RecommendationsError> {
        Ok((1..=max_results)
            .map(|n| Book {
                id: n as i32,
                title: format!("Book {n}"),
            })
            .collect())
    }
}

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});
static PAGES: LazyLock<Router> = LazyLock::new(|| {
    let state = AppState::new(
        Arc::new(Shelf),
        Duration::from_secs(5),
        &prometheus::Registry::new(),
    )
    .expect("the page state builds");
    marketplace::pages().with_state(state)
});

fuzz_target!(|query: &[u8]| {
    // Only a request target hyper can parse ever reaches the router.
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(uri) = format!("/?{query}").parse::<Uri>() else {
        return;
    };
    let received = uri.query().unwrap_or_default().to_owned();
    let request = Request::get(uri).body(Body::empty()).expect("a request");
    let (status, html) = RUNTIME.block_on(async {
        let response = PAGES.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the page body");
        (
            status,
            String::from_utf8(body.to_vec()).expect("HTML is UTF-8"),
        )
    });
    if let Err(wrong) = check_page(&received, status, &html) {
        panic!("{wrong}");
    }
});
