//! Telemetry setup: log lines (JSON for machines, text for people) and
//! OpenTelemetry traces, exported over OTLP/gRPC when an endpoint is set.

mod export;
mod json;
mod propagation;

pub use propagation::{TraceParent, continue_trace, inject_trace};

use crate::config::{CommonArgs, LogFormat, Sampler, TraceArgs};
use anyhow::Context as _;
use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use std::{
    io::{BufWriter, IsTerminal},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tracing::{Dispatch, Level, Subscriber, dispatcher::WeakDispatch};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// Spans waiting for export; past this they are dropped (and counted by the
/// SDK, which warns once) rather than slowing requests or growing memory.
const MAX_QUEUED_SPANS: usize = 2048;
/// One export attempt to a slow collector gives up after this.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most time the final flush may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines waiting for the writer thread; past this, logging waits for it
/// (a line is never dropped). About 0.7 s of lines at 12k calls/s.
const MAX_QUEUED_LINES: usize = 8192;
/// One `write` to stdout carries up to this many bytes of lines.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The log writer thread's guard: dropping it writes the queued lines.
static LOG_WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Holds what must be flushed when the process ends; call
/// [`Telemetry::shutdown`] after serving stopped, as the last step. Dropped
/// without it (a failed start), it still writes the queued log lines.
#[must_use = "keep the guard and call shutdown() after serving ends"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global logger and tracer for `service` (its `service.name`
/// unless `OTEL_SERVICE_NAME` says otherwise). Call it inside the Tokio
/// runtime: the OTLP exporter's gRPC channel runs on it.
///
/// Fails if the settings are invalid or a global logger is already installed.
pub fn init(service: &'static str, args: &CommonArgs) -> anyhow::Result<Telemetry> {
    let exporter = match &args.traces.otel_exporter_otlp_endpoint {
        Some(endpoint) => Some(
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?,
        ),
        None => None,
    };
    let (subscriber, provider) = subscriber(service, args, batched_stdout(), exporter)?;
    if provider.is_some() {
        global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
        );
    }
    subscriber.try_init()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        otlp_endpoint = args
            .traces
            .otel_exporter_otlp_endpoint
            .as_deref()
            .unwrap_or("none"),
        "telemetry ready"
    );
    Ok(Telemetry { provider })
}

/// The subscriber [`init`] installs, log lines to `writer` and sampled spans
/// to `exporter` (in batches, off the request's thread), with the tracer
/// provider to shut down; `None` when tracing is off. For benchmarks and
/// tests of the whole stack; services call [`init`].
pub fn subscriber<W, E>(
    service: &'static str,
    args: &CommonArgs,
    writer: W,
    exporter: Option<E>,
) -> anyhow::Result<(
    impl Subscriber + Send + Sync + 'static,
    Option<SdkTracerProvider>,
)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    let service_name = args
        .traces
        .otel_service_name
        .clone()
        .unwrap_or_else(|| service.to_owned());
    let provider = (!args.traces.otel_sdk_disabled)
        .then(|| tracer_provider(&service_name, &args.traces, exporter));
    // Spans go to OpenTelemetry whatever RUST_LOG says about log lines.
    // Without source locations, thread names and busy/idle timings: each
    // costs allocations or clock reads on every span (and every poll), for
    // the 90% of spans that are not even sampled too (`cargo xtask bench`).
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Nothing here reads OpenTelemetry's current context: the ids
            // come from the tracing spans, so entering one need not attach
            // the context as well.
            .with_context_activation(false)
            // Spans only: log lines are log lines, not span events that
            // every unsampled span would build too.
            .with_filter(
                filter_fn(|metadata| metadata.is_span() && *metadata.level() <= Level::INFO)
                    .with_max_level_hint(LevelFilter::INFO),
            )
    });
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(&service_name, args, writer)?)
        .with(traces);
    Ok((subscriber, provider))
}

/// Stdout through a writer thread: a request's thread only queues its line,
/// and lines queued together leave in one `write`, instead of a `write` (and,
/// on a pipe, a wake-up of the reader) per line on the request's thread.
fn batched_stdout() -> NonBlocking {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(MAX_QUEUED_LINES)
        .lossy(false)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(
            WRITE_BATCH_BYTES,
            std::io::stdout(),
        ));
    *LOG_WRITER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(guard);
    writer
}

