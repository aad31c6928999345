//! gRPC middleware as tower layers (the Rust form of gRPC interceptors). One
//! observer per call ([`observe`]): its span, its access line, its
//! `grpc_server_*`/`grpc_client_*` metrics and, on the server, one line when it
//! fails, all at the one moment the call ends ([`call_end`]). Around it the
//! in-flight count, inside it panics turned into INTERNAL ([`panic`]).
//! [`server`] and [`client_layers`] stack them in the order written down in
//! [`crate::layers`]. Apart, for one service at a time: calls past a limit shed
//! with RESOURCE_EXHAUSTED ([`LimitCallsLayer`]).

mod call_end;
mod limit;
mod methods;
mod metrics;
mod observe;
mod panic;

pub use limit::{LimitCalls, LimitCallsLayer, OVERLOADED};
pub use methods::Rpc;
pub use observe::{Observe, ObserveLayer};

use crate::shutdown::InFlight;
use prometheus::{IntCounter, Registry};
use std::time::Duration;
use tower::{
    Layer, ServiceBuilder,
    layer::util::{Identity, Stack},
};
use tower_http::{
    catch_panic::{CatchPanic, CatchPanicLayer},
    metrics::in_flight_requests::InFlightRequests,
};

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

/// The server middleware of [`server`], in the order [`crate::layers`] gives:
/// in-flight count, observer, panics.
#[derive(Debug, Clone)]
pub struct ServerLayers {
    in_flight: InFlight,
    observe: ObserveLayer,
    panics: IntCounter,
}

impl<S> Layer<S> for ServerLayers {
    type Service = InFlightRequests<Observe<CatchPanic<S, panic::InternalOnPanic>>>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceBuilder::new()
            .layer(self.in_flight.layer())
            .layer(self.observe.clone())
            .layer(CatchPanicLayer::custom(panic::InternalOnPanic::new(
                self.panics.clone(),
            )))
            .service(inner)
    }
}

/// A tonic server builder with the platform's middleware on.
pub type Server = tonic::transport::Server<Stack<ServerLayers, Identity>>;
/// What [`Server::add_service`] makes of it: serve it with
/// `serve_with_incoming_shutdown`.
pub type Router = tonic::transport::server::Router<Stack<ServerLayers, Identity>>;

/// A tonic server with the server middleware on, each call cut off after
/// `timeout` (or a caller's shorter `grpc-timeout`) and counted in `in_flight`
/// until its response ends.
///
/// `descriptor_sets` are the encoded `FileDescriptorSet`s of every service served:
/// they name the methods that metrics and spans may label (any other path counts as
/// `unknown`). The metrics, `grpc_server_panics_total` included, go to `registry`.
pub fn server(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
    in_flight: &InFlight,
    timeout: Duration,
) -> Result<Server, LayersError> {
    let layers = server_layers(registry, descriptor_sets, in_flight)?;
    // tonic's timeout is outside every layer: a call it cuts off is dropped
    // there, and the observer counts it CANCELLED.
    Ok(tonic::transport::Server::builder()
        .timeout(timeout)
        .layer(layers))
}

/// The layers of [`server`], for other servers (or none: benchmarks).
pub fn server_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
    in_flight: &InFlight,
) -> Result<ServerLayers, LayersError> {
    Ok(ServerLayers {
        in_flight: in_flight.clone(),
        observe: ObserveLayer::register(Side::Server, registry, descriptor_sets)?,
        panics: panic::register(registry)?,
    })
}

/// The client middleware, to wrap a `Channel`: one observer per call, with a
/// CLIENT span whose context goes out in the request headers and the
/// `grpc_client_*` metrics. `descriptor_sets` name the methods called.
pub fn client_layers(
    registry: &Registry,
    descriptor_sets: &[&[u8]],
) -> Result<ObserveLayer, LayersError> {
    ObserveLayer::register(Side::Client, registry, descriptor_sets)
}

/// A channel (or any gRPC client service) wrapped in [`client_layers`].
pub type ClientStack<S> = Observe<S>;
