//! A panicking handler is counted, logged in its request's span and answered
//! with what the server chooses (nothing of the panic reaches the caller); the
//! server carries on. tower-http's `CatchPanic` catches.

use http::Response;
use prometheus::IntCounter;
use std::{any::Any, fmt};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

/// Turns a caught panic into `answer()`.
#[derive(Clone)]
pub struct OnPanic<A> {
    pub(crate) panics: IntCounter,
    /// The log line's message.
    pub(crate) message: &'static str,
    pub(crate) answer: A,
}

impl<A> OnPanic<A>
where
    Self: ResponseForPanic,
{
    pub(crate) fn layer(self) -> CatchPanicLayer<Self> {
        CatchPanicLayer::custom(self)
    }
}

impl<A> fmt::Debug for OnPanic<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnPanic").finish_non_exhaustive()
    }
}

impl<A: Fn() -> Response<B> + Clone, B> ResponseForPanic for OnPanic<A> {
    type ResponseBody = B;

    fn response_for_panic(&mut self, panic: Box<dyn Any + Send + 'static>) -> Response<B> {
        self.panics.inc();
        // `panic!` gives a `&str` or a `String`.
        let text = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        tracing::error!(panic = text, "{}", self.message);
        (self.answer)()
    }
}
