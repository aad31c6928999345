//! The web pages: routes, handlers and their tera templates.

use crate::{
    Book, Category, Recommendations, RecommendationsError, StartupError, metrics::Metrics,
};
use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use platform::{
    http::{HttpServerMetrics, Layers, PanicPage},
    shutdown::InFlight,
    telemetry::TraceParent,
};
use serde::Serialize;
use std::{sync::Arc, time::Duration};
use tera::{Context, Tera};

/// How many books a page shows.
const BOOKS_PER_PAGE: u32 = 3;

/// Room for a rendered page (about 10 kB), so rendering it grows no buffer.
const PAGE_BYTES: usize = 16 * 1024;

/// Embedded, so the binary needs no files beside it. The `.html` names turn
/// tera's autoescaping on.
const TEMPLATES: [(&str, &str); 3] = [
    ("base.html", include_str!("../templates/base.html")),
    (
        "recommendations.html",
        include_str!("../templates/recommendations.html"),
    ),
    ("error.html", include_str!("../templates/error.html")),
];

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    recommendations: Arc<dyn Recommendations>,
    templates: Arc<Tera>,
    timeout: Duration,
    metrics: Metrics,
    /// Jaeger's UI, without a trailing slash: pages link to `{it}/trace/{trace_id}`.
    jaeger_ui: Option<Arc<str>>,
}

impl AppState {
    /// `timeout` bounds each page's wait for recommendations; the page metrics
    /// are registered in `registry`.
    pub fn new(
        recommendations: Arc<dyn Recommendations>,
        timeout: Duration,
        registry: &prometheus::Registry,
    ) -> Result<Self, StartupError> {
        Ok(Self {
            recommendations,
            templates: Arc::new(templates()?),
            timeout,
            metrics: Metrics::register(registry)?,
            jaeger_ui: None,
        })
    }

    /// Pages link to their trace in the Jaeger UI at `url`, when there is one.
    pub fn with_jaeger_ui(self, url: Option<String>) -> Self {
        Self {
            jaeger_ui: url.map(|url| url.trim_end_matches('/').into()),
            ..self
        }
    }

    /// Renders `template`; every page also gets `trace_id` (when tracing is on)
    /// and `trace_url` (when a Jaeger UI is configured and the trace is
    /// sampled, so that the link leads somewhere), for its footer.
    fn render(&self, status: StatusCode, template: &str, mut context: Context) -> Response {
        // The handler runs inside the request's SERVER span (platform::http).
        if let Some(ids) = TraceParent::of(&tracing::Span::current()) {
            let trace_id = ids.trace_id_hex();
            if let (Some(base), true) = (&self.jaeger_ui, ids.sampled) {
                context.insert("trace_url", &format!("{base}/trace/{trace_id}"));
            }
            context.insert("trace_id", &trace_id);
        }
        // Into bytes: `render` would check the whole page is UTF-8 (it is,
        // template and escaped values alike) to hand back a String.
        let mut html = Vec::with_capacity(PAGE_BYTES);
        match self.templates.render_to(template, &context, &mut html) {
            Ok(()) => (status, Html(html)).into_response(),
            Err(err) => {
                tracing::error!(%err, template, "cannot render page");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    fn error_page(&self, status: StatusCode, heading: &str, message: &str) -> Response {
        let mut context = Context::new();
        context.insert("heading", heading);
        context.insert("message", message);
        self.render(status, "error.html", context)
    }
}

#[derive(Serialize)]
struct NavLink {
    slug: &'static str,
    label: &'static str,
}

/// The page templates, compiled, with the navigation in their global context
/// (public for the bare-axum baseline of `cargo xtask bench`, which renders them too).
pub fn templates() -> Result<Tera, tera::Error> {
    let mut tera = Tera::new();
    tera.add_raw_templates(TEMPLATES)?;
    let nav: Vec<NavLink> = Category::ALL
        .into_iter()
        .map(|category| NavLink {
            slug: category.slug(),
            label: category.label(),
        })
        .collect();
    tera.global_context().insert("categories", &nav);
    Ok(tera)
}

/// The marketplace's routes with its middleware (see [`with_middleware`]).
pub fn router(
    state: AppState,
    http_metrics: HttpServerMetrics,
    max_concurrent_requests: usize,
    in_flight: InFlight,
) -> Router {
    with_middleware(
        pages(),
        state,
        http_metrics,
        max_concurrent_requests,
        in_flight,
    )
}

/// The pages, before any middleware: tests add routes here (a panicking one,
/// say), then wrap them with [`with_middleware`].
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(recommendations_page))
        .fallback(not_found)
}

/// Wraps `pages` in the marketplace's middleware (platform's, in the order of
/// docs/design.md, with the shop's security headers), each request traced,
/// logged and counted in `http_metrics` and `in_flight`, at most
/// `max_concurrent_requests` at once.
pub fn with_middleware(
    pages: Router<AppState>,
    state: AppState,
    http_metrics: HttpServerMetrics,
    max_concurrent_requests: usize,
    in_flight: InFlight,
) -> Router {
    // Nothing is loaded from elsewhere; the one stylesheet is inline.
    let csp = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    let page_state = state.clone();
    // The shop's error page; `error_page` falls back to a bare 500 if even the
    // template cannot be rendered.
    let panic_page: PanicPage = Arc::new(move || {
        page_state.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "This page could not be shown. Please try again in a moment.",
        )
    });
    let layers = Layers {
        metrics: http_metrics,
        max_concurrent_requests,
        panic_page,
        in_flight,
    };
    platform::http::with_layers(pages.with_state(state), layers, headers)
}

