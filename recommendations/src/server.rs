//! Binding and serving: the gRPC listener (service, health, reflection) and the admin
//! listener, both stopped by `platform::shutdown`.

use crate::{
    catalog::{Catalog, CatalogError, Category},
    config::Config,
    grpc::RecommendationsService,
    recommend::BookSource,
};
use anyhow::Context;
use platform::{admin::Admin, listener::BindError, readiness::Readiness, shutdown::Shutdown};
use prometheus::{IntGaugeVec, Opts, Registry};
use recommendations_proto::v1::{
    FILE_DESCRIPTOR_SET, recommendations_server::RecommendationsServer,
};
use std::{future::Future, net::SocketAddr};
use tokio::net::TcpListener;
use tonic::{service::LayerExt as _, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

/// Why the service could not start. A bad catalog is a bad setting (exit 64); the
/// rest are the environment's problems (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Listen(#[from] BindError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot set up the gRPC middleware: {0}")]
    Middleware(#[from] platform::grpc::LayersError),
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The gRPC service as health reports it; `NamedService::NAME` does not depend on
/// the book source, so one instance of the generic names them all.
type Served = RecommendationsServer<RecommendationsService<Catalog>>;

/// A bound, not yet serving, recommendations service.
pub struct App {
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    grpc: platform::grpc::Router,
    admin: Admin,
    registry: Registry,
    health: HealthReporter,
    shutdown: Shutdown,
}

impl App {
    /// Loads the catalog (`CATALOG_PATH` or the embedded one) and binds both listeners.
    pub async fn bind(config: Config) -> Result<App, StartupError> {
        let catalog = Catalog::load(config.catalog_path.as_deref())?;
        Self::bind_with_source(config, catalog).await
    }

    /// Binds both listeners over any source of books (tests plug in slow ones).
    pub async fn bind_with_source<B: BookSource>(
        config: Config,
        source: B,
    ) -> Result<App, StartupError> {
        let (grpc_listener, grpc_addr) = platform::listener::bind("gRPC", config.grpc_port).await?;
        let shutdown = Shutdown::new(config.common.shutdown_delay, config.common.shutdown_timeout);

        let registry = platform::metrics::registry("recommendations", env!("CARGO_PKG_VERSION"));
        register_catalog_books(&registry, &source)?;

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<Served>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let limits = &config.limits;
        let (max_request, max_response) = (
            limits.grpc_max_request_bytes,
            limits.grpc_max_response_bytes,
        );
        let recommendations = RecommendationsServer::new(RecommendationsService::new(source))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        // The middleware of docs/design.md, over every service served, so that
        // each method gets its own labels. Each call is also bounded by a
        // caller's `grpc-timeout`, whichever is shorter.
        let grpc = platform::grpc::server(
            &registry,
            &[
                FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            ],
            shutdown.in_flight(),
            limits.request_timeout,
        )?
        // Only Recommend is limited (see platform::grpc::limit_calls),
        // and no per-connection limit queues calls in front of it: past the
        // limit a call is shed at once, counted by the observer like any answer.
        .add_service(
            platform::grpc::limit_calls(limits.grpc_max_concurrent_calls)
                .named_layer(recommendations),
        )
        .add_service(
            health_service
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(max_response),
        )
        .add_service(
            reflection
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(max_response),
        );

        let admin = Admin::bind(
            config.admin_port,
            shutdown.readiness().clone(),
            registry.clone(),
        )
        .await?;

        Ok(App {
            grpc_listener,
            grpc_addr,
            grpc,
            admin,
            registry,
            health,
            shutdown,
        })
    }

    /// The gRPC listener's address (the real port when the config asked for 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
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
        tracing::info!(grpc_addr = %self.grpc_addr(), admin_addr = %self.admin_addr(), "listening");
        let App {
            grpc_listener,
            grpc,
            admin,
            health,
            shutdown,
            ..
        } = self;

        // gRPC messages are small: Nagle's algorithm would only add latency.
        let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc = grpc.serve_with_incoming_shutdown(incoming, shutdown.stopped());
        let admin = admin.serve(shutdown.stopped());
        let health = not_serving_once_not_ready(health, shutdown.readiness().clone());
        let serve_both = async {
            tokio::try_join!(
                async { grpc.await.context("the gRPC server failed") },
                async { admin.await.context("the admin server failed") },
                async {
                    health.await;
                    Ok::<_, anyhow::Error>(())
                },
            )?;
            Ok(())
        };
        shutdown.run(trigger, serve_both).await
    }
}

/// Sets `recommendations_catalog_books{category}` once: the catalog never changes.
fn register_catalog_books(registry: &Registry, source: &impl BookSource) -> prometheus::Result<()> {
    let books = IntGaugeVec::new(
        Opts::new(
            "recommendations_catalog_books",
            "Books in the catalog, by category.",
        ),
        &["category"],
    )?;
    for category in Category::ALL {
        let count = source.count(category);
        if count == 0 {
            tracing::warn!(%category, "the catalog has no books in this category");
        }
        books
            .with_label_values(&[category.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(Box::new(books))
}

/// gRPC health follows readiness: both the server ("") and the service turn NOT_SERVING
/// the moment shutdown begins, so probes and balancers drain us during the delay.
async fn not_serving_once_not_ready(health: HealthReporter, readiness: Readiness) {
    readiness.not_ready().await;
    health.set_not_serving::<Served>().await;
    // The whole server has no service type to name it: "" is what the protocol uses.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}
