//! One observer per gRPC call, ended once: a span (SERVER, continuing the trace
//! the request metadata carries, or CLIENT, whose context goes out in it), the
//! go-grpc-prometheus metrics, one access line and, on the server, one line per
//! failed call: `warn` when the caller is at fault, `error` when the server is.
//! Spans follow the OpenTelemetry RPC conventions.

use super::{
    LayersError, Rpc, Side,
    call_end::{BoxError, Ending, OnEnd, code_name, is_server_fault},
    metrics::{Series, Vecs},
};
use crate::telemetry;
use http::{Request, Response};
use opentelemetry::trace::SpanKind;
use prometheus::Registry;
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::{Level, Span, field::Empty};

/// The targets `RUST_LOG` names the access and error lines by
/// (`platform::grpc::trace=warn` drops the access lines): they stay put.
const ACCESS_TARGET: &str = "platform::grpc::trace";
const ERROR_TARGET: &str = "platform::grpc::error_log";

/// What a call knows of its method, resolved by one lookup.
#[derive(Debug)]
struct Method {
    rpc: Rpc,
    /// `{service}/{method}`: the span name and the access line's `method`.
    name: String,
    series: Series,
}

/// Wraps services in [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    side: Side,
    methods: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    known: HashMap<String, Arc<Method>>,
    vecs: Vecs,
    /// Made on the first call to a path that is no known method.
    unknown: OnceLock<Arc<Method>>,
}

impl ObserveLayer {
    /// Registers the metrics of `side`, with every series of the methods of
    /// `descriptor_sets` at 0.
    pub fn register(
        side: Side,
        registry: &Registry,
        descriptor_sets: &[&[u8]],
    ) -> Result<Self, LayersError> {
        let rpcs = Rpc::all_in(descriptor_sets)?;
        let vecs = Vecs::register(side, registry)?;
        let known = rpcs
            .into_iter()
            .map(|rpc| (rpc.path(), Arc::new(method(&vecs, rpc))))
            .collect();
        let unknown = OnceLock::new();
        let methods = Arc::new(Table {
            known,
            vecs,
            unknown,
        });
        Ok(Self { side, methods })
    }

    /// The method at `path`, or the one [`Rpc::UNKNOWN`] stand-in.
    fn method(&self, path: &str) -> Arc<Method> {
        let table = &*self.methods;
        Arc::clone(table.known.get(path).unwrap_or_else(|| {
            table
                .unknown
                .get_or_init(|| Arc::new(method(&table.vecs, Rpc::unknown())))
        }))
    }
}

fn method(vecs: &Vecs, rpc: Rpc) -> Method {
    Method {
        name: rpc.to_string(),
        series: vecs.series(&rpc),
        rpc,
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// Observes each call of `S`.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body,
{
    type Response = Response<Ending<ResBody, Ended>>;
    type Error = BoxError;
    type Future = Ending<S::Future, Ended>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let side = self.layer.side;
        let path = request.uri().path();
        let method = self.layer.method(path);
        method.series.started.inc();
        // Only the access line may hold a raw path, and only an unknown one.
        let unknown_path = method.rpc.is_unknown().then(|| path.to_owned());
        let (remote, kind) = match side {
            Side::Server => (
                Some(telemetry::extract(request.headers())),
                SpanKind::Server,
            ),
            Side::Client => (None, SpanKind::Client),
        };
        let span = telemetry::call_span(remote, &method.name, kind, || span(side, &method));
        if side == Side::Client {
            telemetry::inject_trace(&span, request.headers_mut());
            telemetry::pass_request_id(request.headers_mut());
        }
        // Not entered here: the handler runs when the future is polled, in the span.
        let inner = self.inner.call(request);
        let ended = Ended {
            span,
            side,
            method,
            unknown_path,
            started,
        };
        Ending::new(inner, Some(ended))
    }
}

fn span(side: Side, method: &Method) -> Span {
    let kind = match side {
        Side::Server => "server",
        Side::Client => "client",
    };
    let rpc = &method.rpc;
    // One span definition at two levels (a level must be a constant).
    macro_rules! call_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "gRPC call",
                otel.name = method.name.as_str(),
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
    // Only info spans and up are exported: not a probe's.
    if rpc.is_probe() {
        call_span!(Level::DEBUG)
    } else {
        call_span!(Level::INFO)
    }
}

/// Ends a call: its span's status, its metrics, its lines.
pub struct Ended {
    span: Span,
    side: Side,
    method: Arc<Method>,
    unknown_path: Option<String>,
    started: Instant,
}

impl OnEnd for Ended {
    fn on_end(self, status: &Status) {
        let elapsed = self.started.elapsed();
        let code = status.code();
        let series = &self.method.series;
        series.handled[code as usize].inc();
        series.seconds.observe(elapsed.as_secs_f64());

        // Every non-OK code fails a CLIENT span, only the server's faults a SERVER one.
        let server_fault = is_server_fault(code);
        let failed = match self.side {
            Side::Server => server_fault,
            Side::Client => code != Code::Ok,
        };
        if !self.span.is_disabled() {
            self.span.record("rpc.grpc.status_code", code as i32);
            if failed {
                self.span.record("otel.status_code", "ERROR");
                self.span
                    .record("otel.status_description", status.message());
            }
        }
        // The span as the lines' parent, not entered: the same ids, for less.
        let span = &self.span;
        let method = self.method.name.as_str();
        let code_name = code_name(code);
        if self.side == Side::Server && code != Code::Ok {
            // Not `message`: that is the line's own text.
            let status_message = status.message();
            if server_fault {
                tracing::error!(target: ERROR_TARGET, parent: span, method, code = code_name, status_message, "gRPC call failed");
            } else {
                tracing::warn!(target: ERROR_TARGET, parent: span, method, code = code_name, status_message, "gRPC call failed");
            }
        }
        let path = self.unknown_path.as_deref();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let message = match self.side {
            Side::Server => "gRPC call handled",
            Side::Client => "gRPC call finished",
        };
        if self.method.rpc.is_probe() {
            tracing::debug!(target: ACCESS_TARGET, parent: span, method, path, code = code_name, duration_ms, message);
        } else {
            tracing::info!(target: ACCESS_TARGET, parent: span, method, path, code = code_name, duration_ms, message);
        }
    }

    fn span(&self) -> Option<&Span> {
        Some(&self.span)
    }

    /// Nothing of a unary handler runs while its body is read.
    fn body_span(&self) -> Option<&Span> {
        (self.method.rpc.kind != "unary").then_some(&self.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_other_path_resolves_to_the_one_unknown_method() {
        let layer = ObserveLayer::register(Side::Server, &Registry::new(), &[]).unwrap();
        let first = layer.method("/shop.v1.Shop/Nope");
        for path in ["/shop.v1.Shop/Nope", "/", "/../etc/passwd"] {
            let method = layer.method(path);
            assert!(method.rpc.is_unknown());
            assert_eq!(method.name, "unknown/unknown");
            assert!(
                Arc::ptr_eq(&method, &first),
                "one stand-in, one set of series"
            );
        }
    }
}
