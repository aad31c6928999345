//! Spans kept in memory as they end, and [`Captured`]: this thread's spans and
//! JSON log lines while it lives.

use crate::logs::LogBuffer;
use opentelemetry::{Value, trace::SpanKind, trace::TracerProvider as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use std::sync::{Arc, Mutex};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::{
    Layer as _,
    filter::{LevelFilter, dynamic_filter_fn},
    layer::SubscriberExt as _,
};

/// Keeps ended spans in memory; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Spans {
    /// A provider that hands each span here as it ends: no flush to wait for.
    pub fn provider(&self) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_simple_exporter(self.clone())
            .build()
    }

    /// The spans that ended so far, in the order they ended.
    pub fn all(&self) -> Vec<SpanData> {
        self.0.lock().unwrap().clone()
    }

    /// The ended spans named `name`.
    pub fn named(&self, name: &str) -> Vec<SpanData> {
        self.all()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// The one ended SERVER span; fails the test unless there is exactly one.
    pub fn server_span(&self) -> SpanData {
        let mut servers: Vec<_> = self
            .all()
            .into_iter()
            .filter(|span| span.span_kind == SpanKind::Server)
            .collect();
        assert_eq!(servers.len(), 1, "{servers:#?}");
        servers.remove(0)
    }
}

/// The value of the attribute `key` of `span`.
pub fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|pair| pair.key.as_str() == key)
        .map(|pair| pair.value.clone())
}

/// Spans (info and up, as the services export) and JSON log lines of this
/// thread, while it lives. Run such tests on a current-thread runtime, so that
/// everything the code under test does happens on this thread.
pub struct Captured {
    pub spans: Spans,
    pub logs: LogBuffer,
    provider: SdkTracerProvider,
    _default: DefaultGuard,
}

/// Makes a silent global subscriber that is interested in every callsite
/// "sometimes". Without it, a callsite first reached on a thread with no
/// subscriber while a single test's one is alive gets tracing's cached
/// "never" (tracing-core asks only the current thread's subscriber then),
/// and a parallel test capturing spans sees none of that callsite's.
pub fn keep_callsites_open() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let silent = tracing_subscriber::registry().with(dynamic_filter_fn(|_, _| false));
        let _ = tracing::subscriber::set_global_default(silent);
    });
}

impl Captured {
    pub fn install() -> Self {
        keep_callsites_open();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let spans = Spans::default();
        let provider = spans.provider();
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("tests"))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(logs.clone()),
            );
        Self {
            spans,
            logs,
            provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        // Nothing to flush: the simple exporter has every ended span already.
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached_on_two_threads() {
        tracing::info_span!("reached on two threads").in_scope(|| {});
    }

    #[test]
    fn a_span_first_reached_on_a_thread_without_a_subscriber_is_still_captured() {
        let captured = Captured::install();
        std::thread::spawn(reached_on_two_threads).join().unwrap();
        reached_on_two_threads();
        assert_eq!(captured.spans.named("reached on two threads").len(), 1);
    }
}
