//! Binding and serving: the pages listener and the admin listener, under
//! platform's graceful-shutdown sequence.

use crate::{AppState, Config, GrpcRecommendations, Recommendations, router};
use anyhow::Context as _;
use axum::Router;
use platform::{
    admin::Admin,
    grpc::LayersError,
    http::{ConnectionLimits, HttpServerMetrics},
    listener::BindError,
    shutdown::Shutdown,
};
use prometheus::Registry;
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;

/// Why the marketplace could not start; every one is the environment's problem
/// or a bug (exit 1): bad settings never get this far.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Listen(#[from] BindError),
    #[error("invalid recommendations address: {0}")]
    Address(#[source] tonic::transport::Error),
    #[error("cannot set up the gRPC middleware: {0}")]
    Middleware(#[from] LayersError),
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot compile the page templates: {0}")]
    Templates(#[from] tera::Error),
}

/// A bound, not yet serving, marketplace.
pub struct App {
    http_listener: TcpListener,
    http_addr: SocketAddr,
    limits: ConnectionLimits,
    pages: Router,
    admin: Admin,
    registry: Registry,
    shutdown: Shutdown,
}

impl App {
    /// Binds both listeners, with the gRPC client of the configured
    /// recommendations service (which connects on first use).
    pub async fn bind(config: Config) -> Result<App, StartupError> {
        // The client's grpc_client_* metrics go to the same registry as the rest.
        let registry = registry();
        let client = GrpcRecommendations::new(&config, &registry)?;
        Self::bind_with(config, Arc::new(client), registry).await
    }

    /// Binds both listeners, with any recommendations client (tests pass fakes).
    pub async fn bind_with_client(
        config: Config,
        recommendations: Arc<dyn Recommendations>,
    ) -> Result<App, StartupError> {
        Self::bind_with(config, recommendations, registry()).await
    }

    async fn bind_with(
        config: Config,
        recommendations: Arc<dyn Recommendations>,
        registry: Registry,
    ) -> Result<App, StartupError> {
        let (http_listener, http_addr) = platform::listener::bind("http", config.http_port).await?;
        let shutdown = Shutdown::new(config.common.shutdown_delay, config.common.shutdown_timeout);
        let max_concurrent_requests = config.http_max_concurrent_requests;
        let limits = config.connection_limits();
        let state = AppState::new(recommendations, config.recommendations_timeout, &registry)?
            .with_jaeger_ui(config.jaeger_ui_url);
        let pages = router(
            state,
            HttpServerMetrics::register(&registry)?,
            max_concurrent_requests,
            shutdown.in_flight().clone(),
        );
        // Readiness follows shutdown only: a down recommendations service must
        // not take the marketplace out of rotation too (pages degrade instead).
        let admin = Admin::bind(
            config.admin_port,
            shutdown.readiness().clone(),
            registry.clone(),
        )
        .await?;
        Ok(App {
            http_listener,
            http_addr,
            limits,
            pages,
            admin,
            registry,
            shutdown,
        })
    }

    /// The pages listener's address (the real port when the config asked for 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The metrics registry `/metrics` serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves until `trigger` resolves, then shuts down as docs/design.md describes.
    pub async fn run(
        self,
        trigger: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(http_addr = %self.http_addr(), admin_addr = %self.admin_addr(), "listening");
        let App {
            http_listener,
            limits,
            pages,
            admin,
            shutdown,
            ..
        } = self;
        // Not axum::serve: it cannot bound request heads (slow or huge ones).
        let pages = platform::http::serve(http_listener, pages, limits, shutdown.stopped());
        let admin = admin.serve(shutdown.stopped());
        let serve_both = async {
            tokio::try_join!(
                async { pages.await.context("the pages server failed") },
                async { admin.await.context("the admin server failed") },
            )?;
            Ok(())
        };
        shutdown.run(trigger, serve_both).await
    }
}

fn registry() -> Registry {
    platform::metrics::registry("marketplace", env!("CARGO_PKG_VERSION"))
}
