//! JSON log lines, one object a line: `timestamp`, `level`, `target`, the
//! event's fields (`message` among them), `service`, and the `trace_id` /
//! `span_id` of the event's span. Written straight into the formatting layer's
//! reused buffer, which leaves in one write: a general JSON layer (building
//! values, then serialising them) cost several times more per access line
//! (`benches/layers.rs`).

use opentelemetry::trace::TraceContextExt as _;
use std::{
    fmt::{self, Write as _},
    sync::{Arc, OnceLock},
};
use tracing::{
    Event, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// Formats events as JSON lines of one service.
pub(super) struct JsonLines {
    /// `"service":"…",`, escaped once.
    service: String,
    /// The dispatcher the layer is part of, where the span ids live: the
    /// formatter's own context sees no spans (the layer takes events only).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    pub(super) fn new(service: &str, dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        let mut escaped = String::new();
        let _ = string(&mut escaped, service);
        Self {
            service: format!("\"service\":{escaped}"),
            dispatch,
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", metadata.level())?;
        string(&mut writer, metadata.target())?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        write!(writer, ",{}", self.service)?;
        self.write_ids(&mut writer, event)?;
        writer.write_str("}\n")
    }
}

impl JsonLines {
    /// The ids of the event's own parent, else of the current span.
    fn write_ids(&self, writer: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return Ok(());
        };
        let current = dispatch.current_span();
        let Some(id) = event.parent().or_else(|| current.id()) else {
            return Ok(());
        };
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return Ok(());
        };
        let span = cx.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return Ok(());
        }
        write!(
            writer,
            ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
            ids.trace_id(),
            ids.span_id()
        )
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.writer.write_char(',')?;
                string(self.writer, field.name())?;
                self.writer.write_char(':')?;
                value(self.writer)
            })();
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| string(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities.
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            self.field(field, |w| w.write_str("null"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON string, quoted and escaped.
fn string(writer: &mut impl fmt::Write, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(&mut *writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given as JSON string contents.
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        let mut start = 0;
        for (at, byte) in value.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&value[start..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = at + 1;
        }
        self.0.write_str(&value[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        string(&mut out, value).unwrap();
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for value in [
            "plain",
            "a \"quote\"",
            "back\\slash",
            "line\nbreak\ttab\r",
            "\u{1}\u{8}\u{c}\u{1f}",
            "é ✓",
        ] {
            assert_eq!(
                escaped(value),
                serde_json::to_string(value).unwrap(),
                "{value:?}"
            );
        }
    }
}
