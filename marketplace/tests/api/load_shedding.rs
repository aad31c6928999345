//! Past `HTTP_MAX_CONCURRENT_REQUESTS`, a request is shed at once with 503 and
//! `Retry-After`, and pages are served again once the load is gone.

use crate::helpers::{WAIT, count_li, get_page, spawn_app_with_client, test_config};
use async_trait::async_trait;
use bookshop_test_support::metrics::value;
use marketplace::{Book, Category, Config, Recommendations, RecommendationsError};
use reqwest::StatusCode;
use std::{sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, watch},
    time::timeout,
};

/// Recommendations that hold every answer until the test releases them, and
/// say when a call has arrived (so the test knows a page is in flight).
struct Held {
    arrived: mpsc::UnboundedSender<()>,
    released: watch::Receiver<bool>,
}

#[async_trait]
impl Recommendations for Held {
    async fn recommend(
        &self,
        category: Category,
        max_results: u32,
    ) -> Result<Vec<Book>, RecommendationsError> {
        let _ = self.arrived.send(());
        let mut released = self.released.clone();
        // Fails only once the test is over and dropped the sender.
        let _ = released.wait_for(|released| *released).await;
        Ok((1..=max_results)
            .zip(1..)
            .map(|(n, id)| Book {
                id,
                title: format!("{} book {n}", category.label()),
            })
            .collect())
    }
}

#[tokio::test]
async fn over_the_concurrency_limit_a_request_is_shed_with_503_and_retry_after_until_the_load_is_gone()
 {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let config = Config {
        http_max_concurrent_requests: 1,
        // Far longer than the test holds the page: only the release ends it.
        recommendations_timeout: Duration::from_secs(60),
        ..test_config()
    };
    let held = Held {
        arrived: arrived_tx,
        released,
    };
    let app = spawn_app_with_client(config, Arc::new(held)).await;

    let url = app.http_url.clone();
    let in_flight = tokio::spawn(async move { get_page(&url).await });
    timeout(WAIT, arrived.recv())
        .await
        .expect("the first page reaches recommendations in time")
        .expect("the fake is alive");

    let shed = timeout(WAIT, reqwest::get(&app.http_url))
        .await
        .expect("the second request is answered at once, not queued")
        .expect("the second request is answered");
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["x-content-type-options"], "nosniff");

    release.send_replace(true);
    let (status, html) = timeout(WAIT, in_flight)
        .await
        .expect("the held page is answered once released")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");

    for _ in 0..3 {
        let (status, html) = get_page(&app.http_url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(count_li(&html), 3, "{html}");
    }
    let requests = |status| {
        value(
            &app.registry,
            "http_server_requests_total",
            &[("method", "GET"), ("route", "/"), ("status", status)],
        )
    };
    assert_eq!(requests("503"), Some(1.0));
    assert_eq!(requests("200"), Some(4.0));
}
