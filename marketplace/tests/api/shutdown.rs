//! The real binary as a child process: graceful shutdown on SIGTERM, and
//! bad settings refused at start.

use crate::helpers::{FakeRecommendationsServer, count_li, get_page};
use reqwest::StatusCode;
use std::{net::SocketAddr, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::timeout,
};

const SHUTDOWN_DELAY: Duration = Duration::from_secs(1);
/// Time for the process to start, drain and exit on a slow machine.
const MARGIN: Duration = Duration::from_secs(10);

/// The binary with a clean environment, so the host's variables cannot leak in.
fn marketplace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    command
        .env_clear()
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

struct Running {
    child: Child,
    http_url: String,
    admin_url: String,
}

/// Starts the binary against `upstream` and reads its ports from the "listening" log line.
async fn start(upstream: SocketAddr) -> Running {
    start_with(upstream, &[]).await
}

/// [`start`], with more settings.
async fn start_with(upstream: SocketAddr, settings: &[(&str, &str)]) -> Running {
    let mut child = marketplace()
        .envs(settings.iter().copied())
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
        .stdout(Stdio::piped())
        .spawn()
        .expect("the marketplace binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = timeout(MARGIN, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            if entry["message"] == "listening" {
                return entry;
            }
        }
        panic!("the marketplace exited before listening");
    })
    .await
    .expect("the marketplace logs \"listening\"");
    // Keep reading, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let url = |field: &str| {
        let addr: SocketAddr = listening[field].as_str().unwrap().parse().unwrap();
        format!("http://127.0.0.1:{}", addr.port())
    };
    Running {
        http_url: url("http_addr"),
        admin_url: url("admin_addr"),
        child,
    }
}

fn send_sigterm(child: &Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_turns_not_ready_finishes_the_page_in_flight_and_exits_0() {
    let mut upstream = FakeRecommendationsServer::start().await;
    let mut running = start(upstream.addr).await;

    let page_url = running.http_url.clone();
    let in_flight = tokio::spawn(async move { get_page(&page_url).await });
    // The page now waits in the fake: a request in flight.
    upstream.requests.recv().await.unwrap();

    send_sigterm(&running.child);
    let client = reqwest::Client::new();
    let readyz = format!("{}/readyz", running.admin_url);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    timeout(SHUTDOWN_DELAY + MARGIN, async {
        loop {
            poll.tick().await;
            // An answer at all proves the listener still serves during the delay.
            let response = client.get(&readyz).send().await.unwrap();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
        }
    })
    .await
    .expect("readyz turns 503 after SIGTERM");

    upstream.release();
    let (status, html) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count_li(&html), 3, "{html}");

    let exit = timeout(SHUTDOWN_DELAY + MARGIN, running.child.wait())
        .await
        .expect("the marketplace exits after the delay")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

async fn refused_setting(name: &str, value: &str) -> String {
    let output = marketplace().env(name, value).output().await.unwrap();
    assert_eq!(output.status.code(), Some(64), "{name}={value}");
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn a_bad_http_port_exits_64_with_one_line_naming_it() {
    let stderr = refused_setting("HTTP_PORT", "abc").await;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP_PORT"), "{stderr}");
}

#[tokio::test]
async fn a_zero_recommendations_timeout_exits_64() {
    let stderr = refused_setting("RECOMMENDATIONS_TIMEOUT_MS", "0").await;
    assert!(stderr.contains("RECOMMENDATIONS_TIMEOUT_MS"), "{stderr}");
}

#[tokio::test]
async fn with_the_trace_collector_down_pages_answer_and_shutdown_stays_bounded() {
    // A port that was free a moment ago: connecting to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let upstream = FakeRecommendationsServer::start().await;
    upstream.release();
    let mut running =
        start_with(upstream.addr, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;

    for _ in 0..20 {
        let (status, html) = get_page(&running.http_url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(count_li(&html), 3, "{html}");
    }

    send_sigterm(&running.child);
    // The delay, then the telemetry flush bound (5 s), then a margin.
    let exit = timeout(
        SHUTDOWN_DELAY + Duration::from_secs(5) + MARGIN,
        running.child.wait(),
    )
    .await
    .expect("the marketplace exits within the bound")
    .unwrap();
    assert_eq!(exit.code(), Some(0));
}
