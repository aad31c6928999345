//! An OTLP/gRPC trace receiver: the collector's end of what the services
//! export, in the test's (or `bench-tool`'s) own process. [`Receiver`] keeps
//! every span for a test to read; [`serve`] hands each export to a function
//! (`bench-tool otlp-sink` only counts the spans).

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

/// Receives trace exports on `listener` until the future is dropped, handing
/// the spans of each export to `received` before answering it.
pub async fn serve<F>(listener: TcpListener, received: F) -> Result<(), tonic::transport::Error>
where
    F: Fn(Vec<Span>) + Send + Sync + 'static,
{
    Server::builder()
        .add_service(TraceServiceServer::new(Service(received)))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// The OTLP trace service over a function of each export's spans.
struct Service<F>(F);

#[tonic::async_trait]
impl<F> TraceService for Service<F>
where
    F: Fn(Vec<Span>) + Send + Sync + 'static,
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect();
        (self.0)(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A receiver on a loopback port that keeps every span it is sent; clones
/// share them.
#[derive(Clone, Debug, Default)]
pub struct Receiver(Arc<Mutex<Vec<Span>>>);

impl Receiver {
    /// Starts receiving in a task of the current runtime, for as long as the
    /// runtime lives; returns the receiver and the endpoint to export to
    /// (`http://127.0.0.1:<port>`, an `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("a bound address"));
        let receiver = Self::default();
        let kept = receiver.clone();
        tokio::spawn(serve(listener, move |spans| {
            kept.0.lock().unwrap().extend(spans);
        }));
        (receiver, endpoint)
    }

    /// The spans received so far, in the order they came.
    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}
