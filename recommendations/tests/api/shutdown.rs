//! The real binary as a child process: graceful shutdown on SIGTERM, and the exit code
//! and single stderr line of a bad setting.

use crate::helpers::connect;
use recommendations_proto::v1::{
    BookCategory, RecommendationRequest, RecommendationResponse,
    recommendations_server::SERVICE_NAME,
};
use serde_json::Value;
use std::{net::SocketAddr, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdout, Command},
    sync::mpsc,
    time::timeout,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, codec::Streaming, codegen::http::uri::PathAndQuery};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};
use tonic_prost::ProstCodec;

/// The most any step waits for the child; generous, as it only bounds a failing test.
const WAIT: Duration = Duration::from_secs(10);

const RECOMMEND_PATH: &str = "/recommendations.v1.Recommendations/Recommend";

/// What `platform::shutdown` logs once the listeners stop accepting.
const LISTENERS_CLOSED: &str = "listeners closed; waiting for in-flight requests";

/// The binary with only the settings a test gives it.
fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recommendations"));
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("GRPC_PORT", "0")
        .env("ADMIN_PORT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The child's JSON log lines, as they are written.
struct Logs {
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Logs {
    fn follow(stdout: ChildStdout) -> Self {
        let (sender, lines) = mpsc::unbounded_channel();
        // Reads to the end, so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = sender.send(value);
                }
            }
        });
        Self { lines }
    }

    /// The next log line whose message is `message`.
    async fn wait_for(&mut self, message: &str) -> Value {
        let found = timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line["message"] == message {
                    return Some(line);
                }
            }
            None
        });
        match found.await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the child's stdout ended before {message:?}"),
            Err(_) => panic!("no {message:?} log line within {WAIT:?}"),
        }
    }
}

/// The loopback address of a logged `0.0.0.0:port`.
fn logged_addr(value: &Value) -> SocketAddr {
    let addr: SocketAddr = value.as_str().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

fn terminate(child: &Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
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
    let mut child = binary()
        .env("SHUTDOWN_DELAY_SECONDS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = Logs::follow(child.stdout.take().unwrap());
    let listening = logs.wait_for("listening").await;
    let grpc_addr = logged_addr(&listening["grpc_addr"]);
    let admin_addr = logged_addr(&listening["admin_addr"]);

    // A call whose request message is held back: on the wire, a unary call whose body
    // arrives late, so the server holds it in flight for as long as the test wants.
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

    let mut watch = HealthClient::new(connect(grpc_addr).await)
        .watch(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);

    terminate(&child);
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
    let readyz = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    // Only once the listeners closed does the held message go: the call is drained, not cut.
    logs.wait_for(LISTENERS_CLOSED).await;
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

    let status = timeout(WAIT, child.wait())
        .await
        .expect("the child exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_bad_catalog_file_exits_64_with_one_line_naming_the_file() {
    let path = std::env::temp_dir().join(format!(
        "recommendations-bad-catalog-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, r#"[{"id": 1, "category": "romance", "title": "A"}]"#).unwrap();
    let output = timeout(WAIT, binary().env("CATALOG_PATH", &path).output())
        .await
        .expect("the child exits in time")
        .unwrap();
    std::fs::remove_file(&path).unwrap();

    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("unknown variant `romance`"), "{stderr}");
}

#[tokio::test]
async fn a_bad_grpc_port_exits_64_with_one_line_naming_grpc_port() {
    let output = timeout(WAIT, binary().env("GRPC_PORT", "abc").output())
        .await
        .expect("the child exits in time")
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GRPC_PORT"), "{stderr}");
}

#[tokio::test]
async fn with_the_trace_collector_down_calls_succeed_with_one_warning_and_shutdown_stays_bounded() {
    // A port that was free a moment ago: connecting to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut child = binary()
        .env("SHUTDOWN_DELAY_SECONDS", "0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = Logs::follow(child.stdout.take().unwrap());
    let listening = logs.wait_for("listening").await;
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

    terminate(&child);
    // Delay 0 + draining + the telemetry flush bound (5 s), with room to spare.
    let status = timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the process exits within the bound")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let mut complaints = Vec::new();
    while let Some(line) = logs.lines.recv().await {
        let level = line["level"].as_str().unwrap_or_default();
        if level == "WARN" || level == "ERROR" {
            complaints.push(line);
        }
    }
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
