//! The marketplace's integration tests: one binary, one module per concern.

mod cross_service;
mod faults;
mod grpc_client;
mod helpers;
mod keep_alive;
mod load_shedding;
mod pages;
mod panics;
mod properties;
mod server;
mod shutdown;
mod slow_clients;
mod trace_footer;
