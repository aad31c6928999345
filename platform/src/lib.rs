//! What every bookshop service runs on: typed config helpers, telemetry,
//! readiness, the admin listener, the graceful-shutdown sequence and the
//! middleware of both kinds of server (their order: docs/design.md).

pub mod admin;
pub mod config;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod metrics;
mod panic;
pub mod readiness;
mod shed;
pub mod shutdown;
pub mod telemetry;
