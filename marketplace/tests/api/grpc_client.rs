//! The real gRPC client's metrics, against a recommendations stand-in that holds
//! its answers.

use crate::helpers::{FakeRecommendationsServer, get_page, spawn_app_with, test_config};
use marketplace::Config;
use std::net::SocketAddr;

fn config_for(upstream: SocketAddr, timeout_ms: u64) -> Config {
    Config {
        recommendations_host: upstream.ip().to_string(),
        recommendations_port: upstream.port(),
        recommendations_timeout_ms: timeout_ms,
        ..test_config()
    }
}

const RECOMMEND: &str = r#"grpc_method="Recommend",grpc_service="recommendations.v1.Recommendations",grpc_type="unary""#;

async fn metrics(admin_url: &str) -> String {
    get_page(&format!("{admin_url}/metrics")).await.1
}

#[tokio::test]
async fn a_call_that_outlasts_the_page_deadline_counts_as_canceled_not_deadline_exceeded() {
    // Never released: whichever deadline fires first (tonic's `grpc-timeout`, which
    // it reports as CANCELLED, or the page's, which drops the call) ends the call.
    let upstream = FakeRecommendationsServer::start().await;
    let app = spawn_app_with(config_for(upstream.addr, 50)).await;
    let (_, html) = get_page(&app.http_url).await;
    assert!(html.contains("recommendations are unavailable"), "{html}");

    let text = metrics(&app.admin_url).await;
    for series in [
        format!("grpc_client_started_total{{{RECOMMEND}}} 1"),
        format!(r#"grpc_client_handled_total{{grpc_code="Canceled",{RECOMMEND}}} 1"#),
        format!(r#"grpc_client_handled_total{{grpc_code="DeadlineExceeded",{RECOMMEND}}} 0"#),
        r#"marketplace_recommendations_fallback_total{reason="deadline_exceeded"} 1"#.into(),
    ] {
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
}

#[tokio::test]
async fn an_answered_call_counts_as_ok() {
    let upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let app = spawn_app_with(config_for(upstream.addr, 5000)).await;
    get_page(&app.http_url).await;

    let text = metrics(&app.admin_url).await;
    let ok = format!(r#"grpc_client_handled_total{{grpc_code="OK",{RECOMMEND}}} 1"#);
    assert!(text.contains(&ok), "no {ok} in:\n{text}");
}
