//! gRPC middleware as tower layers (the Rust form of interceptors): one
//! observer per call (`observe`), ended once (`call_end`), with the
//! in-flight count around it and panics answered INTERNAL inside it.

mod call_end;
mod methods;
mod metrics;
mod observe;

pub use methods::Rpc;
pub use observe::{Observe, ObserveLayer};

use crate::{panic::OnPanic, shed::ShedLayer, shutdown::InFlight};
use axum::response::IntoResponse as _;
use prometheus::{Registry, register_int_counter_with_registry};
use std::{future::ready, time::Duration};
use tonic::Status;
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};
use tower_http::{catch_panic::CatchPanicLayer, metrics::InFlightRequestsLayer};

/// Which end of a call a layer sits on: it names the metrics and sets the span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Why the layers could not be built; both are programming errors, found at start.
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    #[error("invalid gRPC file descriptor set: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("cannot register the gRPC metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The server middleware of [`server`], outermost first: in-flight count,
/// observer, panics (answered INTERNAL inside the call's span).
pub type ServerLayers = ServiceBuilder<
    Stack<CatchPanicLayer<Panics>, Stack<ObserveLayer, Stack<InFlightRequestsLayer, Identity>>>,
>;

type Panics = OnPanic<fn() -> http::Response<tonic::body::Body>>;

fn internal() -> http::Response<tonic::body::Body> {
    Status::internal("internal error").into_http()
}

/// A tonic server builder with the platform's middleware on.
pub type Server = tonic::transport::Server<Stack<ServerLayers, Identity>>;
/// What [`Server::add_service`] makes of it.
pub type Router = tonic::transport::server::Router<Stack<ServerLayers, Identity>>;

/// A tonic server with [`server_layers`] on, each call cut off after `timeout`
/// (or a caller's shorter `grpc-timeout`).
pub fn server(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
    in_flight: &InFlight,
    timeout: Duration,
) -> Result<Server, LayersError> {
    let layers = server_layers(registry, descriptor_sets, in_flight)?;
    // Outside every layer: a call it cuts off is dropped there, and counted CANCELLED.
    Ok(tonic::transport::Server::builder()
        .timeout(timeout)
        .layer(layers))
}

/// The server layers, counting calls in `in_flight`. `descriptor_sets` (encoded
/// `FileDescriptorSet`s) name the methods metrics and spans may label; any other
/// path counts as `unknown`. The metrics, `grpc_server_panics_total` included,
/// go to `registry`.
pub fn server_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
    in_flight: &InFlight,
) -> Result<ServerLayers, LayersError> {
    let panics = OnPanic {
        panics: register_int_counter_with_registry!(
            "grpc_server_panics_total",
            "gRPC handlers that panicked; each call answered INTERNAL.",
            registry
        )?,
        message: "a gRPC handler panicked",
        answer: internal as fn() -> _,
    };
    Ok(ServiceBuilder::new()
        .layer(in_flight.layer())
        .layer(ObserveLayer::register(
            Side::Server,
            registry,
            descriptor_sets,
        )?)
        .layer(panics.layer()))
}

/// The client middleware, to wrap a `Channel`: a CLIENT span whose context goes
/// out in the request headers, and the `grpc_client_*` metrics.
pub fn client_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
) -> Result<ObserveLayer, LayersError> {
    ObserveLayer::register(Side::Client, registry, descriptor_sets)
}

/// A channel (or any gRPC client service) wrapped in [`client_layers`].
pub type ClientStack<S> = Observe<S>;

/// What a shed caller reads; it should back off and retry, elsewhere if it can.
pub const OVERLOADED: &str = "too many calls in progress; retry later";

/// Answers a service's calls past `max` at once RESOURCE_EXHAUSTED. Put it on
/// one service (`tonic::service::LayerExt::named_layer`), not the server, so
/// health checks and reflection are still answered under load.
pub fn limit_calls(max: usize) -> ShedLayer {
    ShedLayer::new(max, |_| {
        ready(
            Status::resource_exhausted(OVERLOADED)
                .into_http::<axum::body::Body>()
                .into_response(),
        )
    })
}
