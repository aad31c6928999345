//! Both real servers in-process on port 0: the marketplace's gRPC client
//! against the real recommendations service, including it going away.

use crate::helpers::{
    WAIT, count_li, get_page, recommendations_config, spawn_app_with, test_config,
};
use bookshop_test_support::metrics::{Labels, labels, nonzero};
use prometheus::Registry;
use recommendations::catalog::{Catalog, Category};
use recommendations_proto::v1::{
    BookCategory, RecommendationRequest, recommendations_client::RecommendationsClient,
};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use tokio::{sync::oneshot, task::JoinHandle};

/// A recommendations server that the test can stop and start again.
struct Recommendations {
    port: u16,
    registry: Registry,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<anyhow::Result<()>>,
}

impl Recommendations {
    async fn start(port: u16) -> Self {
        let app = recommendations::App::bind(recommendations_config(port))
            .await
            .expect("recommendations binds");
        let port = app.grpc_addr().port();
        let registry = app.registry().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            registry,
            stop,
            serving,
        }
    }

    /// Stops the server and waits until its listener is closed.
    async fn stop(self) -> u16 {
        self.stop.send(()).expect("the server is running");
        tokio::time::timeout(WAIT, self.serving)
            .await
            .expect("the server stops in time")
            .expect("the server task ends")
            .expect("the server stops cleanly");
        self.port
    }
}

