//! A span per gRPC call and one access line when it ends: a SERVER span continuing
//! the trace context the request metadata carries, or a CLIENT span whose context
//! goes out in the request metadata. Names and attributes follow the OpenTelemetry
//! RPC conventions (`{service}/{method}`, `rpc.system`, `rpc.grpc.status_code`).

use super::{
    Methods, Rpc, Side,
    status::{BoxError, EndBody, EndFuture, OnEnd, code_name, is_server_fault},
};
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::{Level, Span, field::Empty};

/// Wraps services in [`Trace`].
#[derive(Debug, Clone)]
pub struct TraceLayer {
    side: Side,
    methods: Methods,
}

impl TraceLayer {
    /// Spans of `side`, named after `methods` (any other path is `unknown/unknown`).
    pub fn new(side: Side, methods: Methods) -> Self {
        Self { side, methods }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            side: self.side,
            methods: self.methods.clone(),
        }
    }
}

/// Runs each call of `S` in a span and logs one access line when it ends.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    side: Side,
    methods: Methods,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<EndBody<ResBody, Ended>>;
    type Error = BoxError;
    type Future = EndFuture<S::Future, Ended>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path();
        let rpc = self.methods.resolve(path);
        // The raw path goes to the access line only, and only when it names no
        // known method: logs may hold it, span names and metrics may not.
        let unknown_path = rpc.is_unknown().then(|| path.to_owned());
        let span = match self.side {
            Side::Server => server_span(&rpc, &request),
            Side::Client => client_span(&rpc, &mut request),
        };
        // Entered for `call` too: some services start their work there.
        let inner = span.in_scope(|| self.inner.call(request));
        let ended = Ended {
            span,
            side: self.side,
            rpc,
            unknown_path,
            started,
        };
        EndFuture::new(inner, ended)
    }
}

fn span(side: Side, rpc: &Rpc) -> Span {
    let kind = match side {
        Side::Server => "server",
        Side::Client => "client",
    };
    // Levels must be constants: one span definition, at two levels.
    macro_rules! call_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "gRPC call",
                otel.name = %rpc,
                otel.kind = kind,
                otel.status_code = Empty,
                otel.status_description = Empty,
                rpc.system = "grpc",
                rpc.service = rpc.service.as_str(),
                rpc.method = rpc.method.as_str(),
                rpc.grpc.status_code = Empty,
            )
        };
    }
    // Traces export info spans and up: a probe's debug span is not exported.
    if rpc.is_probe() {
        call_span!(Level::DEBUG)
    } else {
        call_span!(Level::INFO)
    }
}

/// A SERVER span, the child of the trace context in the request's metadata (a root
/// when there is none).
fn server_span<B>(rpc: &Rpc, request: &Request<B>) -> Span {
    let span = span(Side::Server, rpc);
    crate::telemetry::continue_trace(&span, request.headers());
    span
}

/// A CLIENT span, the child of the current span, whose context the request carries
/// to the server (`traceparent`, `tracestate`, `baggage`).
fn client_span<B>(rpc: &Rpc, request: &mut Request<B>) -> Span {
    let span = span(Side::Client, rpc);
    crate::telemetry::inject_trace(&span, request.headers_mut());
    span
}

/// Ends a call's span: records its status and writes the access line.
pub struct Ended {
    span: Span,
    side: Side,
    rpc: Arc<Rpc>,
    unknown_path: Option<String>,
    started: Instant,
}

impl OnEnd for Ended {
    fn on_end(self, status: &Status) {
        let code = status.code();
        self.span.record("rpc.grpc.status_code", code as i32);
        // The conventions: every non-OK code fails a CLIENT span; a SERVER span
        // fails only for the codes that are the server's fault.
        let failed = match self.side {
            Side::Server => is_server_fault(code),
            Side::Client => code != Code::Ok,
        };
        if failed {
            self.span.record("otel.status_code", "ERROR");
            self.span
                .record("otel.status_description", status.message());
        }
        let _entered = self.span.enter();
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let method = self.rpc.to_string();
        let path = self.unknown_path.as_deref();
        let code = code_name(code);
        let message = match self.side {
            Side::Server => "gRPC call handled",
            Side::Client => "gRPC call finished",
        };
        if self.rpc.is_probe() {
            tracing::debug!(method, path, code, duration_ms, message);
        } else {
            tracing::info!(method, path, code, duration_ms, message);
        }
    }

    fn span(&self) -> Option<&Span> {
        Some(&self.span)
    }
}
