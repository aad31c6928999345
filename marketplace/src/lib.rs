//! The bookshop's web app: HTML pages of book recommendations fetched over gRPC.

pub mod config;
pub mod metrics;
pub mod pages;
pub mod recommendations;
pub mod server;

pub use config::Config;
pub use pages::{AppState, router};
pub use recommendations::{
    Book, Category, GrpcRecommendations, Recommendations, RecommendationsError,
};
pub use server::App;
