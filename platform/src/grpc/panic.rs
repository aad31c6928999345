//! A panicking handler answers INTERNAL ("internal error", trailers-only, nothing of
//! the panic sent to the caller), is counted in `grpc_server_panics_total` and
//! logged, and the server carries on. tower-http's `CatchPanic` catches; this
//! module says what to answer.

use http::Response;
use prometheus::{IntCounter, Registry};
use std::any::Any;
use tonic::Status;
use tower_http::catch_panic::ResponseForPanic;

/// Registers `grpc_server_panics_total` in `registry`.
pub(super) fn register(registry: &Registry) -> prometheus::Result<IntCounter> {
    let panics = IntCounter::new(
        "grpc_server_panics_total",
        "gRPC handlers that panicked; each call answered INTERNAL.",
    )?;
    registry.register(Box::new(panics.clone()))?;
    Ok(panics)
}

/// Turns a caught panic into a trailers-only INTERNAL response.
#[derive(Debug, Clone)]
pub struct InternalOnPanic {
    panics: IntCounter,
}

impl InternalOnPanic {
    pub(super) fn new(panics: IntCounter) -> Self {
        Self { panics }
    }
}

impl ResponseForPanic for InternalOnPanic {
    type ResponseBody = tonic::body::Body;

    fn response_for_panic(
        &mut self,
        panic: Box<dyn Any + Send + 'static>,
    ) -> Response<Self::ResponseBody> {
        self.panics.inc();
        let text = crate::panic_message(panic.as_ref());
        // Logged here, in the call's span; the caller learns nothing of it.
        tracing::error!(panic = text, "a gRPC handler panicked");
        Status::internal("internal error").into_http()
    }
}
