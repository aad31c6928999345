//! The recommendations service: a book catalog served over gRPC, with health, reflection,
//! metrics and graceful shutdown from `platform`.

pub mod catalog;
pub mod config;
pub mod grpc;
pub mod recommend;
pub mod server;

pub use config::Config;
pub use server::{App, StartupError};
