//! Binding and serving: the pages listener and the admin listener, under
//! platform's graceful-shutdown sequence.

use crate::{AppState, Config, GrpcRecommendations, Recommendations, router};
use anyhow::Context as _;
use axum::Router;
use platform::shutdown::Shutdown;
use prometheus::Registry;
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;

/// A bound marketplace, ready to [`run`](App::run).
pub struct App {
    http: TcpListener,
    admin: TcpListener,
    pages: Router,
    admin_routes: Router,
    shutdown: Shutdown,
}

impl App {
    /// Binds both listeners, with the gRPC client of the configured
    /// recommendations service (which connects on first use).
    pub async fn bind(config: Config) -> anyhow::Result<App> {
        // The client's grpc_client_* metrics go to the same registry as the rest.
        let registry = registry();
        let client = GrpcRecommendations::new(
            config.recommendations_uri(),
            config.recommendations_timeout(),
            &registry,
        )
        .context("cannot set up the recommendations client")?;
        Self::bind_with(config, Arc::new(client), registry).await
    }

    /// Binds both listeners, with any recommendations client (tests pass fakes).
    pub async fn bind_with_client(
        config: Config,
        recommendations: Arc<dyn Recommendations>,
    ) -> anyhow::Result<App> {
        Self::bind_with(config, recommendations, registry()).await
    }

    async fn bind_with(
        config: Config,
        recommendations: Arc<dyn Recommendations>,
        registry: Registry,
    ) -> anyhow::Result<App> {
        let http = platform::listener::bind("http", config.http_port).await?;
        let admin = platform::listener::bind("admin", config.admin_port).await?;
        let state = AppState::new(recommendations, config.recommendations_timeout(), &registry)?;
        let shutdown = Shutdown::new(
            config.common.shutdown_delay(),
            config.common.shutdown_timeout(),
        );
        // Readiness follows shutdown only: a down recommendations service must
        // not take the marketplace out of rotation too (pages degrade instead).
        let admin_routes = platform::admin::router(shutdown.readiness().clone(), registry);
        Ok(App {
            http,
            admin,
            pages: router(state),
            admin_routes,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `trigger` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        trigger: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(http_addr = %self.http_addr(), admin_addr = %self.admin_addr(), "listening");
        let App {
            http,
            admin,
            pages,
            admin_routes,
            shutdown,
        } = self;
        let serve_pages = axum::serve(http, pages).with_graceful_shutdown(shutdown.stopped());
        let serve_admin = platform::admin::serve(admin, admin_routes, shutdown.stopped());
        let serve_both =
            async { tokio::try_join!(serve_pages.into_future(), serve_admin).map(|_| ()) };
        shutdown
            .run(trigger, serve_both)
            .await
            .context("serving failed")
    }
}

fn registry() -> Registry {
    platform::metrics::registry("marketplace", env!("CARGO_PKG_VERSION"))
}
