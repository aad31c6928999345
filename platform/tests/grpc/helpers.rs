//! What the tests share: `spawn_app()` (the dummy service behind the server layers
//! and a client through the client layers, each with its own registry), captured
//! log lines and finished spans, and a scrape of the registries.

use bookshop_test_support::dummy::v1::{
    EchoRequest, EchoResponse, FILE_DESCRIPTOR_SET,
    dummy_client::DummyClient,
    dummy_server::{self, DummyServer},
};
use bookshop_test_support::{WAIT, spans::Spans};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData},
};
use platform::{
    grpc::{ClientStack, client_layers},
    shutdown::InFlight,
};
use prometheus::Registry;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
};
use tokio::sync::mpsc;
use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, Endpoint, server::TcpIncoming},
};
use tower::Layer as _;
use tracing::{
    Dispatch, Event, Level, Subscriber, dispatcher::WeakDispatch, field::Field,
    subscriber::DefaultGuard,
};
use tracing_subscriber::{Layer, layer::SubscriberExt as _, registry::LookupSpan};

/// The dummy service's one method.
pub const ECHO: &str = "dummy.v1.Dummy/Echo";

/// The dummy service and a client of it, both instrumented, in this thread.
pub struct TestApp {
    pub client: DummyClient<ClientStack<Channel>>,
    /// The client layers over the channel, for calls the generated client cannot make.
    pub channel: ClientStack<Channel>,
    pub server_registry: Registry,
    pub client_registry: Registry,
    /// One message per `hang` request that reached its handler.
    pub arrived: mpsc::UnboundedReceiver<()>,
    /// One message per `hang` handler dropped (its call given up).
    pub abandoned: mpsc::UnboundedReceiver<()>,
    pub logs: Logs,
    pub spans: Spans,
    provider: SdkTracerProvider,
    _subscriber: DefaultGuard,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // No exporter to flush: the spans are in memory already.
        let _ = self.provider.shutdown();
    }
}

/// Serves the dummy service on 127.0.0.1:0 and connects a client to it. Logs and
/// spans of this thread are captured: run tests on a current-thread runtime, so the
/// server's tasks run here too.
pub async fn spawn_app() -> TestApp {
    bookshop_test_support::spans::keep_callsites_open();
    let logs = Logs::default();
    let spans = Spans::default();
    let provider = spans.provider();
    let subscriber = tracing_subscriber::registry()
        // Info and up, as platform::telemetry exports.
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("tests"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(Capture {
            logs: logs.clone(),
            dispatch: Arc::default(),
        });
    let guard = tracing::subscriber::set_default(subscriber);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let server_registry = Registry::new();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (abandoned_tx, abandoned) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let descriptors = [FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
    let (_, health) = tonic_health::server::health_reporter();
    // Longer than any test: the hanging calls are given up by their callers.
    let timeout = std::time::Duration::from_secs(600);
    let server = platform::grpc::server(
        &server_registry,
        &descriptors,
        &InFlight::default(),
        timeout,
    )
    .unwrap()
    .add_service(health)
    .add_service(DummyServer::new(Dummy {
        arrived: arrived_tx,
        abandoned: abandoned_tx,
    }));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));

    let client_registry = Registry::new();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let channel = client_layers(&client_registry, &descriptors)
        .unwrap()
        .layer(channel);
    TestApp {
        client: DummyClient::new(channel.clone()),
        channel,
        server_registry,
        client_registry,
        arrived,
        abandoned,
        logs,
        spans,
        provider,
        _subscriber: guard,
    }
}

impl TestApp {
    /// Calls Echo answering `code` (with `message` as the status message).
    pub async fn echo(&self, code: Code, message: &str) -> Result<EchoResponse, Status> {
        let request = EchoRequest {
            message: message.into(),
            code: code as i32,
            ..EchoRequest::default()
        };
        self.client
            .clone()
            .echo(request)
            .await
            .map(Response::into_inner)
    }
}

/// A request whose handler never answers.
pub fn hang() -> EchoRequest {
    EchoRequest {
        hang: true,
        ..EchoRequest::default()
    }
}

impl TestApp {
    /// Starts a call that never answers and drops it once its handler runs, as a
    /// caller that gives up does.
    pub async fn give_up_on_a_call(&mut self) {
        let mut client = self.client.clone();
        let mut call = Box::pin(client.echo(hang()));
        let arrived = tokio::time::timeout(WAIT, async {
            tokio::select! {
                _ = &mut call => panic!("a hanging call answered"),
                _ = self.arrived.recv() => {}
            }
        });
        arrived
            .await
            .expect("the hanging call reaches its handler in time");
        drop(call);
    }

    /// Waits, within [`WAIT`], until a `hang` handler was dropped.
    pub async fn wait_until_abandoned(&mut self) {
        tokio::time::timeout(WAIT, self.abandoned.recv())
            .await
            .expect("the handler is dropped in time")
            .expect("the server is still up");
    }
}

/// Requests whose answer the handler makes up from its fields.
struct Dummy {
    arrived: mpsc::UnboundedSender<()>,
    abandoned: mpsc::UnboundedSender<()>,
}

#[tonic::async_trait]
impl dummy_server::Dummy for Dummy {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let request = request.into_inner();
        if request.panic {
            panic!("the dummy panics: {}", request.message);
        }
        if request.hang {
            let _signal = SignalOnDrop(self.abandoned.clone());
            let _ = self.arrived.send(());
            std::future::pending::<()>().await;
        }
        match Code::from_i32(request.code) {
            Code::Ok => Ok(Response::new(EchoResponse {
                message: request.message,
                traceparent,
            })),
            code => Err(Status::new(code, request.message)),
        }
    }
}

/// Sends when dropped: the handler's future was dropped, its call given up.
struct SignalOnDrop(mpsc::UnboundedSender<()>);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// The labels of the dummy's Echo method, plus `extra`.
pub fn echo_labels<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("grpc_type", "unary"),
        ("grpc_service", "dummy.v1.Dummy"),
        ("grpc_method", "Echo"),
    ];
    labels.extend_from_slice(extra);
    labels
}

/// One captured log line.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: Level,
    /// Every field, `message` included, as text.
    pub fields: BTreeMap<String, String>,
    /// The OpenTelemetry ids of the span the line was logged in.
    pub ids: Option<(TraceId, SpanId)>,
}

impl LogLine {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The log lines of this thread.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<LogLine>>>);

impl Logs {
    /// The lines whose message is `message`.
    pub fn with_message(&self, message: &str) -> Vec<LogLine> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.field("message") == Some(message))
            .cloned()
            .collect()
    }
}

/// Records events with their span's OpenTelemetry ids, as the JSON log layer does.
struct Capture {
    logs: Logs,
    /// The ids live in the OpenTelemetry layer, reached through the dispatcher.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, context: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ids = context.event_span(event).and_then(|span| {
            let dispatch = self.dispatch.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let ids = cx.span().span_context().clone();
            ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
        });
        self.logs.0.lock().unwrap().push(LogLine {
            level: *event.metadata().level(),
            fields: fields.0,
            ids,
        });
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The value of the attribute `key` of `span`, as text.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| attribute.value.to_string())
}
