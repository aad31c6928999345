//! The bookshop's web app: HTML pages of book recommendations fetched over gRPC.

pub mod books;
pub mod config;
pub mod grpc_client;
pub mod metrics;
pub mod pages;
pub mod server;

pub use books::{Book, Category, Recommendations, RecommendationsError};
pub use config::Config;
pub use grpc_client::GrpcRecommendations;
pub use pages::{AppState, pages, router, with_middleware};
pub use server::{App, StartupError};
