//! The fault matrix, in-process, with the real gRPC client: recommendations down
//! at start, slow, answering each error code, answering too much, or silent on a
//! connection that stays open. Each time the page degrades (200 with the
//! notice), in bounded time, counted under the right `reason`.

use crate::helpers::{
    WAIT, config_for, count_li, get_page, recommendations_config, spawn_app_with,
};
use bookshop_test_support::{metrics::value, net::RefusedPort};
use marketplace::config::ChannelArgs;
use prometheus::Registry;
use recommendations::{
    catalog::{Book, Catalog, Category},
    recommend::{BookSource, Query},
};
use recommendations_proto::v1::{
    BookRecommendation, RecommendationRequest, RecommendationResponse, recommendations_server,
};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
    time::timeout,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Status};

/// Generous: the machine is shared, and the point is "bounded", not "fast".
const MARGIN: Duration = Duration::from_secs(5);

fn fallbacks(registry: &Registry, reason: &str) -> f64 {
    value(
        registry,
        "marketplace_recommendations_fallback_total",
        &[("reason", reason)],
    )
    .expect("every reason is exported from the start")
}

fn client_handled(registry: &Registry, code: &str) -> Option<f64> {
    value(
        registry,
        "grpc_client_handled_total",
        &[
            ("grpc_type", "unary"),
            ("grpc_service", "recommendations.v1.Recommendations"),
            ("grpc_method", "Recommend"),
            ("grpc_code", code),
        ],
    )
}

/// Asserts `html` is the degraded page: the notice, no books.
fn assert_degraded(html: &str) {
    assert!(html.contains("recommendations are unavailable"), "{html}");
    assert_eq!(count_li(html), 0, "{html}");
}

/// A real recommendations service in this process, over `source`.
async fn start_recommendations(port: u16, source: impl BookSource) -> (u16, Registry) {
    let app = recommendations::App::bind_with_source(recommendations_config(port), source)
        .await
        .expect("recommendations binds");
    let port = app.grpc_addr().port();
    let registry = app.registry().clone();
    // Serves until the test's runtime ends.
    tokio::spawn(app.run(std::future::pending()));
    (port, registry)
}

