//! The real binary as a child process: graceful shutdown on SIGTERM, and
//! bad settings refused at start.

use crate::helpers::{FakeRecommendationsServer, WAIT, count_li, get_page};
use bookshop_test_support::{
    net::RefusedPort,
    process::{self, Spawned, logged_addr},
};
use reqwest::StatusCode;
use std::{net::SocketAddr, time::Duration};
use tokio::{process::Command, time::timeout};

/// Long enough for the checks made while it runs, on a loaded machine: the test
/// waits on log lines, not on this.
const SHUTDOWN_DELAY: Duration = Duration::from_secs(3);

/// What `platform::shutdown` logs at SIGTERM, once not ready.
const SHUTDOWN_BEGAN: &str = "shutdown began: not ready, still serving during the delay";

/// The binary with a clean environment, so the host's variables cannot leak in.
fn marketplace() -> Command {
    process::command(env!("CARGO_BIN_EXE_marketplace"))
}

struct Running {
    child: Spawned,
    http_url: String,
    admin_url: String,
}

/// Starts the binary against `upstream` and reads its ports from the "listening"
/// log line.
async fn start(upstream: SocketAddr, settings: &[(&str, &str)]) -> Running {
    let mut child = Spawned::spawn(
        marketplace()
            .env("HTTP_PORT", "0")
            .env("ADMIN_PORT", "0")
            .env(
                "SHUTDOWN_DELAY_SECONDS",
                SHUTDOWN_DELAY.as_secs().to_string(),
            )
            .env("RECOMMENDATIONS_HOST", upstream.ip().to_string())
            .env("RECOMMENDATIONS_PORT", upstream.port().to_string())
            // Far longer than the test holds the request, so only shutdown can end it.
            .env("RECOMMENDATIONS_TIMEOUT_MS", "10000")
            .envs(settings.iter().copied()),
    );
    let listening = child.logs.wait_for("listening").await;
    let url = |field: &str| format!("http://{}", logged_addr(&listening[field]));
    Running {
        http_url: url("http_addr"),
        admin_url: url("admin_addr"),
        child,
    }
}

#[tokio::test]
async fn sigterm_turns_not_ready_finishes_the_page_in_flight_and_exits_0() {
    let mut upstream = FakeRecommendationsServer::start().await;
    let mut running = start(upstream.addr, &[]).await;

    let page_url = running.http_url.clone();
    let in_flight = tokio::spawn(async move { get_page(&page_url).await });
    // The page now waits in the fake: a request in flight.
    upstream.next_request().await;

    running.child.terminate();
    running.child.logs.wait_for(SHUTDOWN_BEGAN).await;
    // An answer at all proves the listener still serves during the delay.
    let (status, _) = get_page(&format!("{}/readyz", running.admin_url)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    upstream.release();
    let (status, html) = timeout(WAIT, in_flight)
        .await
        .expect("the page in flight is answered in time")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");

    let exit = running.child.exit_status(SHUTDOWN_DELAY + WAIT).await;
    assert_eq!(exit.code(), Some(0));
}

/// Starts the binary with `name=value`; it must exit 64 with one line naming `name`.
async fn refused_setting(name: &str, value: &str) {
    let output = process::output(marketplace().env(name, value)).await;
    assert_eq!(output.status.code(), Some(64), "{name}={value}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(name), "{stderr}");
}

#[tokio::test]
async fn a_bad_http_port_exits_64_with_one_line_naming_it() {
    refused_setting("HTTP_PORT", "abc").await;
}

#[tokio::test]
async fn a_zero_recommendations_timeout_exits_64_with_one_line_naming_it() {
    refused_setting("RECOMMENDATIONS_TIMEOUT_MS", "0").await;
}

#[tokio::test]
async fn a_jaeger_ui_url_that_is_not_an_http_url_exits_64_with_one_line_naming_it() {
    refused_setting("JAEGER_UI_URL", "localhost:16686").await;
}

#[tokio::test]
async fn with_the_trace_collector_down_pages_answer_and_shutdown_stays_bounded() {
    let collector = RefusedPort::bind();
    let upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let mut running = start(
        upstream.addr,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url()),
            ("SHUTDOWN_DELAY_SECONDS", "0"),
        ],
    )
    .await;

    for _ in 0..20 {
        let (status, html) = get_page(&running.http_url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(count_li(&html), 3, "{html}");
    }

    running.child.terminate();
    // The telemetry flush bound (5 s), then a margin.
    let exit = running
        .child
        .exit_status(Duration::from_secs(5) + WAIT)
        .await;
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn a_port_in_use_exits_1_with_one_line_naming_the_listener_and_the_port() {
    // Each run's other listener on any free port: only the taken one can fail.
    let on_free_ports = || {
        let mut command = marketplace();
        command.env("HTTP_PORT", "0").env("ADMIN_PORT", "0");
        command
    };
    process::assert_taken_ports_are_refused(
        on_free_ports,
        &[("HTTP_PORT", "http"), ("ADMIN_PORT", "admin")],
    )
    .await;
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_abandoning_the_page_in_flight() {
    let mut upstream = FakeRecommendationsServer::start().await;
    // A delay no test waits for: only the second signal can end the process in time.
    let mut running = start(upstream.addr, &[("SHUTDOWN_DELAY_SECONDS", "600")]).await;
    let page_url = running.http_url.clone();
    let in_flight = tokio::spawn(async move { reqwest::get(page_url).await });
    upstream.next_request().await;

    running.child.terminate();
    running.child.logs.wait_for(SHUTDOWN_BEGAN).await;
    running.child.terminate();
    let line = running
        .child
        .logs
        .wait_for("second signal: exiting at once")
        .await;
    assert_eq!(line["signal"], "SIGTERM");
    assert_eq!(line["abandoned_requests"], 1);
    let exit = running.child.exit_status(WAIT).await;
    assert_eq!(exit.code(), Some(143), "128 + SIGTERM");
    let page = timeout(WAIT, in_flight)
        .await
        .expect("the abandoned page ends with the process")
        .unwrap();
    assert!(page.is_err(), "{page:?}");
}

#[tokio::test]
async fn pages_longer_than_the_shutdown_timeout_are_abandoned_at_the_timeout_and_counted() {
    let mut upstream = FakeRecommendationsServer::start().await;
    let mut running = start(
        upstream.addr,
        &[
            ("SHUTDOWN_DELAY_SECONDS", "0"),
            ("SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await;
    let pages: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reqwest::get(running.http_url.clone())))
        .collect();
    // Both pages wait in the fake, which never answers.
    upstream.next_request().await;
    upstream.next_request().await;

    running.child.terminate();
    let closed = running
        .child
        .logs
        .wait_for("listeners closed; waiting for in-flight requests")
        .await;
    assert_eq!(closed["in_flight_requests"], 2);
    let abandoned = running
        .child
        .logs
        .wait_for("in-flight requests did not finish in time; abandoning them")
        .await;
    assert_eq!(abandoned["abandoned_requests"], 2);
    // The timeout, the telemetry flush bound (5 s), and a margin.
    let exit = running
        .child
        .exit_status(Duration::from_secs(6) + WAIT)
        .await;
    assert_eq!(exit.code(), Some(0));
    for page in pages {
        let page = timeout(WAIT, page)
            .await
            .expect("an abandoned page ends with the process")
            .unwrap();
        assert!(page.is_err(), "{page:?}");
    }
}
