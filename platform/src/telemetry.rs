//! Telemetry setup: log lines (JSON for machines, text for people) and
//! OpenTelemetry traces, exported over OTLP/gRPC when an endpoint is set.

mod export;
mod json;
mod propagation;
mod request_id;
mod sampling;
mod writer;

pub(crate) use propagation::extract;
pub use propagation::{TraceParent, inject_trace};
pub use request_id::{REQUEST_ID, pass_request_id, with_request_id};
pub(crate) use sampling::call_span;

use crate::config::{CommonArgs, LogFormat, Sampler, TraceArgs};
use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global, propagation::TextMapCompositePropagator};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use std::{
    io::IsTerminal,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tracing::{Dispatch, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, LevelFilter, filter_fn},
    fmt::MakeWriter,
    layer::{Identity, SubscriberExt},
    util::SubscriberInitExt,
};

/// Spans waiting for export; past this they are dropped rather than slowing
/// requests or growing memory.
const MAX_QUEUED_SPANS: usize = 2048;
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most time the final flush may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines waiting for the writer thread; past this, logging waits (a line
/// is never dropped). About 0.7 s of access lines at 12k calls/s.
const MAX_QUEUED_BYTES: usize = 2 << 20;

/// The log writer thread's guard: dropping it writes the queued lines.
static LOG_WRITER: Mutex<Option<writer::Guard>> = Mutex::new(None);

/// What must be flushed when the process ends: call [`Telemetry::shutdown`]
/// after serving stopped. Dropped without it, it still writes the queued lines.
#[must_use = "keep the guard and call shutdown() after serving ends"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global logger and tracer for `service` (its `service.name`
/// unless `OTEL_SERVICE_NAME` says otherwise). Call it inside the Tokio
/// runtime, which the OTLP exporter runs on.
pub fn init(service: &'static str, args: &CommonArgs) -> anyhow::Result<Telemetry> {
    let endpoint = args.traces.otel_exporter_otlp_endpoint.as_deref();
    let exporter = endpoint
        .map(|endpoint| {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))
        })
        .transpose()?;
    let stdout = batched_stdout().context("cannot start the log writer thread")?;
    let (subscriber, provider) = subscriber(service, args, stdout, exporter)?;
    if provider.is_some() {
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
    }
    subscriber.try_init()?;
    let otlp_endpoint = endpoint.unwrap_or("none");
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        otlp_endpoint,
        "telemetry ready"
    );
    Ok(Telemetry { provider })
}

/// The subscriber [`init`] installs, log lines to `writer` and sampled spans
/// to `exporter` in batches, with the tracer provider to shut down (`None`
/// when tracing is off). For benchmarks and tests of the whole stack.
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
    let (traces, exporting) = (&args.traces, exporter.is_some());
    let service_name = traces.otel_service_name.as_deref().unwrap_or(service);
    let provider =
        (!traces.otel_sdk_disabled).then(|| tracer_provider(service_name, traces, exporter));
    // Recorded calls' spans only (`sampling`; log lines are not copied into
    // span events), whatever RUST_LOG says. No locations, threads, module path
    // (`target`), busy/idle timings or context activation: each costs on
    // every span (`benches/layers.rs`), and docs/design.md promises none.
    let spans = provider.as_ref().map(|provider| {
        let dispatch = Arc::new(OnceLock::new());
        let exported = sampling::Exported::new(sampler(traces), exporting, Arc::clone(&dispatch));
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false);
        CaptureDispatch(dispatch)
            .and_then(otel)
            .with_filter(exported)
            .boxed()
    });
    // Boxed either way: an `Option` does not pass on the dispatcher.
    let spans = spans.unwrap_or_else(|| None::<Identity>.boxed());
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(service_name, args, writer)?)
        .with(spans);
    Ok((subscriber, provider))
}

/// Stdout through a writer thread (`writer`): a request's thread only queues
/// its line, and lines queued together leave in one `write`.
fn batched_stdout() -> std::io::Result<writer::Lines> {
    let (lines, guard) = writer::spawn(std::io::stdout(), MAX_QUEUED_BYTES)?;
    *LOG_WRITER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(guard);
    Ok(lines)
}

/// Writes the queued log lines and stops the writer thread: call it before
/// `std::process::exit`, which runs no destructors. Later lines are lost.
pub fn flush_logs() {
    drop(
        LOG_WRITER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(),
    );
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        flush_logs();
    }
}

impl Telemetry {
    /// Exports the queued spans, within a bound, then writes the queued lines.
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // It blocks until the exporter answers: off the async workers, which
        // the gRPC exporter needs.
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
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(args))
        .with_id_generator(sampling::DecidedIds);
    let Some(exporter) = exporter else {
        return builder.build();
    };
    let batches = BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUED_SPANS);
    let processor = BatchSpanProcessor::builder(export::Watched::new(exporter))
        .with_batch_config(batches.build())
        .build();
    builder.with_span_processor(processor).build()
}

fn sampler(args: &TraceArgs) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler::*;
    let ratio = args.otel_traces_sampler_arg;
    match args.otel_traces_sampler {
        Sampler::AlwaysOn => AlwaysOn,
        Sampler::AlwaysOff => AlwaysOff,
        Sampler::TraceIdRatio => TraceIdRatioBased(ratio),
        Sampler::ParentbasedAlwaysOn => ParentBased(Box::new(AlwaysOn)),
        Sampler::ParentbasedAlwaysOff => ParentBased(Box::new(AlwaysOff)),
        Sampler::ParentbasedTraceIdRatio => ParentBased(Box::new(TraceIdRatioBased(ratio))),
    }
}

/// Remembers the dispatcher this layer is part of.
struct CaptureDispatch(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// Log lines: JSON with `service`, `trace_id` and `span_id`, or plain text
/// (coloured only at a terminal).
fn log_layer<W>(
    service_name: &str,
    args: &CommonArgs,
    writer: W,
) -> anyhow::Result<Box<dyn Layer<Registry> + Send + Sync>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder().parse(&args.rust_log)?;
    let terminal = std::io::stdout().is_terminal();
    let format = args.log_format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    if format == LogFormat::Text {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(writer);
        return Ok(layer.with_filter(filter).boxed());
    }
    // The span ids live in the OpenTelemetry layer, reached through the
    // dispatcher, captured when built (`get_default` is unusable while an
    // event is dispatched).
    let dispatcher = Arc::new(OnceLock::<WeakDispatch>::new());
    let json = tracing_subscriber::fmt::layer()
        .event_format(json::JsonLines::new(service_name, Arc::clone(&dispatcher)))
        .with_writer(writer);
    // Events only: lines print no span fields, so formatting them is saved (and
    // RUST_LOG's `[span]=level` directives match nothing). The hint keeps
    // RUST_LOG's level the global maximum, or every trace! of h2, hyper and
    // tonic would cost a filter check.
    let events = filter_fn(|metadata| metadata.is_event()).with_max_level_hint(LevelFilter::TRACE);
    let layer = CaptureDispatch(dispatcher).and_then(json);
    Ok(layer.with_filter(filter.and(events)).boxed())
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