#[tokio::test]
async fn with_recommendations_down_at_start_the_shop_is_ready_degrades_and_recovers_on_its_own() {
    let down = RefusedPort::bind();
    let app = spawn_app_with(config_for(down.addr, 500)).await;

    let (status, _) = get_page(&format!("{}/readyz", app.admin_url)).await;
    assert_eq!(status, 200, "ready without recommendations");
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, 200);
    assert_degraded(&html);
    assert_eq!(fallbacks(&app.registry, "unavailable"), 1.0);

    // Recommendations appears where the shop expects it; nothing restarts the shop.
    let port = down.addr.port();
    drop(down);
    start_recommendations(port, Catalog::embedded().unwrap()).await;
    let recovered = timeout(WAIT, async {
        loop {
            let (status, html) = get_page(&app.http_url).await;
            if status == 200 && count_li(&html) == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    recovered
        .await
        .expect("pages list books again once recommendations is up");
}

/// A book source slower than any page waits.
struct Slow(Catalog);

impl BookSource for Slow {
    async fn recommend(&self, query: Query) -> Vec<Book> {
        tokio::time::sleep(Duration::from_secs(600)).await;
        self.0.recommend(query).await
    }

    fn count(&self, category: Category) -> usize {
        self.0.count(category)
    }
}

#[tokio::test]
async fn with_recommendations_slow_the_page_degrades_at_its_deadline_and_the_call_is_dropped_upstream()
 {
    const DEADLINE_MS: u64 = 300;
    let (port, upstream) = start_recommendations(0, Slow(Catalog::embedded().unwrap())).await;
    let app = spawn_app_with(config_for(
        SocketAddr::from(([127, 0, 0, 1], port)),
        DEADLINE_MS,
    ))
    .await;

    let started = Instant::now();
    let (status, html) = get_page(&app.http_url).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(DEADLINE_MS) + MARGIN,
        "the page took {took:?}"
    );
    assert_eq!(status, 200);
    assert_degraded(&html);
    assert_eq!(fallbacks(&app.registry, "deadline_exceeded"), 1.0);

    // Recommendations stopped working on it too: its deadline came with the call.
    let canceled_upstream = timeout(WAIT, async {
        loop {
            let canceled = value(
                &upstream,
                "grpc_server_handled_total",
                &[
                    ("grpc_type", "unary"),
                    ("grpc_service", "recommendations.v1.Recommendations"),
                    ("grpc_method", "Recommend"),
                    ("grpc_code", "Canceled"),
                ],
            );
            if canceled == Some(1.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    canceled_upstream
        .await
        .expect("the upstream call ends as Canceled");
}

/// What the scripted upstream answers next.
#[derive(Clone)]
enum Answer {
    Fail(Code),
    Titles(Vec<String>),
}

/// A recommendations stand-in answering whatever the test last scripted: the
/// other side of the boundary.
#[derive(Clone)]
struct Scripted(Arc<Mutex<Answer>>);

impl Scripted {
    async fn start(answer: Answer) -> (Self, SocketAddr) {
        let scripted = Self(Arc::new(Mutex::new(answer)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(recommendations_server::RecommendationsServer::new(
                    scripted.clone(),
                ))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (scripted, addr)
    }

    fn answer(&self, answer: Answer) {
        *self.0.lock().unwrap() = answer;
    }
}

#[tonic::async_trait]
impl recommendations_server::Recommendations for Scripted {
    async fn recommend(
        &self,
        _request: tonic::Request<RecommendationRequest>,
    ) -> Result<tonic::Response<RecommendationResponse>, Status> {
        let answer = self.0.lock().unwrap().clone();
        match answer {
            Answer::Fail(code) => Err(Status::new(code, "scripted by the test")),
            Answer::Titles(titles) => Ok(tonic::Response::new(RecommendationResponse {
                recommendations: titles
                    .into_iter()
                    .zip(1..)
                    .map(|(title, id)| BookRecommendation { id, title })
                    .collect(),
            })),
        }
    }
}

#[tokio::test]
async fn each_error_code_from_upstream_degrades_the_page_under_its_reason() {
    let (upstream, addr) = Scripted::start(Answer::Fail(Code::Unknown)).await;
    let app = spawn_app_with(config_for(addr, 5_000)).await;
    let codes = [
        (Code::Cancelled, "Canceled", "deadline_exceeded"),
        (Code::Unknown, "Unknown", "error"),
        (Code::InvalidArgument, "InvalidArgument", "error"),
        (
            Code::DeadlineExceeded,
            "DeadlineExceeded",
            "deadline_exceeded",
        ),
        (Code::NotFound, "NotFound", "error"),
        (Code::AlreadyExists, "AlreadyExists", "error"),
        (Code::PermissionDenied, "PermissionDenied", "error"),
        (Code::ResourceExhausted, "ResourceExhausted", "error"),
        (Code::FailedPrecondition, "FailedPrecondition", "error"),
        (Code::Aborted, "Aborted", "error"),
        (Code::OutOfRange, "OutOfRange", "error"),
        (Code::Unimplemented, "Unimplemented", "error"),
        (Code::Internal, "Internal", "error"),
        (Code::Unavailable, "Unavailable", "unavailable"),
        (Code::DataLoss, "DataLoss", "error"),
        (Code::Unauthenticated, "Unauthenticated", "error"),
    ];
    for (code, name, reason) in codes {
        let before = fallbacks(&app.registry, reason);
        upstream.answer(Answer::Fail(code));
        let (status, html) = get_page(&app.http_url).await;
        assert_eq!(status, 200, "{name}");
        assert_degraded(&html);
        assert_eq!(fallbacks(&app.registry, reason), before + 1.0, "{name}");
        assert_eq!(client_handled(&app.registry, name), Some(1.0), "{name}");
    }
    let total: f64 = ["unavailable", "deadline_exceeded", "error"]
        .into_iter()
        .map(|reason| fallbacks(&app.registry, reason))
        .sum();
    assert_eq!(total, codes.len() as f64, "one fallback per page");

    // The same upstream answering again: the page lists books.
    upstream.answer(Answer::Titles(vec!["A".into(), "B".into(), "C".into()]));
    let (_, html) = get_page(&app.http_url).await;
    assert_eq!(count_li(&html), 3, "{html}");
}

#[tokio::test]
async fn a_response_over_the_size_limit_degrades_the_page_as_an_error() {
    let (upstream, addr) = Scripted::start(Answer::Titles(vec!["t".repeat(2_000)])).await;
    let config = marketplace::Config {
        channel: ChannelArgs {
            recommendations_max_response_bytes: 1_024,
            ..ChannelArgs::default()
        },
        ..config_for(addr, 5_000)
    };
    let app = spawn_app_with(config).await;
    let (status, html) = get_page(&app.http_url).await;
    assert_eq!(status, 200);
    assert_degraded(&html);
    assert_eq!(fallbacks(&app.registry, "error"), 1.0);
    // The client layers sit on the wire, below the decoder that refused the
    // message: they see the response dropped before its trailers.
    assert_eq!(client_handled(&app.registry, "Canceled"), Some(1.0));

    // Under the limit, the same answer is shown.
    upstream.answer(Answer::Titles(vec!["t".repeat(500)]));
    let (_, html) = get_page(&app.http_url).await;
    assert_eq!(count_li(&html), 1, "{html}");
}

/// An upstream that accepts connections and completes the HTTP/2 handshake,
/// then never answers anything (PINGs included) while keeping the connection
/// open: a peer that died without closing (a crashed node, a dropped NAT entry).
struct SilentPeer {
    addr: SocketAddr,
    /// One message per connection accepted.
    connections: tokio::sync::mpsc::UnboundedReceiver<()>,
    _stop: oneshot::Sender<()>,
}

impl SilentPeer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, connections) = tokio::sync::mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stopped => return,
                };
                let _ = connected.send(());
                tokio::spawn(async move {
                    let mut preface = [0; 24];
                    if stream.read_exact(&mut preface).await.is_err() {
                        return;
                    }
                    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
                    // An empty SETTINGS frame, then the ack of the client's.
                    let settings = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
                    let ack = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
                    stream.write_all(&settings).await.unwrap();
                    stream.write_all(&ack).await.unwrap();
                    // Read everything (so the client never blocks), answer nothing.
                    let mut sink = [0; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        Self {
            addr,
            connections,
            _stop: stop,
        }
    }

    async fn next_connection(&mut self) {
        timeout(WAIT, self.connections.recv())
            .await
            .expect("the channel connects in time")
            .expect("the peer is listening");
    }
}

#[tokio::test]
async fn a_silent_upstream_is_noticed_by_keepalive_and_the_page_degrades_instead_of_hanging() {
    let mut peer = SilentPeer::start().await;
    let config = marketplace::Config {
        channel: ChannelArgs {
            keepalive_interval: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(500),
            ..ChannelArgs::default()
        },
        // Longer than the test waits for a page: only keepalive can end the call.
        ..config_for(peer.addr, 60_000)
    };
    let app = spawn_app_with(config).await;

    let started = Instant::now();
    let (status, html) = get_page(&app.http_url).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800) + MARGIN, "took {took:?}");
    assert_eq!(status, 200);
    assert_degraded(&html);
    assert_eq!(fallbacks(&app.registry, "unavailable"), 1.0);
    assert_eq!(client_handled(&app.registry, "Unavailable"), Some(1.0));
    peer.next_connection().await;

    // The dead connection is gone: the next page's call opens a new one.
    let (_, html) = get_page(&app.http_url).await;
    assert_degraded(&html);
    peer.next_connection().await;
}