/// Writes the log lines still queued and stops the writer thread; call it
/// before `std::process::exit`, which runs no destructors. Lines logged
/// after it are lost.
pub fn flush_logs() {
    let guard = LOG_WRITER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    drop(guard);
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        flush_logs();
    }
}

impl Telemetry {
    /// Exports the spans still queued, within a bound, stops the exporter,
    /// then writes the log lines still queued.
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The SDK's shutdown blocks until the exporter answers: keep it off the
        // async worker threads, which the gRPC exporter itself needs.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => tracing::info!("telemetry flushed"),
            Ok(Err(err)) => tracing::warn!(%err, "telemetry flush incomplete"),
            Err(err) => tracing::warn!(%err, "telemetry flush panicked"),
        }
    }
}

fn tracer_provider<E>(
    service_name: &str,
    args: &TraceArgs,
    exporter: Option<E>,
) -> SdkTracerProvider
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    // The workspace shares one version, so this crate's is the service's.
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(args));
    if let Some(exporter) = exporter {
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .build();
        builder = builder.with_span_processor(
            BatchSpanProcessor::builder(export::Watched::new(exporter))
                .with_batch_config(batches)
                .build(),
        );
    }
    builder.build()
}

fn sampler(args: &TraceArgs) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as Sdk;
    let ratio = args.otel_traces_sampler_arg;
    match args.otel_traces_sampler {
        Sampler::AlwaysOn => Sdk::AlwaysOn,
        Sampler::AlwaysOff => Sdk::AlwaysOff,
        Sampler::TraceIdRatio => Sdk::TraceIdRatioBased(ratio),
        Sampler::ParentbasedAlwaysOn => Sdk::ParentBased(Box::new(Sdk::AlwaysOn)),
        Sampler::ParentbasedAlwaysOff => Sdk::ParentBased(Box::new(Sdk::AlwaysOff)),
        Sampler::ParentbasedTraceIdRatio => {
            Sdk::ParentBased(Box::new(Sdk::TraceIdRatioBased(ratio)))
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Remembers the dispatcher this layer is part of.
struct CaptureDispatch(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// Log lines: JSON with `service`, `trace_id` and `span_id`, or plain text.
fn log_layer<W>(service_name: &str, args: &CommonArgs, writer: W) -> anyhow::Result<BoxedLayer>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder().parse(&args.rust_log)?;
    let format = args
        .log_format
        .unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            // Colours only for a person at a terminal, never into a file or pipe.
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => {
            // The span ids live in the OpenTelemetry layer, reached through
            // the dispatcher; `get_default` is unusable while an event is
            // being dispatched, so the dispatcher is captured when it is built.
            let dispatcher = Arc::new(OnceLock::<WeakDispatch>::new());
            let json = tracing_subscriber::fmt::layer()
                .event_format(json::JsonLines::new(service_name, Arc::clone(&dispatcher)))
                .with_writer(writer);
            // Lines carry no span fields, only the span's ids (read above from
            // the dispatcher): this layer needs no spans, and skipping them
            // saves formatting every span's fields on every call (`cargo
            // xtask bench`). So RUST_LOG's span directives (`[span]=level`)
            // have nothing to match in JSON lines. The hint keeps RUST_LOG's
            // level the global maximum: without it, `and` has none, and every
            // trace!/debug! of h2, hyper and tonic costs a filter check.
            let events =
                filter_fn(|metadata| metadata.is_event()).with_max_level_hint(LevelFilter::TRACE);
            CaptureDispatch(dispatcher)
                .and_then(json)
                .with_filter(filter.and(events))
                .boxed()
        }
    };
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookshop_test_support::logs::LogBuffer;

    fn json_args() -> CommonArgs {
        CommonArgs {
            log_format: Some(LogFormat::Json),
            ..CommonArgs::default()
        }
    }

    /// JSON lines into `buffer`, with an OpenTelemetry layer for the span ids.
    fn traced_json(buffer: &LogBuffer) -> (impl Subscriber + Send + Sync, SdkTracerProvider) {
        let provider = tracer_provider("svc", &TraceArgs::default(), None::<SpanExporter>);
        let subscriber = tracing_subscriber::registry()
            .with(log_layer("svc", &json_args(), buffer.clone()).unwrap())
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("svc")));
        (subscriber, provider)
    }

    #[test]
    fn json_lines_inside_a_span_carry_the_service_and_the_span_ids() {
        let buffer = LogBuffer::default();
        let (subscriber, _provider) = traced_json(&buffer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside");
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::warn!("inside");
        });

        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (outside, inside) = (&lines[0], &lines[1]);
        assert_eq!(outside["message"], "outside");
        assert_eq!(outside["answer"], 42);
        assert_eq!(outside["service"], "svc");
        assert_eq!(outside["level"], "INFO");
        assert!(outside["timestamp"].is_string() && outside["target"].is_string());
        assert!(outside.get("trace_id").is_none(), "{outside}");

        assert_eq!(inside["level"], "WARN");
        let trace_id = inside["trace_id"].as_str().expect("a trace id");
        let span_id = inside["span_id"].as_str().expect("a span id");
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
        assert_ne!(trace_id, "0".repeat(32));
    }

    #[test]
    fn json_lines_write_each_kind_of_field_as_json() {
        let buffer = LogBuffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(log_layer("svc", &json_args(), buffer.clone()).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            let text = "say \"hi\"\n";
            tracing::info!(small = 1e-7, whole = 1.0, nan = f64::NAN, count = 3u64, below = -2i64,
                yes = true, text, debug = ?Some(1), "fields");
        });
        let lines = buffer.json_lines();
        let line = &lines[0];
        assert_eq!(line["small"].as_f64(), Some(1e-7));
        // `1.0`, as serde_json writes it, not `1`: still a float when read back.
        assert!(line["whole"].is_f64(), "{line}");
        assert!(line["nan"].is_null(), "{line}");
        assert_eq!(line["count"].as_u64(), Some(3));
        assert_eq!(line["below"].as_i64(), Some(-2));
        assert_eq!(line["yes"], true);
        assert_eq!(line["text"], "say \"hi\"\n");
        assert_eq!(line["debug"], "Some(1)");
        assert_eq!(line["message"], "fields");
    }

    #[test]
    fn a_line_whose_parent_is_a_span_carries_that_spans_ids() {
        let buffer = LogBuffer::default();
        let (subscriber, _provider) = traced_json(&buffer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call");
            let ids = TraceParent::of(&span).expect("a traced span");
            tracing::info!(parent: &span, "not entered");
            let lines = buffer.json_lines();
            assert_eq!(lines[0]["trace_id"], ids.trace_id.to_string());
            assert_eq!(lines[0]["span_id"], ids.span_id.to_string());
        });
    }

    #[test]
    fn the_log_filter_applies_to_log_lines() {
        let buffer = LogBuffer::default();
        let args = CommonArgs {
            rust_log: "warn".into(),
            ..json_args()
        };
        let subscriber =
            tracing_subscriber::registry().with(log_layer("svc", &args, buffer.clone()).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("dropped");
            tracing::warn!("kept");
        });
        let lines = buffer.json_lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "kept");
    }

    #[test]
    fn the_log_level_bounds_what_macros_check_at_all() {
        // The most verbose level any layer wants is what `tracing`'s macros
        // compare against before anything else: a `trace!` in h2 must stop
        // there when RUST_LOG says warn.
        for format in [LogFormat::Json, LogFormat::Text] {
            let args = CommonArgs {
                rust_log: "warn".into(),
                log_format: Some(format),
                ..CommonArgs::default()
            };
            let layer = log_layer("svc", &args, LogBuffer::default()).unwrap();
            assert_eq!(
                layer.max_level_hint(),
                Some(LevelFilter::WARN),
                "{format:?}"
            );
        }
    }

    #[test]
    fn samplers_follow_the_specification_names() {
        let ratio = TraceArgs {
            otel_traces_sampler: Sampler::ParentbasedTraceIdRatio,
            otel_traces_sampler_arg: 0.25,
            ..TraceArgs::default()
        };
        assert_eq!(
            format!("{:?}", sampler(&ratio)),
            format!(
                "{:?}",
                opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                    opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.25)
                ))
            )
        );
    }
}
