//! What every bookshop service runs on: typed config helpers, telemetry,
//! readiness, the admin listener, the graceful-shutdown sequence and the
//! middleware of both kinds of server.

pub mod admin;
pub mod config;
pub mod grpc;
pub mod http;
pub mod layers;
pub mod listener;
pub mod metrics;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;

/// The message a panic carried (`panic!` gives a `&str` or a `String`), for
/// the panic layers' logs.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
