//! What the tests share: fakes of the recommendations service and
//! `spawn_app()`, a real marketplace on port 0. Every wait is bounded by
//! [`WAIT`].

use async_trait::async_trait;
pub use bookshop_test_support::WAIT;
use marketplace::{
    App, AppState, Book, Category, Config, Recommendations, RecommendationsError, router,
};
use platform::{config::CommonArgs, http::HttpServerMetrics, shutdown::InFlight};
use prometheus::Registry;
use recommendations_proto::v1::{
    BookRecommendation, RecommendationRequest, RecommendationResponse, recommendations_server,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::timeout,
};
use tokio_stream::wrappers::TcpListenerStream;

/// A stand-in for the recommendations client.
pub enum FakeRecommendations {
    /// Answers "<Category> book N" titles.
    Books,
    /// Answers these titles, whatever the category.
    Titles(Vec<String>),
    /// Fails as if the service were down.
    Unavailable,
    /// Answers only after ten seconds: longer than any page waits.
    Slow,
}

#[async_trait]
impl Recommendations for FakeRecommendations {
    async fn recommend(
        &self,
        category: Category,
        max_results: u32,
    ) -> Result<Vec<Book>, RecommendationsError> {
        let titles = match self {
            Self::Books => (1..=max_results)
                .map(|n| format!("{} book {n}", category.label()))
                .collect(),
            Self::Titles(titles) => titles.clone(),
            Self::Unavailable => {
                return Err(RecommendationsError::Unavailable("the fake is down".into()));
            }
            Self::Slow => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                return Ok(Vec::new());
            }
        };
        Ok(titles
            .into_iter()
            .zip(1..)
            .map(|(title, id)| Book { id, title })
            .collect())
    }
}

/// A config for tests: the defaults, but any free ports, recommendations on
/// the loopback address and no shutdown delay.
pub fn test_config() -> Config {
    Config {
        http_port: 0,
        admin_port: 0,
        recommendations_host: "127.0.0.1".into(),
        common: no_shutdown_delay(),
        ..Config::default()
    }
}

/// A config whose recommendations service is at `upstream`, with a deadline.
pub fn config_for(upstream: SocketAddr, timeout_ms: u64) -> Config {
    Config {
        recommendations_host: upstream.ip().to_string(),
        recommendations_port: upstream.port(),
        recommendations_timeout: Duration::from_millis(timeout_ms),
        ..test_config()
    }
}

/// A config of the real recommendations service on `port` (0: any free one).
pub fn recommendations_config(port: u16) -> recommendations::Config {
    recommendations::Config {
        grpc_port: port,
        admin_port: 0,
        common: no_shutdown_delay(),
        ..recommendations::Config::default()
    }
}

/// The defaults, but a stopped app stops at once.
fn no_shutdown_delay() -> CommonArgs {
    CommonArgs {
        shutdown_delay: Duration::ZERO,
        ..CommonArgs::default()
    }
}

/// The page router over `fake`, for `oneshot` tests without a socket.
pub fn router_with(fake: FakeRecommendations, timeout: Duration) -> axum::Router {
    router_over(AppState::new(Arc::new(fake), timeout, &Registry::new()).unwrap())
}

/// [`router_with`] three books, its pages linking to a Jaeger UI at `jaeger_ui`.
pub fn router_with_jaeger_ui(jaeger_ui: &str) -> axum::Router {
    let state = AppState::new(
        Arc::new(FakeRecommendations::Books),
        Duration::from_secs(5),
        &Registry::new(),
    )
    .unwrap();
    router_over(state.with_jaeger_ui(Some(jaeger_ui.into())))
}

fn router_over(state: AppState) -> axum::Router {
    router(
        state,
        HttpServerMetrics::register(&Registry::new()).unwrap(),
        Config::default().http_max_concurrent_requests,
        InFlight::default(),
    )
}

