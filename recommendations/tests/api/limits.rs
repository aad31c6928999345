//! The bounds calls are served under: load shedding past the concurrency limit,
//! deadlines (the caller's `grpc-timeout` and the server's own) that drop the
//! handler's work, and message sizes both ways.

use crate::helpers::{connect, spawn_app_with_limits};
use bookshop_test_support::{WAIT, metrics::value};
use recommendations::{
    catalog::{Book, Catalog, Category},
    config::Limits,
    recommend::{BookSource, Query},
};
use recommendations_proto::v1::{BookCategory, RecommendationRequest};
use std::time::{Duration, Instant};
use tokio::{
    sync::{mpsc, watch},
    time::timeout,
};
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn mystery(max_results: i32) -> RecommendationRequest {
    RecommendationRequest {
        user_id: 1,
        category: BookCategory::Mystery.into(),
        max_results,
    }
}

/// The Recommend series of `grpc_server_handled_total` with `code`.
fn handled(registry: &prometheus::Registry, code: &str) -> Option<f64> {
    value(
        registry,
        "grpc_server_handled_total",
        &[
            ("grpc_method", "Recommend"),
            ("grpc_service", "recommendations.v1.Recommendations"),
            ("grpc_type", "unary"),
            ("grpc_code", code),
        ],
    )
}

/// Books that take as long as the test wants: each call says it arrived (its
/// handler is running), waits for the release and says if it was dropped first.
struct HeldSource {
    catalog: Catalog,
    arrived: mpsc::UnboundedSender<()>,
    released: watch::Receiver<bool>,
    dropped: mpsc::UnboundedSender<()>,
}

struct Held {
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
    dropped: mpsc::UnboundedReceiver<()>,
}

fn held_source() -> (HeldSource, Held) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let source = HeldSource {
        catalog: Catalog::embedded().unwrap(),
        arrived: arrived_tx,
        released,
        dropped: dropped_tx,
    };
    let held = Held {
        arrived,
        release,
        dropped,
    };
    (source, held)
}

/// Sends when dropped before being disarmed: the handler's work was abandoned.
struct OnDrop(Option<mpsc::UnboundedSender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(dropped) = self.0.take() {
            let _ = dropped.send(());
        }
    }
}

impl BookSource for HeldSource {
    async fn recommend(&self, query: Query) -> Vec<Book> {
        let mut on_drop = OnDrop(Some(self.dropped.clone()));
        let _ = self.arrived.send(());
        let mut released = self.released.clone();
        let _ = released.wait_for(|released| *released).await;
        on_drop.0 = None;
        self.catalog.recommend(query).await
    }

    fn count(&self, category: Category) -> usize {
        self.catalog.count(category)
    }
}

impl Held {
    async fn arrival(&mut self) {
        timeout(WAIT, self.arrived.recv())
            .await
            .expect("the call reaches its handler in time")
            .expect("the source is alive");
    }

    async fn drop_of_the_handler(&mut self) {
        timeout(WAIT, self.dropped.recv())
            .await
            .expect("the handler's work is dropped in time")
            .expect("the source is alive");
    }
}

#[tokio::test]
async fn past_the_concurrency_limit_a_call_is_shed_with_resource_exhausted_and_health_still_answers()
 {
    let (source, mut held) = held_source();
    let limits = Limits {
        grpc_max_concurrent_calls: 1,
        ..Limits::default()
    };
    let app = spawn_app_with_limits(limits, source).await;
    let client = app.client().await;

    let in_flight = tokio::spawn({
        let mut client = client.clone();
        async move { client.recommend(mystery(3)).await }
    });
    held.arrival().await;

    // Answered at once (the source would hold it), not queued behind the first.
    let shed = timeout(WAIT, client.clone().recommend(mystery(3)))
        .await
        .expect("the second call is answered at once")
        .unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert_eq!(shed.message(), platform::grpc::OVERLOADED);

    // Probes are not shed: a busy pod is not an unready one.
    let health = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    held.release.send_replace(true);
    let first = timeout(WAIT, in_flight)
        .await
        .expect("the held call ends once released")
        .unwrap()
        .expect("the held call succeeds");
    assert_eq!(first.into_inner().recommendations.len(), 3);
    let after = client.clone().recommend(mystery(3)).await.unwrap();
    assert_eq!(after.into_inner().recommendations.len(), 3);

    assert_eq!(handled(&app.registry, "ResourceExhausted"), Some(1.0));
    assert_eq!(handled(&app.registry, "OK"), Some(2.0));
}

#[tokio::test]
async fn a_callers_grpc_timeout_ends_the_call_and_drops_the_handlers_work() {
    const GRPC_TIMEOUT: Duration = Duration::from_millis(300);
    let (source, mut held) = held_source();
    // The server's own bound is far away: only the caller's deadline can end the call.
    let limits = Limits {
        request_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let app = spawn_app_with_limits(limits, source).await;
    // No client-side timer: whatever ends the call is the server's doing.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        recommendations_proto::v1::recommendations_client::RecommendationsClient::new(channel);

    let mut request = Request::new(mystery(3));
    request.set_timeout(GRPC_TIMEOUT);
    let started = Instant::now();
    let status = timeout(WAIT, client.recommend(request))
        .await
        .expect("the server ends the call at its deadline")
        .unwrap_err();
    let took = started.elapsed();
    // tonic's server reports its expired timeout as CANCELLED.
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(took >= GRPC_TIMEOUT, "ended after {took:?}");
    held.arrival().await;
    held.drop_of_the_handler().await;
    assert_eq!(handled(&app.registry, "Canceled"), Some(1.0));
}

#[tokio::test]
async fn the_servers_own_request_timeout_ends_a_call_without_a_deadline() {
    let (source, mut held) = held_source();
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let app = spawn_app_with_limits(limits, source).await;
    let status = app.client().await.recommend(mystery(3)).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    held.arrival().await;
    held.drop_of_the_handler().await;
    assert_eq!(handled(&app.registry, "Canceled"), Some(1.0));
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused_with_out_of_range() {
    let limits = Limits {
        grpc_max_request_bytes: 1_024,
        ..Limits::default()
    };
    let app = spawn_app_with_limits(limits, Catalog::embedded().unwrap()).await;
    let mut health = HealthClient::new(connect(app.grpc_addr).await);
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(2_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Under the limit, the same call is answered (NOT_FOUND: no such service).
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(500),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_response_over_the_size_limit_is_not_sent_and_the_call_fails_out_of_range() {
    // Three books of 1000-byte titles cannot fit in 2 KiB; one can.
    let books: Vec<String> = (1..=3)
        .map(|id| {
            format!(
                r#"{{"id": {id}, "category": "mystery", "title": "{}"}}"#,
                "t".repeat(1_000)
            )
        })
        .collect();
    let catalog = Catalog::from_json("long titles", &format!("[{}]", books.join(","))).unwrap();
    let limits = Limits {
        grpc_max_response_bytes: 2_048,
        ..Limits::default()
    };
    let app = spawn_app_with_limits(limits, catalog).await;
    let mut client = app.client().await;
    let status = client.recommend(mystery(3)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let one = client.recommend(mystery(1)).await.unwrap();
    assert_eq!(one.into_inner().recommendations.len(), 1);
    assert_eq!(handled(&app.registry, "OutOfRange"), Some(1.0));
}
