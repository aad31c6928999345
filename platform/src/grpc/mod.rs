//! gRPC middleware as tower layers (the Rust form of gRPC interceptors): a span and
//! an access line per call ([`trace`]), the `grpc_server_*`/`grpc_client_*` metrics
//! ([`metrics`]), one log line per failed call ([`error_log`]) and panics turned into
//! INTERNAL ([`panic`]). [`server_layers`] and [`client_layers`] stack them in the
//! one order that works; apply them with `Server::builder().layer(…)` or around a
//! `Channel`. Apart, for one service at a time: calls past a limit shed with
//! RESOURCE_EXHAUSTED ([`load_shed`]).

pub mod error_log;
pub mod load_shed;
pub mod methods;
pub mod metrics;
pub mod panic;
mod status;
pub mod trace;

pub use error_log::{ErrorLog, ErrorLogLayer};
pub use load_shed::{LimitCalls, LimitCallsLayer};
pub use methods::{Methods, Rpc};
pub use metrics::{Metrics, MetricsLayer};
pub use panic::PanicAnswer;
pub use trace::{Trace, TraceLayer};

use prometheus::Registry;
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};
use tower_http::catch_panic::CatchPanicLayer;

/// Which end of a call a layer sits on: it names the metrics and sets the span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Wraps a server: the call came in.
    Server,
    /// Wraps a channel: the call goes out.
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

/// The layers [`server_layers`] returns, in a nameable type.
pub type ServerLayers = ServiceBuilder<
    Stack<
        CatchPanicLayer<PanicAnswer>,
        Stack<ErrorLogLayer, Stack<MetricsLayer, Stack<TraceLayer, Identity>>>,
    >,
>;

/// The layers [`client_layers`] returns, in a nameable type.
pub type ClientLayers = ServiceBuilder<Stack<MetricsLayer, Stack<TraceLayer, Identity>>>;

/// A channel (or any gRPC client service) wrapped in [`client_layers`].
pub type ClientStack<S> = Trace<Metrics<S>>;

/// The server middleware, for `tonic::transport::Server::builder().layer(…)`.
///
/// `descriptor_sets` are the encoded `FileDescriptorSet`s of every service served:
/// they name the methods that metrics and spans may label (any other path counts as
/// `unknown`). The metrics, `grpc_server_panics_total` included, go to `registry`.
///
/// The order, outermost first, is the one place it is written down:
/// 1. trace: its span is current while everything inside runs, so every line the
///    other layers and the handler log carries the trace id, and the span covers
///    the whole call;
/// 2. metrics: counts every call the way the caller saw it, panics included (by
///    then already turned into INTERNAL);
/// 3. error log: one line per failed call, inside the span;
/// 4. panic: innermost, so a panicking handler becomes an ordinary INTERNAL
///    response that the layers above observe like any other.
pub fn server_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
) -> Result<ServerLayers, LayersError> {
    let methods = Methods::from_descriptor_sets(descriptor_sets)?;
    Ok(ServiceBuilder::new()
        .layer(TraceLayer::new(Side::Server, methods.clone()))
        .layer(MetricsLayer::register(
            Side::Server,
            registry,
            methods.clone(),
        )?)
        .layer(ErrorLogLayer::new(methods))
        .layer(panic::layer(registry)?))
}

/// The client middleware, to wrap a `Channel`: a CLIENT span whose context goes out
/// in the request headers, then the `grpc_client_*` metrics, in that order for the
/// same reasons as on the server. `descriptor_sets` name the methods called.
pub fn client_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
) -> Result<ClientLayers, LayersError> {
    let methods = Methods::from_descriptor_sets(descriptor_sets)?;
    Ok(ServiceBuilder::new()
        .layer(TraceLayer::new(Side::Client, methods.clone()))
        .layer(MetricsLayer::register(Side::Client, registry, methods)?))
}
