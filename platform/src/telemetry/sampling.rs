//! The sampling decision, made before a call's span exists. `tracing-opentelemetry`
//! builds an OpenTelemetry span for every span it sees, sampled or not (its
//! attributes, its ids, its end), so an unsampled call's span is kept from it
//! and carries only what the call needs of its trace: a span context (the ids,
//! for log lines, `traceresponse` and the next hop's `traceparent`) in its
//! parent's context (`tracestate`, baggage). So is a sampled one when no
//! exporter is set: nothing would read its span. The configured sampler decides as
//! the SDK would, on the same trace id: a sampled root's is handed to the SDK,
//! which then decides the same way. Spans made inside a call (not by a call
//! observer) follow it: inside an unsampled one they are not exported either,
//! and their lines carry the call's ids.

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId},
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _,
};
use std::{
    cell::Cell,
    sync::{Arc, OnceLock},
};
use tracing::{
    Dispatch, Level, Metadata, Span, Subscriber, dispatcher::WeakDispatch, span,
    subscriber::Interest,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    Registry,
    layer::{Context as Layers, Filter},
    registry::LookupSpan,
};

/// What a call observer's span is: recorded (the OpenTelemetry layer has it),
/// or not, with its own span context in its parent's context.
#[derive(Debug)]
enum Call {
    Recorded,
    Unrecorded(Context),
}

