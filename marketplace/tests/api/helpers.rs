//! What the tests share: fakes of the recommendations service and
//! `spawn_app()`, a real marketplace on port 0.

use async_trait::async_trait;
use marketplace::{
    App, AppState, Book, Category, Config, Recommendations, RecommendationsError, router,
};
use platform::http::HttpServerMetrics;
use recommendations_proto::v1::{
    BookRecommendation, RecommendationRequest, RecommendationResponse, recommendations_server,
};
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot, watch};
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

/// A config for tests: any free ports, no shutdown delay, a short deadline.
pub fn test_config() -> Config {
    Config {
        http_port: 0,
        admin_port: 0,
        recommendations_host: "127.0.0.1".into(),
        recommendations_port: 50051,
        recommendations_timeout_ms: 500,
        jaeger_ui_url: None,
        common: platform::config::CommonArgs::default(),
    }
}

/// The page router over `fake`, for `oneshot` tests without a socket.
pub fn router_with(fake: FakeRecommendations, timeout: Duration) -> axum::Router {
    let registry = prometheus::Registry::new();
    let state = AppState::new(Arc::new(fake), timeout, &registry).unwrap();
    router(state, HttpServerMetrics::register(&registry).unwrap())
}

/// A marketplace serving in the background; it shuts down when dropped.
pub struct TestApp {
    pub http_url: String,
    pub admin_url: String,
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
    let (stop, stopped) = oneshot::channel::<()>();
    // Dropping the sender resolves the receiver: the app stops with the test.
    tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        http_url,
        admin_url,
        _stop: stop,
    }
}

/// GETs `url` over real HTTP; returns the status and the body.
pub async fn get_page(url: &str) -> (reqwest::StatusCode, String) {
    let response = reqwest::get(url).await.expect("the request is answered");
    let status = response.status();
    (status, response.text().await.expect("the body is text"))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (version 0.0.4): every sample line,
/// its label values unescaped; `#` lines are skipped. Panics on a malformed
/// line, which is a bug in what the app exposes.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("malformed sample: {line}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (at, '"') => break at,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        escaped => value.push(escaped),
                    },
                    (_, other) => value.push(other),
                }
            };
            labels.insert(label.trim().to_owned(), value);
            inner = &after[1 + end + 1..];
        }
    }
    // A timestamp may follow the value; the exposition here writes none.
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The samples named `name`, each as its labels and value.
pub fn series(samples: &[Sample], name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .map(|sample| (sample.labels.clone(), sample.value))
        .collect()
}

/// A label set from pairs, to compare with [`series`].
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
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
    pub requests: mpsc::UnboundedReceiver<tonic::Request<RecommendationRequest>>,
    release: watch::Sender<bool>,
}

impl FakeRecommendationsServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let service = recommendations_server::RecommendationsServer::new(HeldAnswers {
            requests: requests_tx,
            released,
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
}

struct HeldAnswers {
    requests: mpsc::UnboundedSender<tonic::Request<RecommendationRequest>>,
    released: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl recommendations_server::Recommendations for HeldAnswers {
    async fn recommend(
        &self,
        request: tonic::Request<RecommendationRequest>,
    ) -> Result<tonic::Response<RecommendationResponse>, tonic::Status> {
        let max_results = request.get_ref().max_results;
        let _ = self.requests.send(request);
        let mut released = self.released.clone();
        // Fails only if the test dropped the server, and then nobody listens.
        let _ = released.wait_for(|released| *released).await;
        let recommendations = (1..=max_results)
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

#[test]
fn the_metrics_parser_unescapes_label_values_and_reads_special_values() {
    let text = "# HELP x_total A help line.\n# TYPE x_total counter\n\
                x_total{a=\"q\\\"uo,te}\",b=\"back\\\\slash\\nline\"} 3\n\
                plain 1.5e-3\n\
                h_bucket{le=\"+Inf\"} +Inf\n";
    let samples = parse_metrics(text);
    assert_eq!(
        samples,
        vec![
            Sample {
                name: "x_total".into(),
                labels: labels(&[("a", "q\"uo,te}"), ("b", "back\\slash\nline")]),
                value: 3.0,
            },
            Sample {
                name: "plain".into(),
                labels: BTreeMap::new(),
                value: 0.0015,
            },
            Sample {
                name: "h_bucket".into(),
                labels: labels(&[("le", "+Inf")]),
                value: f64::INFINITY,
            },
        ]
    );
}
