//! How span and event fields are written on text log lines: trace attributes (the dotted
//! names, `otel.*`, `http.*`, `gen_ai.*`, `rpc.*`, `llmgw.*`) are skipped. They are for the
//! trace, where they are structured; formatting them into every request span's log context
//! cost about a tenth of a request's CPU. What stays is what leads from a line to its request:
//! `request_id`, `trace_id`, `tenant`, `model` and the event's own fields.

use std::fmt::{self, Debug};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Writes `name=value` pairs, space-separated, the message first and bare, attributes skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut visitor = Visitor {
            writer: current.as_writer(),
            first,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Whether a field is a trace attribute rather than log context.
pub fn is_trace_attribute(name: &str) -> bool {
    name.contains('.')
}

struct Visitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn separate(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if self.result.is_err() || is_trace_attribute(field.name()) {
            return;
        }
        self.result = self.separate().and_then(|()| {
            if field.name() == "message" {
                write!(self.writer, "{value:?}")
            } else {
                write!(self.writer, "{}={value:?}", field.name())
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_attributes_stay_out_of_log_lines_and_context_stays_in() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(LogFields)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http_request",
                otel.kind = "server",
                "http.route" = "/v1/chat/completions",
                request_id = "req_1",
                "llmgw.tenant" = tracing::field::Empty,
                tenant = tracing::field::Empty
            );
            span.record("llmgw.tenant", "acme");
            span.record("tenant", "acme");
            span.in_scope(|| tracing::info!(status = 200, "chat completed"));
        });
        let line = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains("http_request{request_id=\"req_1\" tenant=\"acme\"}: "),
            "{line}"
        );
        assert!(line.contains("chat completed status=200"), "{line}");
        assert!(
            !line.contains("otel") && !line.contains("http.route"),
            "{line}"
        );
    }
}
