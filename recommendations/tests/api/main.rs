//! The one integration-test binary: a real server on port 0, spoken to over gRPC and HTTP.

mod admin;
mod health_and_reflection;
mod help;
mod helpers;
mod limits;
mod properties;
mod recommend;
mod shutdown;
