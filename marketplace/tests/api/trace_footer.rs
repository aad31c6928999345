//! A page names its own trace: a `traceresponse` header and a footer with the
//! trace id, linked to the Jaeger UI when one is configured.

use crate::helpers::{FakeRecommendations, router_with, router_with_jaeger_ui};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use bookshop_test_support::spans::Captured;
use std::time::Duration;
use tower::ServiceExt;

async fn get(router: Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn books() -> Router {
    router_with(FakeRecommendations::Books, Duration::from_secs(5))
}

// Captured spans are this thread's: the default current-thread runtime keeps
// the request on it.
#[tokio::test]
async fn the_header_and_the_footer_carry_the_trace_of_the_server_span() {
    let captured = Captured::install();
    let (status, headers, html) = get(books(), "/?category=science_fiction").await;
    assert_eq!(status, StatusCode::OK);

    let ids = captured.spans.server_span().span_context;
    assert_eq!(
        headers["traceresponse"],
        format!("00-{}-{}-01", ids.trace_id(), ids.span_id())
    );
    assert!(html.contains(&ids.trace_id().to_string()), "{html}");
    assert!(
        !html.contains("/trace/"),
        "no link without a Jaeger UI: {html}"
    );
    // The contract stands with the footer in: three items, no other.
    assert_eq!(html.matches("<li").count(), 3, "{html}");
}

#[tokio::test]
async fn with_a_jaeger_ui_configured_the_footer_links_to_the_trace() {
    let captured = Captured::install();
    let (_, _, html) = get(router_with_jaeger_ui("http://jaeger.example:16686/"), "/").await;
    let trace_id = captured.spans.server_span().span_context.trace_id();
    let link = format!(r#"href="http://jaeger.example:16686/trace/{trace_id}""#);
    assert!(html.contains(&link), "no {link} in {html}");
}

#[tokio::test]
async fn a_trace_the_caller_did_not_sample_is_named_but_not_linked() {
    let _captured = Captured::install();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = Request::get("/")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-00"))
        .body(Body::empty())
        .unwrap();
    let response = router_with_jaeger_ui("http://jaeger.example:16686")
        .oneshot(request)
        .await
        .unwrap();
    let header = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.starts_with(&format!("00-{trace_id}-")), "{header}");
    assert!(header.ends_with("-00"), "not sampled: {header}");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(html.contains(trace_id), "{html}");
    assert!(
        !html.contains("/trace/"),
        "no link to a trace Jaeger never gets: {html}"
    );
}

#[tokio::test]
async fn error_pages_name_their_trace_too() {
    let captured = Captured::install();
    let (status, headers, html) = get(books(), "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let trace_id = captured.spans.server_span().span_context.trace_id();
    assert!(headers.contains_key("traceresponse"));
    assert!(html.contains(&trace_id.to_string()), "{html}");
}

#[tokio::test]
async fn with_tracing_off_the_page_names_no_trace_and_links_nowhere() {
    // No OpenTelemetry layer on this thread: as with OTEL_SDK_DISABLED=true.
    let (status, headers, html) =
        get(router_with_jaeger_ui("http://jaeger.example:16686"), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("traceresponse"), "{headers:?}");
    assert!(!html.contains("/trace/"), "{html}");
}

#[tokio::test]
async fn the_navigation_marks_the_shelf_shown() {
    let (_, _, html) = get(books(), "/?category=self_help").await;
    assert!(
        html.contains(r#"href="/?category=self_help" aria-current="page""#),
        "{html}"
    );
    assert_eq!(html.matches(r#"aria-current="page">"#).count(), 1, "{html}");
}