/// `GET /?category=…`: three books of the category, or a notice when
/// recommendations cannot answer in time.
async fn recommendations_page(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Some(category) = query.ok().and_then(|Query(pairs)| category_of(&pairs)) else {
        return state.error_page(
            StatusCode::BAD_REQUEST,
            "Unknown category",
            "Choose a category: mystery, science_fiction or self_help.",
        );
    };

    let mut context = Context::new();
    // The shelf shown, for the navigation to mark.
    context.insert("current", category.slug());
    context.insert(
        "heading",
        &format!("{} books you may like", category.label()),
    );
    // The timeout here also bounds a client that ignores its own deadline.
    let answer = tokio::time::timeout(
        state.timeout,
        state.recommendations.recommend(category, BOOKS_PER_PAGE),
    )
    .await
    .unwrap_or(Err(RecommendationsError::DeadlineExceeded));
    match answer {
        Ok(mut books) => {
            books.truncate(BOOKS_PER_PAGE as usize);
            context.insert("books", &books);
            context.insert("unavailable", &false);
        }
        Err(err) => {
            tracing::warn!(reason = err.reason(), error = %err, "showing the page without recommendations");
            state.metrics.count_fallback(&err);
            context.insert("books", &Vec::<Book>::new());
            context.insert("unavailable", &true);
        }
    }
    state.render(StatusCode::OK, "recommendations.html", context)
}

/// The category a query asks for: mystery when it names none, `None` when
/// `category` is repeated or not one we know. Other parameters (say, a
/// campaign tag) are ignored.
fn category_of(pairs: &[(String, String)]) -> Option<Category> {
    let mut values = pairs.iter().filter(|(key, _)| key == "category");
    match (values.next(), values.next()) {
        (None, _) => Some(Category::Mystery),
        (Some((_, slug)), None) => Category::from_slug(slug),
        (Some(_), Some(_)) => None,
    }
}

async fn not_found(State(state): State<AppState>) -> Response {
    state.error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page. The links above lead to the books.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_query_without_category_means_mystery() {
        assert_eq!(category_of(&[]), Some(Category::Mystery));
        assert_eq!(
            category_of(&pairs(&[("utm", "x")])),
            Some(Category::Mystery)
        );
    }

    #[test]
    fn a_repeated_category_is_rejected_even_when_valid() {
        let query = pairs(&[("category", "mystery"), ("category", "mystery")]);
        assert_eq!(category_of(&query), None);
    }

    #[test]
    fn the_embedded_templates_compile() {
        templates().unwrap();
    }
}
