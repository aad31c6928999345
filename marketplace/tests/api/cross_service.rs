//! Both real servers in-process on port 0: the marketplace's gRPC client
//! against the real recommendations service, including it going away.

use crate::helpers::{count_li, get_page, spawn_app_with, test_config};
use platform::config::CommonArgs;
use recommendations::catalog::{Catalog, Category};
use std::time::{Duration, Instant};
use tokio::{sync::oneshot, task::JoinHandle};

/// A recommendations server that the test can stop and start again.
struct Recommendations {
    port: u16,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<anyhow::Result<()>>,
}

impl Recommendations {
    async fn start(port: u16) -> Self {
        let config = recommendations::Config {
            grpc_port: port,
            admin_port: 0,
            catalog_path: None,
            common: CommonArgs::default(),
        };
        let app = recommendations::App::bind(config)
            .await
            .expect("recommendations binds");
        let port = app.grpc_addr().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            stop,
            serving,
        }
    }

    /// Stops the server and waits until its listener is closed.
    async fn stop(self) -> u16 {
        self.stop.send(()).expect("the server is running");
        self.serving
            .await
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
        recommendations_timeout_ms: timeout_ms,
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
