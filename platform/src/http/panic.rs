//! A panicking handler answers 500 with the page the service chooses (nothing of
//! the panic sent to the client), is counted in `http_server_panics_total` and
//! logged once, and the server carries on: the HTTP side of
//! the gRPC panic layer. tower-http's `CatchPanic` catches; this module says
//! what to answer.

use axum::{Router, response::Response};
use prometheus::IntCounter;
use std::{any::Any, fmt, sync::Arc};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// What a panicking request is answered with: the service's own error page.
/// Called inside the request's span, after the panic was caught.
pub type PanicPage = Arc<dyn Fn() -> Response + Send + Sync>;

/// Catches panics of every route of `router` (`Router::layer`: the fallback
/// too), answering each with `page()` forced to 500.
pub(super) fn catch_panics(router: Router, panics: IntCounter, page: PanicPage) -> Router {
    router.layer(CatchPanicLayer::custom(PageOnPanic { panics, page }))
}

/// Turns a caught panic into the service's 500 page.
#[derive(Clone)]
pub(super) struct PageOnPanic {
    panics: IntCounter,
    page: PanicPage,
}

impl fmt::Debug for PageOnPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageOnPanic").finish_non_exhaustive()
    }
}

impl ResponseForPanic for PageOnPanic {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, panic: Box<dyn Any + Send + 'static>) -> Response {
        self.panics.inc();
        let text = crate::panic_message(panic.as_ref());
        // Logged here, in the request's span; the client learns nothing of it.
        tracing::error!(panic = text, "an HTTP handler panicked");
        let mut response = (self.page)();
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    }
}
