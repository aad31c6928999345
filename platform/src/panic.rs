//! A panicking handler is counted, logged in its request's span and answered
//! with what the server chooses (nothing of the panic reaches the caller); the
//! server carries on. tower-http's `CatchPanic` catches.

use http::Response;
use prometheus::IntCounter;
use std::{any::Any, fmt, sync::Arc};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// Turns a caught panic into `answer()`.
pub struct OnPanic<B> {
    pub(crate) panics: IntCounter,
    /// The log line's message.
    pub(crate) message: &'static str,
    pub(crate) answer: Arc<dyn Fn() -> Response<B> + Send + Sync>,
}

impl<B> OnPanic<B> {
    pub(crate) fn layer(self) -> CatchPanicLayer<Self> {
        CatchPanicLayer::custom(self)
    }
}

impl<B> Clone for OnPanic<B> {
    fn clone(&self) -> Self {
        let answer = Arc::clone(&self.answer);
        Self {
            panics: self.panics.clone(),
            message: self.message,
            answer,
        }
    }
}

impl<B> fmt::Debug for OnPanic<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnPanic").finish_non_exhaustive()
    }
}

impl<B> ResponseForPanic for OnPanic<B> {
    type ResponseBody = B;

    fn response_for_panic(&mut self, panic: Box<dyn Any + Send + 'static>) -> Response<B> {
        self.panics.inc();
        // `panic!` gives a `&str` or a `String`.
        let text = (panic.downcast_ref::<&str>().copied())
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        tracing::error!(panic = text, "{}", self.message);
        (self.answer)()
    }
}
