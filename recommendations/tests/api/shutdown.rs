//! The real binary as a child process: graceful shutdown on SIGTERM, and the exit code
//! and single stderr line of a bad setting.

use crate::helpers::connect;
use bookshop_test_support::{
    WAIT,
    net::RefusedPort,
    process::{self, Spawned, logged_addr},
};
use recommendations_proto::v1::{
    BookCategory, RecommendationRequest, RecommendationResponse,
    recommendations_server::SERVICE_NAME,
};
use std::time::Duration;
use tokio::{process::Command, sync::mpsc, time::timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, codec::Streaming, codegen::http::uri::PathAndQuery};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};
use tonic_prost::ProstCodec;

const RECOMMEND_PATH: &str = "/recommendations.v1.Recommendations/Recommend";

/// What `platform::shutdown` logs once the listeners stop accepting.
const LISTENERS_CLOSED: &str = "listeners closed; waiting for in-flight requests";

/// Long enough for the checks made while it runs, on a loaded machine: the test
/// waits on health updates and log lines, not on this.
const SHUTDOWN_DELAY_SECONDS: &str = "3";

/// The binary with only the settings a test gives it.
fn binary() -> Command {
    let mut command = process::command(env!("CARGO_BIN_EXE_recommendations"));
    command
        .env("RUST_LOG", "info")
        .env("GRPC_PORT", "0")
        .env("ADMIN_PORT", "0");
    command
}

/// Starts a Recommend call whose request message is held back until sent on the
/// returned sender: on the wire, a unary call whose body arrives late, so the
/// server holds it in flight for as long as the test wants.
async fn hold_a_call(
    grpc_addr: std::net::SocketAddr,
) -> (
    mpsc::Sender<RecommendationRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<RecommendationResponse>, tonic::Status>>,
) {
    let (release, held) = mpsc::channel::<RecommendationRequest>(1);
    let mut grpc = tonic::client::Grpc::new(connect(grpc_addr).await);
    let in_flight = tokio::spawn(async move {
        grpc.ready().await.unwrap();
        grpc.client_streaming(
            Request::new(ReceiverStream::new(held)),
            PathAndQuery::from_static(RECOMMEND_PATH),
            ProstCodec::<RecommendationRequest, RecommendationResponse>::default(),
        )
        .await
    });
    (release, in_flight)
}

async fn next_status(watch: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    timeout(WAIT, watch.message())
        .await
        .expect("a health update in time")
        .unwrap()
        .expect("the watch is still open")
        .status()
}