thread_local! {
    /// While a call's span is made: whether it is recorded.
    static MAKING: Cell<Option<bool>> = const { Cell::new(None) };
    /// A sampled root's trace id, for the SDK to give it.
    static DECIDED_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The filter of the OpenTelemetry layer: spans at `info` and up, none made
/// inside an unrecorded call. It holds the sampler calls are decided by.
pub(super) struct Exported {
    sampler: Sampler,
    /// Whether an exporter is set: without one, no call is recorded.
    exporting: bool,
    /// The dispatcher the layers are part of (`CaptureDispatch`): a filter's
    /// own context hides the spans it filtered out, the unrecorded ones.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl Exported {
    pub(super) fn new(
        sampler: Sampler,
        exporting: bool,
        dispatch: Arc<OnceLock<WeakDispatch>>,
    ) -> Self {
        Self {
            sampler,
            exporting,
            dispatch,
        }
    }

    /// The trace id when recorded, else the unrecorded span's context.
    fn decide(&self, parent: &Context, name: &str, kind: &SpanKind) -> Result<TraceId, Context> {
        let parent_span = parent.span();
        let parent_ids = parent_span.span_context();
        let trace_id = match parent_ids.is_valid() {
            true => parent_ids.trace_id(),
            false => RandomIdGenerator::default().new_trace_id(),
        };
        let result = self
            .sampler
            .should_sample(Some(parent), trace_id, name, kind, &[], &[]);
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        if sampled && self.exporting {
            return Ok(trace_id);
        }
        // As the SDK makes a span it does not record; the next hop may record it.
        let span_id = RandomIdGenerator::default().new_span_id();
        let flags = match sampled {
            true => TraceFlags::SAMPLED,
            false => TraceFlags::default(),
        };
        let ids = SpanContext::new(trace_id, span_id, flags, false, result.trace_state);
        Err(parent.with_remote_span_context(ids))
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for Exported {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Layers<'_, S>) -> bool {
        if !exportable(metadata) {
            return false;
        }
        MAKING.get().unwrap_or_else(|| {
            let (current, dispatch) = (cx.current_span(), self.dispatch.get());
            let dispatch = dispatch.and_then(WeakDispatch::upgrade);
            let inside = current.id().zip(dispatch.as_ref());
            inside.is_none_or(|(id, dispatch)| unrecorded(id, dispatch).is_none())
        })
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        match exportable(metadata) {
            true => Interest::sometimes(),
            false => Interest::never(),
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// Spans at `info` and up: only those are exported, whatever RUST_LOG says.
fn exportable(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && *metadata.level() <= Level::INFO
}

/// The SDK's ids: random, but a sampled root's trace id is the one decided on.
#[derive(Debug)]
pub(super) struct DecidedIds;

impl IdGenerator for DecidedIds {
    fn new_trace_id(&self) -> TraceId {
        DECIDED_TRACE_ID
            .take()
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        RandomIdGenerator::default().new_span_id()
    }
}

/// A call's span, made by `make`: the child of `remote` (the caller's context,
/// from the request's headers) or else of the current span, sampled or not as
/// the configured sampler decides.
pub(crate) fn call_span(
    remote: Option<Context>,
    name: &str,
    kind: SpanKind,
    make: impl FnOnce() -> Span,
) -> Span {
    let parent = remote.clone().unwrap_or_else(|| context(&Span::current()));
    // Nothing may be made in here: a span made inside `get_default` goes nowhere.
    let decided = tracing::dispatcher::get_default(|dispatch| {
        let exported = dispatch.downcast_ref::<Exported>()?;
        Some(exported.decide(&parent, name, &kind))
    });
    let Some(decided) = decided else {
        // Tracing off, or a subscriber of a test's: the OpenTelemetry layer decides.
        let span = make();
        if let Some(remote) = remote {
            let _ = span.set_parent(remote);
        }
        return span;
    };
    MAKING.set(Some(decided.is_ok()));
    let span = make();
    MAKING.set(None);
    let call = match decided {
        Ok(trace_id) => {
            if let Some(remote) = remote {
                let _ = span.set_parent(remote);
            }
            if !parent.span().span_context().is_valid() {
                // A root, started now, so that the SDK gives it the trace id decided on.
                DECIDED_TRACE_ID.set(Some(trace_id));
                let _ = span.context();
                DECIDED_TRACE_ID.set(None);
            }
            Call::Recorded
        }
        Err(unrecorded) => Call::Unrecorded(unrecorded),
    };
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        registry.span(id)?.extensions_mut().insert(call);
        Some(())
    });
    span
}

/// `span`'s OpenTelemetry context: its unrecorded call's, else the
/// OpenTelemetry layer's (empty without one).
pub(super) fn context(span: &Span) -> Context {
    let context = span.with_subscriber(|(id, dispatch)| context_of(id, dispatch));
    context.flatten().unwrap_or_default()
}

/// The OpenTelemetry context of the span `id`, as [`context`] (`None` for empty).
pub(super) fn context_of(id: &span::Id, dispatch: &Dispatch) -> Option<Context> {
    unrecorded(id, dispatch).or_else(|| tracing_opentelemetry::get_otel_context(id, dispatch))
}

/// The context of the unrecorded call the span `id` is part of, if it is: the
/// nearest call observer's span at or above it decides.
fn unrecorded(id: &span::Id, dispatch: &Dispatch) -> Option<Context> {
    let registry = dispatch.downcast_ref::<Registry>()?;
    for span in registry.span(id)?.scope() {
        match span.extensions().get::<Call>() {
            Some(Call::Unrecorded(context)) => return Some(context.clone()),
            Some(Call::Recorded) => return None,
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{CommonArgs, LogFormat, Sampler as Setting, TraceArgs},
        telemetry::{TraceParent, extract, inject_trace, subscriber},
    };
    use bookshop_test_support::{logs::LogBuffer, spans::Spans};
    use http::HeaderMap;
    use opentelemetry::global;
    use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};

    /// Runs `f` under the services' own subscriber with `sampler`: the spans
    /// exported and the log lines written.
    fn traced(
        sampler: Setting,
        ratio: f64,
        f: impl FnOnce(),
    ) -> (Vec<opentelemetry_sdk::trace::SpanData>, LogBuffer) {
        let spans = Spans::default();
        let logs = run(sampler, ratio, Some(spans.clone()), f);
        (spans.all(), logs)
    }

    /// Runs `f` under the services' own subscriber with `sampler`, its spans
    /// (if any) flushed to `exporter`: the log lines written.
    fn run(sampler: Setting, ratio: f64, exporter: Option<Spans>, f: impl FnOnce()) -> LogBuffer {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let args = CommonArgs {
            log_format: Some(LogFormat::Json),
            traces: TraceArgs {
                otel_traces_sampler: sampler,
                otel_traces_sampler_arg: ratio,
                ..TraceArgs::default()
            },
            ..CommonArgs::default()
        };
        let logs = LogBuffer::default();
        let (subscriber, provider) = subscriber("svc", &args, logs.clone(), exporter).unwrap();
        tracing::subscriber::with_default(subscriber, f);
        let provider: SdkTracerProvider = provider.expect("tracing on");
        provider.force_flush().unwrap();
        logs
    }

    fn server_span(headers: &HeaderMap) -> Span {
        call_span(Some(extract(headers)), "call", SpanKind::Server, || {
            tracing::info_span!("call")
        })
    }

    fn client_span() -> Span {
        call_span(None, "client", SpanKind::Client, || {
            tracing::info_span!("client")
        })
    }

    /// A caller's request headers, with its `traceparent`.
    fn caller(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers
    }

    const UNSAMPLED_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    #[test]
    fn an_unsampled_call_is_not_exported_but_has_ids_for_its_lines_and_next_hop() {
        let headers = caller(UNSAMPLED_PARENT);
        let mut sent = HeaderMap::new();
        let (mut server, mut client) = (None, None);
        let (exported, logs) = traced(Setting::ParentbasedAlwaysOn, 1.0, || {
            let span = server_span(&headers);
            server = TraceParent::of(&span);
            // Kept from the OpenTelemetry layer: it built no span of its own.
            let built = span.with_subscriber(|(id, dispatch)| {
                tracing_opentelemetry::get_otel_context(id, dispatch)
            });
            assert!(built.flatten().is_none(), "tracing-opentelemetry saw it");
            tracing::info!(parent: &span, "in the call");
            let _entered = span.enter();
            let call = client_span();
            client = TraceParent::of(&call);
            inject_trace(&call, &mut sent);
        });
        assert!(exported.is_empty(), "{exported:#?}");
        let (server, client) = (server.expect("ids"), client.expect("ids"));
        assert_eq!(
            server.trace_id.to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_ne!(server.span_id.to_string(), "b7ad6b7169203331");
        assert!(!server.sampled);
        assert_eq!(client.trace_id, server.trace_id);
        assert_ne!(client.span_id, server.span_id);
        assert_eq!(sent["traceparent"], client.to_string().as_str());
        let line = &logs.with_message("in the call")[0];
        assert_eq!(line["trace_id"], server.trace_id.to_string());
        assert_eq!(line["span_id"], server.span_id.to_string());
    }

    #[test]
    fn without_an_exporter_a_sampled_call_is_not_recorded_but_keeps_its_ids_and_flag() {
        let (mut server, mut client, mut sent) = (None, None, HeaderMap::new());
        let logs = run(Setting::ParentbasedAlwaysOn, 1.0, None, || {
            let span = server_span(&HeaderMap::new());
            server = TraceParent::of(&span);
            let built = span.with_subscriber(|(id, dispatch)| {
                tracing_opentelemetry::get_otel_context(id, dispatch)
            });
            assert!(
                built.flatten().is_none(),
                "tracing-opentelemetry recorded it"
            );
            tracing::info!(parent: &span, "in the call");
            let _entered = span.enter();
            let call = client_span();
            client = TraceParent::of(&call);
            inject_trace(&call, &mut sent);
        });
        let (server, client) = (server.expect("ids"), client.expect("ids"));
        assert!(server.sampled, "the sampler's decision, for the next hop");
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(sent["traceparent"], client.to_string().as_str());
        assert!(client.sampled);
        let line = &logs.with_message("in the call")[0];
        assert_eq!(line["trace_id"], server.trace_id.to_string());
        assert_eq!(line["span_id"], server.span_id.to_string());
    }

    #[test]
    fn a_span_made_inside_an_unsampled_call_is_not_exported_and_its_lines_carry_the_calls_ids() {
        let headers = caller(UNSAMPLED_PARENT);
        let mut call = None;
        let (exported, logs) = traced(Setting::ParentbasedAlwaysOn, 1.0, || {
            let span = server_span(&headers);
            call = TraceParent::of(&span);
            let _entered = span.enter();
            let inner = tracing::info_span!("inner");
            let _inner = inner.enter();
            tracing::info!("in the inner span");
        });
        assert!(exported.is_empty(), "{exported:#?}");
        let call = call.expect("ids");
        let line = &logs.with_message("in the inner span")[0];
        assert_eq!(line["trace_id"], call.trace_id.to_string());
        assert_eq!(line["span_id"], call.span_id.to_string());
    }

    #[test]
    fn a_sampled_call_and_its_client_calls_are_exported_in_one_trace() {
        let headers = caller(&UNSAMPLED_PARENT.replace("-00", "-01"));
        let (exported, _) = traced(Setting::ParentbasedTraceIdRatio, 0.0, || {
            let span = server_span(&headers);
            let _entered = span.enter();
            drop(client_span());
        });
        assert_eq!(exported.len(), 2, "{exported:#?}");
        let trace_ids: Vec<String> = exported
            .iter()
            .map(|span| span.span_context.trace_id().to_string())
            .collect();
        assert_eq!(trace_ids, ["0af7651916cd43dd8448eb211c80319c"; 2]);
        let (client, server) = (&exported[0], &exported[1]);
        assert_eq!(client.parent_span_id, server.span_context.span_id());
    }

    #[test]
    fn a_sampled_root_keeps_the_trace_id_it_was_sampled_on() {
        let (exported, _) = traced(Setting::TraceIdRatio, 0.5, || {
            for _ in 0..200 {
                drop(server_span(&HeaderMap::new()));
            }
        });
        // 100 expected; six standard deviations (about 7 each way) around it.
        assert!((58..=142).contains(&exported.len()), "{}", exported.len());
        // The SDK's own sampler, on the trace id each was exported with.
        let sampler = Sampler::TraceIdRatioBased(0.5);
        for span in &exported {
            let trace_id = span.span_context.trace_id();
            let decided =
                sampler.should_sample(None, trace_id, "call", &SpanKind::Server, &[], &[]);
            assert_eq!(
                decided.decision,
                SamplingDecision::RecordAndSample,
                "{trace_id}"
            );
        }
    }
}
