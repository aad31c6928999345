//! Handler tests: the page router over fake recommendations, without a socket.

use crate::helpers::{FakeRecommendations, count_li, router_with};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use std::time::Duration;
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_millis(50);

async fn send(fake: FakeRecommendations, method: Method, uri: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = router_with(fake, DEADLINE).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(fake: FakeRecommendations, uri: &str) -> (StatusCode, String) {
    send(fake, Method::GET, uri).await
}

#[tokio::test]
async fn the_home_page_shows_three_mystery_books_by_default() {
    let (status, html) = get(FakeRecommendations::Books, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<title>Online Books For You</title>"),
        "{html}"
    );
    assert!(
        html.contains("<h1>Mystery books you may like</h1>"),
        "{html}"
    );
    assert_eq!(count_li(&html), 3, "{html}");
    assert!(html.contains("<li>Mystery book 1</li>"), "{html}");
}

#[tokio::test]
async fn each_category_names_itself_in_the_heading() {
    for (query, heading) in [
        ("mystery", "Mystery books you may like"),
        ("science_fiction", "Science fiction books you may like"),
        ("self_help", "Self-help books you may like"),
    ] {
        let (status, html) = get(FakeRecommendations::Books, &format!("/?category={query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert!(html.contains(&format!("<h1>{heading}</h1>")), "{html}");
        assert_eq!(count_li(&html), 3, "{html}");
    }
}

#[tokio::test]
async fn titles_are_escaped() {
    let fake = FakeRecommendations::Titles(vec![
        "<script>alert(1)</script>".into(),
        "Tom & Jerry".into(),
        "\"Quoted\"".into(),
    ]);
    let (status, html) = get(fake, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("Tom &amp; Jerry"), "{html}");
}

#[tokio::test]
async fn a_bad_category_is_a_400_page_without_list_items() {
    let overlong = format!("/?category={}", "mystery".repeat(1000));
    for uri in [
        "/?category=",
        "/?category=poetry",
        "/?category=Mystery",
        "/?category=mystery&category=self_help",
        "/?category=%00%ff",
        "/?category=%3Cscript%3E",
        overlong.as_str(),
    ] {
        let (status, html) = get(FakeRecommendations::Books, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(html.contains("Unknown category"), "{uri}: {html}");
        assert_eq!(count_li(&html), 0, "{uri}: {html}");
    }
}

#[tokio::test]
async fn an_unknown_path_is_a_404_page() {
    let (status, html) = get(FakeRecommendations::Books, "/books/42").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        html.contains("<title>Online Books For You</title>"),
        "{html}"
    );
    assert!(html.contains("Page not found"), "{html}");
}

#[tokio::test]
async fn only_get_and_head_are_allowed() {
    let (status, _) = send(FakeRecommendations::Books, Method::HEAD, "/").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(FakeRecommendations::Books, Method::POST, "/").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let request = Request::get("/nowhere").body(Body::empty()).unwrap();
    let response = router_with(FakeRecommendations::Books, DEADLINE)
        .oneshot(request)
        .await
        .unwrap();
    let headers = response.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("referrer-policy"));
}

#[tokio::test]
async fn a_failing_service_degrades_to_a_notice() {
    let (status, html) = get(FakeRecommendations::Unavailable, "/?category=self_help").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert!(
        html.contains("<h1>Self-help books you may like</h1>"),
        "{html}"
    );
    assert_eq!(count_li(&html), 0, "{html}");
}

// Paused time: the 50 ms deadline passes at once, without waiting for it.
#[tokio::test(start_paused = true)]
async fn a_service_slower_than_the_deadline_degrades_to_a_notice() {
    let (status, html) = get(FakeRecommendations::Slow, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert_eq!(count_li(&html), 0, "{html}");
}
