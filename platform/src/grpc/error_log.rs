//! One log line per failed gRPC call, with its code and message: `warn` when the
//! caller is at fault (INVALID_ARGUMENT, NOT_FOUND, CANCELLED…), `error` when the
//! server is (INTERNAL, UNKNOWN, UNAVAILABLE, DATA_LOSS…). Inside the trace layer,
//! so the line carries the call's trace id.

use super::{
    Methods, Rpc,
    status::{BoxError, EndBody, EndFuture, OnEnd, code_name, is_server_fault},
};
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// Wraps services in [`ErrorLog`].
#[derive(Debug, Clone)]
pub struct ErrorLogLayer {
    methods: Methods,
}

impl ErrorLogLayer {
    /// Names the failed calls after `methods` (any other path is `unknown/unknown`).
    pub fn new(methods: Methods) -> Self {
        Self { methods }
    }
}

impl<S> Layer<S> for ErrorLogLayer {
    type Service = ErrorLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorLog {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// Logs each call of `S` that ends with a status other than OK, once.
#[derive(Debug, Clone)]
pub struct ErrorLog<S> {
    inner: S,
    methods: Methods,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<EndBody<ResBody, Failed>>;
    type Error = BoxError;
    type Future = EndFuture<S::Future, Failed>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let failed = Failed {
            rpc: self.methods.resolve(request.uri().path()),
        };
        EndFuture::new(self.inner.call(request), failed)
    }
}

/// Logs a call's status unless it is OK.
pub struct Failed {
    rpc: Arc<Rpc>,
}

impl OnEnd for Failed {
    fn on_end(self, status: &Status) {
        let code = status.code();
        if code == Code::Ok {
            return;
        }
        let method = self.rpc.to_string();
        // Not `message`: that is the log line's own text.
        let status_message = status.message();
        if is_server_fault(code) {
            tracing::error!(
                method,
                code = code_name(code),
                status_message,
                "gRPC call failed"
            );
        } else {
            tracing::warn!(
                method,
                code = code_name(code),
                status_message,
                "gRPC call failed"
            );
        }
    }
}
