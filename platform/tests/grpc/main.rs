//! platform's gRPC middleware over real gRPC on 127.0.0.1: a test-only `dummy.v1`
//! service behind `server_layers`, called through `client_layers`.

mod error_log;
mod helpers;
mod metrics;
mod panics;
mod trace;
