//! Span export that a down or slow collector cannot make noisy: one warning
//! when export starts failing, one line when it works again, and the count of
//! spans lost in between (requests never wait on any of it).

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

/// Wraps an exporter; failures are reported here, once, instead of by the
/// SDK once per batch.
#[derive(Debug)]
pub(super) struct Watched<E> {
    inner: E,
    failing: AtomicBool,
    dropped: AtomicU64,
}

impl<E> Watched<E> {
    pub(super) fn new(inner: E) -> Self {
        let (failing, dropped) = Default::default();
        Self {
            inner,
            failing,
            dropped,
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        match self.inner.export(batch).await {
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(dropped_spans = self.dropped(), "trace export works again");
            }
            Ok(()) => {}
            Err(err) => {
                self.dropped.fetch_add(spans, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%err, "trace export failing; dropping spans until the collector answers");
                }
            }
        }
        // An error would make the SDK log every failed batch.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.dropped() > 0 {
            let dropped_spans = self.dropped();
            tracing::warn!(
                dropped_spans,
                "spans were dropped while the collector did not answer"
            );
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;
    use std::sync::{Arc, Mutex};

    /// Fails while `down` is set.
    #[derive(Debug, Default)]
    struct Collector {
        down: Arc<AtomicBool>,
        received: Arc<Mutex<usize>>,
    }

    impl SpanExporter for Collector {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.down.load(Ordering::Relaxed) {
                return Err(OTelSdkError::InternalFailure("connection refused".into()));
            }
            *self.received.lock().unwrap() += batch.len();
            Ok(())
        }
    }

    fn spans(n: usize) -> Vec<SpanData> {
        use opentelemetry::trace::{SpanContext, SpanKind, Status};
        use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
        (0..n)
            .map(|_| SpanData {
                span_context: SpanContext::empty_context(),
                parent_span_id: opentelemetry::trace::SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: SpanKind::Internal,
                name: "work".into(),
                start_time: std::time::SystemTime::now(),
                end_time: std::time::SystemTime::now(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: Default::default(),
            })
            .collect()
    }

    #[tokio::test]
    async fn failures_are_counted_and_never_reach_the_sdk() {
        let collector = Collector::default();
        let down = Arc::clone(&collector.down);
        let received = Arc::clone(&collector.received);
        let watched = Watched::new(collector);

        down.store(true, Ordering::Relaxed);
        assert!(watched.export(spans(3)).await.is_ok());
        assert!(watched.export(spans(2)).await.is_ok());
        assert_eq!(watched.dropped(), 5);
        assert!(watched.failing.load(Ordering::Relaxed));

        down.store(false, Ordering::Relaxed);
        assert!(watched.export(spans(4)).await.is_ok());
        assert!(!watched.failing.load(Ordering::Relaxed));
        assert_eq!((watched.dropped(), *received.lock().unwrap()), (5, 4));
    }
}