/// A marketplace serving in the background; it shuts down when dropped.
pub struct TestApp {
    pub http_url: String,
    pub admin_url: String,
    /// What `/metrics` serves, read with `bookshop_test_support::metrics`.
    pub registry: Registry,
    _stop: oneshot::Sender<()>,
}

/// A marketplace on port 0 whose recommendations answer three books.
pub async fn spawn_app() -> TestApp {
    spawn_app_with_client(test_config(), Arc::new(FakeRecommendations::Books)).await
}

/// A marketplace with the real gRPC client, talking to whatever `config` names.
pub async fn spawn_app_with(config: Config) -> TestApp {
    serve(App::bind(config).await.expect("the marketplace binds")).await
}

pub async fn spawn_app_with_client(
    config: Config,
    recommendations: Arc<dyn Recommendations>,
) -> TestApp {
    let app = App::bind_with_client(config, recommendations)
        .await
        .expect("the marketplace binds");
    serve(app).await
}

async fn serve(app: App) -> TestApp {
    let http_url = format!("http://127.0.0.1:{}", app.http_addr().port());
    let admin_url = format!("http://127.0.0.1:{}", app.admin_addr().port());
    let registry = app.registry().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    // Dropping the sender resolves the receiver: the app stops with the test.
    tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        http_url,
        admin_url,
        registry,
        _stop: stop,
    }
}

/// GETs `url` over real HTTP, within [`WAIT`]; returns the status and the body.
pub async fn get_page(url: &str) -> (reqwest::StatusCode, String) {
    let answer = async {
        let response = reqwest::get(url).await.expect("the request is answered");
        let status = response.status();
        (status, response.text().await.expect("the body is text"))
    };
    timeout(WAIT, answer)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within {WAIT:?}"))
}

/// How many list items a page holds.
pub fn count_li(html: &str) -> usize {
    html.matches("<li").count()
}

/// A recommendations gRPC server that holds every answer until released:
/// the other side of the boundary, for tests of the real binary and client.
pub struct FakeRecommendationsServer {
    pub addr: SocketAddr,
    /// Receives each request as it arrives, so tests know one is in flight.
    requests: mpsc::UnboundedReceiver<tonic::Request<RecommendationRequest>>,
    release: watch::Sender<bool>,
}

impl FakeRecommendationsServer {
    /// Answers as many books as asked for.
    pub async fn start() -> Self {
        Self::answering(None).await
    }

    /// Answers `books` books whatever was asked (`None`: as many as asked).
    pub async fn answering(books: Option<i32>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let service = recommendations_server::RecommendationsServer::new(HeldAnswers {
            requests: requests_tx,
            released,
            books,
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            requests,
            release,
        }
    }

    /// Lets every held and future request answer.
    pub fn release(&self) {
        self.release.send_replace(true);
    }

    /// The next request to arrive, within [`WAIT`].
    pub async fn next_request(&mut self) -> tonic::Request<RecommendationRequest> {
        timeout(WAIT, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no request reached the fake within {WAIT:?}"))
            .expect("the fake serves while the test holds it")
    }
}

struct HeldAnswers {
    requests: mpsc::UnboundedSender<tonic::Request<RecommendationRequest>>,
    released: watch::Receiver<bool>,
    books: Option<i32>,
}

#[tonic::async_trait]
impl recommendations_server::Recommendations for HeldAnswers {
    async fn recommend(
        &self,
        request: tonic::Request<RecommendationRequest>,
    ) -> Result<tonic::Response<RecommendationResponse>, tonic::Status> {
        let books = self.books.unwrap_or(request.get_ref().max_results);
        let _ = self.requests.send(request);
        let mut released = self.released.clone();
        // Fails only if the test dropped the server, and then nobody listens.
        let _ = released.wait_for(|released| *released).await;
        let recommendations = (1..=books)
            .map(|id| BookRecommendation {
                id,
                title: format!("Held book {id}"),
            })
            .collect();
        Ok(tonic::Response::new(RecommendationResponse {
            recommendations,
        }))
    }
}
