//! JSON log lines: `timestamp`, `level`, `target`, the event's fields,
//! `service`, and the `trace_id` / `span_id` of the event's span. Written
//! straight into the fmt layer's reused buffer: a general JSON layer cost
//! several times more per access line (`benches/layers.rs`).

use super::TraceParent;
use std::{
    fmt::{self, Write as _},
    sync::{Arc, OnceLock},
    time::SystemTime,
};
use tracing::{
    Event, Level, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

pub(super) struct JsonLines {
    /// `,"service":"…"`, escaped once.
    service: String,
    /// Where the span ids live: the layer takes events only, so its own
    /// context sees no spans.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonLines {
    pub(super) fn new(service: &str, dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        let mut escaped = String::new();
        let _ = string(&mut escaped, service);
        Self {
            service: format!(",\"service\":{escaped}"),
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
        // RFC 3339 in UTC with microseconds, as tracing-subscriber writes it.
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        write!(writer, "{{\"timestamp\":\"{now}")?;
        writer.write_str(level_to_target(metadata.level()))?;
        Escaped(&mut writer).write_str(metadata.target())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(&self.service)?;
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
        // The current span only when the event names none: finding it costs.
        let Some(id) = event
            .parent()
            .cloned()
            .or_else(|| dispatch.current_span().id().cloned())
        else {
            return Ok(());
        };
        let context = super::sampling::context_of(&id, &dispatch);
        let Some(ids) = context.as_ref().and_then(TraceParent::in_context) else {
            return Ok(());
        };
        // Filled in place and written at once: each write costs a copy call.
        const TRACE: usize = ",\"trace_id\":\"".len();
        const SPAN: usize = TRACE + 32 + "\",\"span_id\":\"".len();
        let mut text =
            *b",\"trace_id\":\"--------------------------------\",\"span_id\":\"----------------\"";
        let parent = ids.text();
        text[TRACE..TRACE + 32].copy_from_slice(&parent[TraceParent::TRACE_ID]);
        text[SPAN..SPAN + 16].copy_from_slice(&parent[TraceParent::SPAN_ID]);
        writer.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// What follows the timestamp, up to the target's opening quote.
fn level_to_target(level: &Level) -> &'static str {
    macro_rules! between {
        ($level:literal) => {
            concat!("\",\"level\":\"", $level, "\",\"target\":\"")
        };
    }
    match *level {
        Level::ERROR => between!("ERROR"),
        Level::WARN => between!("WARN"),
        Level::INFO => between!("INFO"),
        Level::DEBUG => between!("DEBUG"),
        Level::TRACE => between!("TRACE"),
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
                self.writer.write_str(",\"")?;
                Escaped(&mut *self.writer).write_str(field.name())?;
                self.writer.write_str("\":")?;
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
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes them; JSON has no NaN or infinities.
        if value.is_finite() {
            self.field(field, |w| {
                w.write_str(ryu::Buffer::new().format_finite(value))
            });
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

/// The bytes a JSON string escapes (control characters, `"` and `\`): a
/// table, since every byte of every line is looked up.
const ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether none of eight bytes needs escaping, tested on all eight at once:
/// no byte below 0x20, none `"`, none `\` (the "has less" and "has zero byte"
/// tests of Bit Twiddling Hacks; exact, and UTF-8's high bytes pass).
fn no_escape(bytes: [u8; 8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let word = u64::from_ne_bytes(bytes);
    let below = word.wrapping_sub(ONES * 0x20) & !word;
    let [quote, backslash] = [b'"', b'\\'].map(|byte| word ^ (ONES * u64::from(byte)));
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    (below | zero(quote) | zero(backslash)) & HIGH == 0
}

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        // Eight bytes at a time up to the first that may need escaping.
        let plain = value.as_bytes().chunks_exact(8);
        let plain = plain.take_while(|chunk| <[u8; 8]>::try_from(*chunk).is_ok_and(no_escape));
        let mut start = 0;
        let skip = plain.count() * 8;
        for (at, &byte) in value.as_bytes().iter().enumerate().skip(skip) {
            if !ESCAPE[usize::from(byte)] {
                continue;
            }
            self.0.write_str(&value[start..at])?;
            match byte {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                0x08 => self.0.write_str("\\b")?,
                0x0c => self.0.write_str("\\f")?,
                _ => write!(self.0, "\\u{byte:04x}")?,
            }
            start = at + 1;
        }
        self.0.write_str(&value[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        string(&mut out, value).unwrap();
        out
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_with_microseconds() {
        // Expected values from Python's datetime.
        for (micros, expected) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
            (1_735_689_599_999_999, "2024-12-31T23:59:59.999999Z"),
            (1_796_611_113_123_456, "2026-12-07T02:38:33.123456Z"),
            (4_102_444_800_000_000, "2100-01-01T00:00:00.000000Z"),
        ] {
            let time = UNIX_EPOCH + Duration::from_micros(micros);
            let written = humantime::format_rfc3339_micros(time).to_string();
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn the_eight_byte_test_agrees_with_the_table_for_every_byte_at_every_place() {
        for byte in 0..=u8::MAX {
            for at in 0..8 {
                for filler in [b'a', 0x20, 0x7f, 0xff] {
                    let mut bytes = [filler; 8];
                    bytes[at] = byte;
                    let expected = !bytes.iter().any(|&b| ESCAPE[usize::from(b)]);
                    assert_eq!(no_escape(bytes), expected, "{bytes:?}");
                }
            }
        }
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
            // Across and at the eight-byte steps of the fast path.
            "recommendations.v1.Recommendations/Recommend",
            "12345678\"quoted after eight",
            "1234567\\ backslash at eight",
            "abcdefgh\u{1f}ijklmnop\n",
            "é ✓ é ✓ é ✓ \u{7f} \u{80}\u{ff} \t",
        ] {
            assert_eq!(
                escaped(value),
                serde_json::to_string(value).unwrap(),
                "{value:?}"
            );
        }
    }
}
