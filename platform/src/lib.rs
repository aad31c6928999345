//! What every bookshop service runs on: typed config helpers, telemetry,
//! readiness, the admin listener and the graceful-shutdown sequence.

pub mod admin;
pub mod config;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;
