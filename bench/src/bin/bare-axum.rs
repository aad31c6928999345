//! The `GET /` baseline: a bare axum handler rendering the marketplace's own
//! templates, from a fixed list of books, or (with `--upstream`) from a plain
//! tonic client's Recommend call: no middleware, no telemetry, no logs, no
//! timeouts or limits.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use marketplace::{Book, Category};
use recommendations_proto::v1::{
    BookCategory, RecommendationRequest, recommendations_client::RecommendationsClient,
};
use std::sync::Arc;
use tera::{Context, Tera};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    /// Loopback port; 0 picks a free one (announced on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// A Recommend server (http://host:port) to ask for the books; a fixed
    /// list otherwise.
    #[arg(long)]
    upstream: Option<String>,
}

#[derive(Clone)]
struct Bare {
    templates: Arc<Tera>,
    upstream: Option<RecommendationsClient<Channel>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = match args.upstream {
        Some(uri) => Some(RecommendationsClient::new(
            Endpoint::from_shared(uri)?.connect_lazy(),
        )),
        None => None,
    };
    let state = Bare {
        templates: Arc::new(marketplace::pages::templates()?),
        upstream,
    };
    let app = Router::new().route("/", get(page)).with_state(state);
    let (listener, _) = bench::listen("http_addr", args.port).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn page(State(bare): State<Bare>) -> Response {
    let books: Vec<Book> = match bare.upstream {
        None => FIXED
            .iter()
            .map(|&(id, title)| Book {
                id,
                title: title.to_owned(),
            })
            .collect(),
        Some(mut client) => {
            let request = RecommendationRequest {
                user_id: 1,
                category: BookCategory::Mystery.into(),
                max_results: 3,
            };
            match client.recommend(request).await {
                Ok(answer) => answer
                    .into_inner()
                    .recommendations
                    .into_iter()
                    .map(|book| Book {
                        id: book.id,
                        title: book.title,
                    })
                    .collect(),
                Err(status) => {
                    return (StatusCode::BAD_GATEWAY, status.to_string()).into_response();
                }
            }
        }
    };
    // The context the marketplace's page gets, minus the trace footer.
    let mut context = Context::new();
    let category = Category::Mystery;
    context.insert("current", category.slug());
    context.insert(
        "heading",
        &format!("{} books you may like", category.label()),
    );
    context.insert("books", &books);
    context.insert("unavailable", &false);
    match bare.templates.render("recommendations.html", &context) {
        Ok(html) => Html(html).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Three mystery books of the embedded catalog.
const FIXED: [(i32, &str); 3] = [
    (1, "The Maltese Falcon"),
    (2, "Murder on the Orient Express"),
    (3, "The Hound of the Baskervilles"),
];