#[tokio::test]
async fn sigterm_turns_health_not_serving_drains_the_in_flight_call_and_exits_zero() {
    let mut child = Spawned::spawn(binary().env("SHUTDOWN_DELAY_SECONDS", SHUTDOWN_DELAY_SECONDS));
    let listening = child.logs.wait_for("listening").await;
    let grpc_addr = logged_addr(&listening["grpc_addr"]);
    let admin_addr = logged_addr(&listening["admin_addr"]);

    let (release, in_flight) = hold_a_call(grpc_addr).await;

    let mut watch = HealthClient::new(connect(grpc_addr).await)
        .watch(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);

    child.terminate();
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing);
    // An open watch is an in-flight call too: it would hold the drain to its timeout.
    drop(watch);

    // A new connection is still accepted during the delay, and hears NOT_SERVING.
    let fresh = HealthClient::new(connect(grpc_addr).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.status(), ServingStatus::NotServing);
    let readyz = timeout(WAIT, reqwest::get(format!("http://{admin_addr}/readyz")))
        .await
        .expect("readyz answers in time")
        .unwrap();
    assert_eq!(readyz.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    // Only once the listeners closed does the held message go: the call is drained, not cut.
    child.logs.wait_for(LISTENERS_CLOSED).await;
    release
        .send(RecommendationRequest {
            user_id: 1,
            category: BookCategory::Mystery.into(),
            max_results: 3,
        })
        .await
        .unwrap();
    drop(release);
    let response = timeout(WAIT, in_flight)
        .await
        .expect("the in-flight call ends in time")
        .unwrap()
        .expect("the in-flight call succeeds");
    assert_eq!(response.into_inner().recommendations.len(), 3);

    let status = child.exit_status(WAIT).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_bad_catalog_file_exits_64_with_one_line_naming_the_file() {
    let path = std::env::temp_dir().join(format!(
        "recommendations-bad-catalog-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, r#"[{"id": 1, "category": "romance", "title": "A"}]"#).unwrap();
    let output = process::output(binary().env("CATALOG_PATH", &path)).await;
    std::fs::remove_file(&path).unwrap();

    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("unknown variant `romance`"), "{stderr}");
}

#[tokio::test]
async fn a_bad_grpc_port_exits_64_with_one_line_naming_grpc_port() {
    let output = process::output(binary().env("GRPC_PORT", "abc")).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GRPC_PORT"), "{stderr}");
}

#[tokio::test]
async fn with_the_trace_collector_down_calls_succeed_with_one_warning_and_shutdown_stays_bounded() {
    let collector = RefusedPort::bind();
    let mut child = Spawned::spawn(
        binary()
            .env("SHUTDOWN_DELAY_SECONDS", "0")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
    );
    let listening = child.logs.wait_for("listening").await;
    let grpc_addr = logged_addr(&listening["grpc_addr"]);

    // Enough spans for several export batches (512 spans each) to fail.
    const CALLS: u64 = 1_100;
    let mut client = recommendations_proto::v1::recommendations_client::RecommendationsClient::new(
        connect(grpc_addr).await,
    );
    for _ in 0..CALLS {
        let response = timeout(
            WAIT,
            client.recommend(RecommendationRequest {
                user_id: 1,
                category: BookCategory::Mystery.into(),
                max_results: 3,
            }),
        )
        .await
        .expect("an answer in time")
        .expect("the call succeeds");
        assert_eq!(response.into_inner().recommendations.len(), 3);
    }

    child.terminate();
    // Delay 0 + draining + the telemetry flush bound (5 s), with room to spare.
    let status = child.exit_status(Duration::from_secs(5) + WAIT).await;
    assert_eq!(status.code(), Some(0));

    let complaints: Vec<_> = child
        .logs
        .rest()
        .await
        .into_iter()
        .filter(|line| matches!(line["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    let messages: Vec<&str> = complaints
        .iter()
        .map(|line| line["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        messages,
        [
            "trace export failing; dropping spans until the collector answers",
            "spans were dropped while the collector did not answer"
        ],
        "{complaints:#?}"
    );
    assert!(complaints[1]["dropped_spans"].as_u64().unwrap() >= CALLS);
}

#[tokio::test]
async fn a_port_in_use_exits_1_with_one_line_naming_the_listener_and_the_port() {
    process::assert_taken_ports_are_refused(
        binary,
        &[("GRPC_PORT", "gRPC"), ("ADMIN_PORT", "admin")],
    )
    .await;
}

/// What `platform::shutdown` logs when a second signal exits the process.
const SECOND_SIGNAL: &str = "second signal: exiting at once";

#[tokio::test]
async fn a_second_sigterm_exits_at_once_without_waiting_for_the_delay() {
    // A delay no test waits for: only the second signal can end the process in time.
    let mut child = Spawned::spawn(binary().env("SHUTDOWN_DELAY_SECONDS", "600"));
    child.logs.wait_for("listening").await;
    child.terminate();
    child
        .logs
        .wait_for("shutdown began: not ready, still serving during the delay")
        .await;
    child.terminate();
    let line = child.logs.wait_for(SECOND_SIGNAL).await;
    assert_eq!(line["signal"], "SIGTERM");
    assert_eq!(line["abandoned_requests"], 0);
    let status = child.exit_status(WAIT).await;
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
}

/// Waits, within [`WAIT`], until the service's `/metrics` counts `n` started Recommend calls.
async fn until_recommend_started(admin_addr: std::net::SocketAddr, n: u64) {
    let series = "grpc_server_started_total{grpc_method=\"Recommend\",grpc_service=\"recommendations.v1.Recommendations\",grpc_type=\"unary\"}";
    let wanted = format!("{series} {n}\n");
    timeout(WAIT, async {
        loop {
            let text = reqwest::get(format!("http://{admin_addr}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains(&wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted:?} within {WAIT:?}"));
}

#[tokio::test]
async fn a_call_longer_than_the_shutdown_timeout_is_abandoned_at_the_timeout_and_counted() {
    let mut child = Spawned::spawn(
        binary()
            .env("SHUTDOWN_DELAY_SECONDS", "0")
            .env("SHUTDOWN_TIMEOUT_SECONDS", "1"),
    );
    let listening = child.logs.wait_for("listening").await;
    let grpc_addr = logged_addr(&listening["grpc_addr"]);
    let admin_addr = logged_addr(&listening["admin_addr"]);

    // Its request message never comes: in flight until the end.
    let (_hold, in_flight) = hold_a_call(grpc_addr).await;
    until_recommend_started(admin_addr, 1).await;

    child.terminate();
    let closed = child.logs.wait_for(LISTENERS_CLOSED).await;
    assert_eq!(closed["in_flight_requests"], 1);
    let abandoned = child
        .logs
        .wait_for("in-flight requests did not finish in time; abandoning them")
        .await;
    assert_eq!(abandoned["abandoned_requests"], 1);
    assert_eq!(abandoned["timeout_seconds"], 1.0);
    // The timeout, the telemetry flush bound (5 s), and a margin.
    let status = child.exit_status(Duration::from_secs(6) + WAIT).await;
    assert_eq!(status.code(), Some(0));
    let cut = timeout(WAIT, in_flight)
        .await
        .expect("the abandoned call ends with the process")
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");
}
