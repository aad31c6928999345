//! Starting the service in-process on port 0, and clients for it.

use bookshop_test_support::WAIT;
use platform::config::CommonArgs;
use recommendations::{
    App, Config,
    catalog::{Book, Catalog, Category},
    config::Limits,
    recommend::{BookSource, Query},
};
use recommendations_proto::v1::recommendations_client::RecommendationsClient;
use std::{net::SocketAddr, time::Duration};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// A running service; dropping it shuts the service down.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// What `/metrics` serves, read with `bookshop_test_support::metrics`.
    pub registry: prometheus::Registry,
    _stop: oneshot::Sender<()>,
}

/// The service over the embedded catalog.
pub async fn spawn_app() -> TestApp {
    spawn_app_with_source(Catalog::embedded().expect("the embedded catalog loads")).await
}

/// The service over any book source.
pub async fn spawn_app_with_source(source: impl BookSource) -> TestApp {
    spawn_app_with_limits(Limits::default(), source).await
}

/// The service over any book source, under `limits`.
pub async fn spawn_app_with_limits(limits: Limits, source: impl BookSource) -> TestApp {
    let config = Config {
        grpc_port: 0,
        admin_port: 0,
        limits,
        common: CommonArgs {
            shutdown_delay: Duration::ZERO,
            ..CommonArgs::default()
        },
        ..Config::default()
    };
    let app = App::bind_with_source(config, source)
        .await
        .expect("the service binds");
    let (stop, stopped) = oneshot::channel::<()>();
    let test_app = TestApp {
        grpc_addr: loopback(app.grpc_addr()),
        admin_addr: loopback(app.admin_addr()),
        registry: app.registry().clone(),
        _stop: stop,
    };
    // The sender is dropped with the TestApp, which ends `stopped`.
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    test_app
}

/// The listeners bind 0.0.0.0; tests connect through the loopback interface.
fn loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// A new HTTP/2 connection to the gRPC listener at `addr`; connecting and each
/// call's answer are bounded by [`WAIT`].
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect()
        .await
        .expect("the gRPC listener accepts")
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        connect(self.grpc_addr).await
    }

    pub async fn client(&self) -> RecommendationsClient<Channel> {
        RecommendationsClient::new(self.channel().await)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// GETs `path` from the admin listener, within [`WAIT`]: the status and body.
    pub async fn get_admin(&self, path: &str) -> (reqwest::StatusCode, String) {
        let answer = async {
            let response = reqwest::get(self.admin_url(path)).await.unwrap();
            (response.status(), response.text().await.unwrap())
        };
        tokio::time::timeout(WAIT, answer)
            .await
            .expect("the admin listener answers in time")
    }
}

/// A catalog of `n` mystery books, for counts the embedded catalog cannot show.
pub fn mystery_shelf(n: i32) -> Catalog {
    let books: Vec<String> = (1..=n)
        .map(|id| format!(r#"{{"id": {id}, "category": "mystery", "title": "Mystery {id}"}}"#))
        .collect();
    Catalog::from_json("test shelf", &format!("[{}]", books.join(","))).unwrap()
}

/// A source that takes `delay` per call without blocking a thread, like a remote store.
pub struct SlowSource {
    pub catalog: Catalog,
    pub delay: Duration,
}

impl BookSource for SlowSource {
    async fn recommend(&self, query: Query) -> Vec<Book> {
        tokio::time::sleep(self.delay).await;
        self.catalog.recommend(query).await
    }

    fn count(&self, category: Category) -> usize {
        self.catalog.count(category)
    }
}
