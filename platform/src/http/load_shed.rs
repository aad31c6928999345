//! A bound on the requests handled at once: past it, a request is answered at
//! once with 503 and `Retry-After` instead of queueing, so a burst cannot pile
//! up work (and memory, and upstream calls) that its clients gave up on.

use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tower::{
    ServiceBuilder,
    limit::GlobalConcurrencyLimitLayer,
    load_shed::{LoadShedLayer, error::Overloaded},
};

/// Seconds a shed client is asked to wait before trying again.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Lets at most `max` requests of `router` run at once and sheds the rest.
///
/// One limit for every route and the fallback together: `Router::layer` wraps
/// each route on its own, so the limit shares one semaphore across them
/// (`GlobalConcurrencyLimitLayer`, not `ConcurrencyLimitLayer`, whose every
/// route would get its own).
pub(super) fn limit_concurrency(router: Router, max: usize) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(shed))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max)),
    )
}

/// The answer to a request over the limit: short and cheap, no template.
async fn shed(err: BoxError) -> Response {
    if err.is::<Overloaded>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
            "The shop is busy; please try again in a moment.\n",
        )
            .into_response()
    } else {
        // The routes below are infallible: nothing else can fail here.
        tracing::error!(error = %err, "unexpected middleware error");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}
