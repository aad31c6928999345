//! W3C Trace Context across process boundaries: continuing a caller's trace from
//! request headers, sending ours out in them, and naming a span's trace in the
//! `traceparent` format.

use http::HeaderMap;
use opentelemetry::{
    Context, global,
    trace::{SpanId, TraceContextExt as _, TraceId},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::{fmt, ops::Range};
use tracing::Span;

/// The trace context `headers` carry (`traceparent`, `tracestate`, `baggage`),
/// for a SERVER span to continue ([`call_span`](super::call_span)); empty
/// without one: the span starts a trace.
pub(crate) fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Writes `span`'s trace context into `headers`, for the next process to continue.
pub fn inject_trace(span: &Span, headers: &mut HeaderMap) {
    let context = super::sampling::context(span);
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
    // New on every call: HTTP/2's header compression would add each one to its
    // table, where it evicts the entries that do repeat and is compared with
    // every later one. Sensitive values are sent as never-indexed literals.
    if let Some(traceparent) = headers.get_mut("traceparent") {
        traceparent.set_sensitive(true);
    }
}

/// The ids of one span, written as a W3C `traceparent` (level 2) value:
/// `00-<trace_id>-<span_id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// The ids of `span`, `None` when tracing is off (no OpenTelemetry layer).
    pub fn of(span: &Span) -> Option<Self> {
        Self::in_context(&super::sampling::context(span))
    }

    /// The ids of the span `context` holds, `None` when it holds none.
    pub(crate) fn in_context(context: &Context) -> Option<Self> {
        let otel = context.span();
        let ids = otel.span_context();
        ids.is_valid().then(|| Self {
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
            sampled: ids.is_sampled(),
        })
    }

    /// Where [`text`](Self::text) holds the trace id and the span id, in lowercase hex.
    pub(crate) const TRACE_ID: Range<usize> = 3..35;
    pub(crate) const SPAN_ID: Range<usize> = 36..52;

    /// The `traceparent` value's bytes, without `fmt`'s padding machinery
    /// (a page writes one in a header and its trace id in the footer, a log
    /// line both ids).
    pub(crate) fn text(&self) -> [u8; 55] {
        let mut text = *b"00-................................-................-00";
        hex(&self.trace_id.to_bytes(), &mut text[Self::TRACE_ID]);
        hex(&self.span_id.to_bytes(), &mut text[Self::SPAN_ID]);
        if self.sampled {
            text[54] = b'1';
        }
        text
    }

    /// The trace id in lowercase hex, as trace UIs show it.
    pub fn trace_id_hex(&self) -> String {
        String::from_utf8_lossy(&self.text()[Self::TRACE_ID]).into_owned()
    }
}

/// `bytes` in lowercase hex, into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_parent_is_written_in_the_w3c_format() {
        let mut parent = TraceParent {
            trace_id: TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            sampled: true,
        };
        assert_eq!(
            parent.to_string(),
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert_eq!(parent.trace_id_hex(), parent.trace_id.to_string());
        parent.sampled = false;
        assert!(parent.to_string().ends_with("-00"));
    }

    #[test]
    fn ids_are_lowercase_hex() {
        let mut out = [0; 8];
        hex(&[0x00, 0x0f, 0xa0, 0xff], &mut out);
        assert_eq!(&out, b"000fa0ff");
    }

    #[test]
    fn the_traceparent_sent_is_never_indexed_by_http2_compression() {
        let _captured = bookshop_test_support::spans::Captured::install();
        let span = tracing::info_span!("client call");
        let mut headers = HeaderMap::new();
        inject_trace(&span, &mut headers);
        let sent = &headers["traceparent"];
        assert_eq!(
            sent.to_str().unwrap(),
            TraceParent::of(&span).unwrap().to_string()
        );
        assert!(
            sent.is_sensitive(),
            "h2 sends sensitive values as never-indexed literals"
        );
    }

    #[test]
    fn a_span_without_an_opentelemetry_layer_has_no_trace_parent() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("untraced");
            assert_eq!(TraceParent::of(&span), None);
        });
    }
}