/// The titles of a page's `<li>` items, with tera's HTML escapes undone.
fn list_items(html: &str) -> Vec<String> {
    html.split("<li>")
        .skip(1)
        .map(|item| {
            item.split("</li>")
                .next()
                .unwrap_or_default()
                .replace("&#39;", "'")
                .replace("&#x27;", "'")
                .replace("&#x2F;", "/")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
}

fn marketplace_config(recommendations_port: u16, timeout_ms: u64) -> marketplace::Config {
    marketplace::Config {
        recommendations_port,
        recommendations_timeout: Duration::from_millis(timeout_ms),
        ..test_config()
    }
}

#[tokio::test]
async fn the_home_page_lists_books_that_the_catalog_holds_for_the_category() {
    let recommendations = Recommendations::start(0).await;
    let marketplace = spawn_app_with(marketplace_config(recommendations.port, 2_000)).await;
    let catalog = Catalog::embedded().unwrap();

    for (slug, category) in [
        ("mystery", Category::Mystery),
        ("science_fiction", Category::ScienceFiction),
        ("self_help", Category::SelfHelp),
    ] {
        let (status, html) = get_page(&format!("{}/?category={slug}", marketplace.http_url)).await;
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains("<title>Online Books For You</title>"),
            "{html}"
        );
        let titles = list_items(&html);
        assert_eq!(titles.len(), 3, "{html}");
        let shelf: Vec<&str> = catalog
            .books(category)
            .iter()
            .map(|book| book.title.as_str())
            .collect();
        for title in &titles {
            assert!(
                shelf.contains(&title.as_str()),
                "{title:?} is not a {slug} book"
            );
        }
    }
}

#[tokio::test]
async fn the_page_degrades_while_recommendations_is_down_and_recovers_when_it_returns() {
    const DEADLINE_MS: u64 = 500;
    // Generous: the machine is shared, and the point is "bounded", not "fast".
    const MARGIN: Duration = Duration::from_secs(5);
    let recommendations = Recommendations::start(0).await;
    let marketplace = spawn_app_with(marketplace_config(recommendations.port, DEADLINE_MS)).await;
    let page = format!("{}/", marketplace.http_url);

    let (status, html) = get_page(&page).await;
    assert_eq!((status.as_u16(), count_li(&html)), (200, 3), "{html}");

    let port = recommendations.stop().await;
    let started = Instant::now();
    let (status, html) = get_page(&page).await;
    assert!(
        started.elapsed() < Duration::from_millis(DEADLINE_MS) + MARGIN,
        "the degraded page took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert_eq!(count_li(&html), 0, "{html}");

    // Same port, same marketplace: its channel reconnects by itself.
    let _recommendations = Recommendations::start(port).await;
    let (status, html) = get_page(&page).await;
    assert_eq!((status.as_u16(), count_li(&html)), (200, 3), "{html}");
}

/// `labels` of a Recommend series, plus `extra`.
fn recommend(extra: &[(&str, &str)]) -> Labels {
    let mut all = labels(&[
        ("grpc_type", "unary"),
        ("grpc_service", "recommendations.v1.Recommendations"),
        ("grpc_method", "Recommend"),
    ]);
    all.extend(labels(extra));
    all
}

#[tokio::test]
async fn both_services_count_a_known_mix_of_requests_exactly() {
    let recommendations = Recommendations::start(0).await;
    let marketplace = spawn_app_with(marketplace_config(recommendations.port, 2_000)).await;
    let site = &marketplace.http_url;

    // Two good pages, a bad category, an unknown path…
    for (path, status) in [
        ("/", 200),
        ("/", 200),
        ("/?category=bogus", 400),
        ("/nope", 404),
    ] {
        let (got, html) = get_page(&format!("{site}{path}")).await;
        assert_eq!(got, status, "{path}: {html}");
    }
    // …and two invalid calls straight to recommendations.
    let mut client =
        RecommendationsClient::connect(format!("http://127.0.0.1:{}", recommendations.port))
            .await
            .unwrap();
    for (category, max_results) in [(BookCategory::Unspecified, 3), (BookCategory::Mystery, -1)] {
        let status = client
            .recommend(RecommendationRequest {
                user_id: 1,
                category: category.into(),
                max_results,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    let server = &recommendations.registry;
    let on_recommend = [("grpc_method", "Recommend")];
    assert_eq!(
        nonzero(server, "grpc_server_started_total", &on_recommend),
        BTreeMap::from([(recommend(&[]), 4.0)])
    );
    assert_eq!(
        nonzero(server, "grpc_server_handled_total", &on_recommend),
        BTreeMap::from([
            (recommend(&[("grpc_code", "OK")]), 2.0),
            (recommend(&[("grpc_code", "InvalidArgument")]), 2.0),
        ])
    );
    assert_eq!(
        nonzero(server, "grpc_server_handling_seconds", &on_recommend),
        BTreeMap::from([(recommend(&[]), 4.0)])
    );

    // A degraded page once recommendations is gone.
    recommendations.stop().await;
    let (status, html) = get_page(&format!("{site}/")).await;
    assert_eq!(status, 200);
    assert!(html.contains("recommendations are unavailable"), "{html}");

    let admin = &marketplace.registry;
    let pages = BTreeMap::from([
        (
            labels(&[("method", "GET"), ("route", "/"), ("status", "200")]),
            3.0,
        ),
        (
            labels(&[("method", "GET"), ("route", "/"), ("status", "400")]),
            1.0,
        ),
        (
            labels(&[("method", "GET"), ("route", "unmatched"), ("status", "404")]),
            1.0,
        ),
    ]);
    assert_eq!(nonzero(admin, "http_server_requests_total", &[]), pages);
    assert_eq!(
        nonzero(admin, "http_server_request_duration_seconds", &[]),
        pages
    );
    assert_eq!(
        nonzero(admin, "grpc_client_started_total", &[]),
        BTreeMap::from([(recommend(&[]), 3.0)])
    );
    assert_eq!(
        nonzero(admin, "grpc_client_handled_total", &[]),
        BTreeMap::from([
            (recommend(&[("grpc_code", "OK")]), 2.0),
            (recommend(&[("grpc_code", "Unavailable")]), 1.0),
        ])
    );
    assert_eq!(
        nonzero(admin, "grpc_client_handling_seconds", &[]),
        BTreeMap::from([(recommend(&[]), 3.0)])
    );
    assert_eq!(
        nonzero(admin, "marketplace_recommendations_fallback_total", &[]),
        BTreeMap::from([(labels(&[("reason", "unavailable")]), 1.0)])
    );
}
