//! The JSON log format: tracing-subscriber's JSON object for each event (its fields flattened
//! beside `timestamp`, `level`, `message`, `target`), with the fields of the spans the event
//! is in lifted to the top level too, so every line of a request carries `"request_id"` and
//! `jq 'select(.request_id == "…")'` finds them all.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object a line; see the module doc.
pub struct FlatJson(Format<Json>);

impl FlatJson {
    pub fn new() -> Self {
        FlatJson(
            Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        )
    }
}

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // Span fields are stored as JSON objects (the subscriber formats them with
        // `JsonFields`): their members go after the event's own, the outermost span first.
        let mut spans = String::new();
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            let extensions = span.extensions();
            let members = extensions.get::<FormattedFields<N>>().and_then(|f| {
                f.fields
                    .strip_prefix('{')?
                    .strip_suffix('}')
                    .map(str::to_owned)
            });
            if let Some(members) = members.filter(|m| !m.is_empty()) {
                spans.push(',');
                spans.push_str(&members);
            }
        }
        match line.trim_end().strip_suffix('}') {
            Some(object) if !spans.is_empty() => writeln!(writer, "{object}{spans}}}"),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A line inside a span carries the span's fields at the top level; one outside, its own.
    #[test]
    fn span_fields_are_lifted_to_the_top_level() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .event_format(FlatJson::new())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error_span!("request", request_id = "r-1").in_scope(|| {
                tracing::info!(status = 200, "answered");
            });
            tracing::info!("alone");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["request_id"], "r-1", "{text}");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["message"], "answered");
        assert!(lines[1].get("request_id").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "alone");
    }
}
