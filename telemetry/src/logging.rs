//! Log output: `RUST_LOG` (default `info`) decides what, `LOG_FORMAT` decides how.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::TelemetryError;
use crate::log_fields::LogFields;

/// Events, and of the spans only the request's root span: its id on every line of the
/// request is the context a log reader needs; the child spans are for traces.
fn log_context(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_event() || ROOT_SPANS.contains(&metadata.name())
}

/// Per-request root spans: the gateway's HTTP server span and the scheduler's call span.
pub const ROOT_SPANS: [&str; 2] = ["http_request", "scheduler_request"];

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `LOG_FORMAT` held something other than `text` or `json`.
#[derive(Debug, thiserror::Error)]
#[error("LOG_FORMAT must be `text` or `json`, got `{0}`")]
pub struct LogFormatError(String);

impl FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(LogFormatError(value.to_owned())),
        }
    }
}

impl LogFormat {
    /// Reads `LOG_FORMAT`; unset means text.
    pub fn from_env() -> Result<Self, LogFormatError> {
        std::env::var("LOG_FORMAT").unwrap_or_default().parse()
    }
}

/// Installs the subscriber made of [`layers`].
pub(crate) fn install(
    format: LogFormat,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<(), TelemetryError> {
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(layers(format, tracer, log_filter))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)
}

/// The log layer filtered by `log_filter` (`RUST_LOG`), and the trace layer (when a tracer is
/// given) with its own filter, so quieter logs do not remove spans from traces.
///
/// They go in a list, never as an `Option` layer: an absent `Option` layer declares interest
/// in every callsite, which made the registry build (and tear down) each of h2's and hyper's
/// trace-level spans — about 90 per request — only for every filter to drop them.
fn layers(
    format: LogFormat,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
    log_filter: EnvFilter,
) -> Vec<Box<dyn Layer<Registry> + Send + Sync>> {
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::with_capacity(2);
    if let Some(tracer) = tracer {
        let spans = EnvFilter::new(
            "info,llmgw_decisions=debug,h2=off,hyper=off,tonic=off,tower=off,reqwest=off,opentelemetry=off",
        );
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans)
                .boxed(),
        );
    }
    // Colour codes only for a person at a terminal, not for a log shipper to strip.
    let colours = std::io::stderr().is_terminal();
    layers.push(match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(LogFields)
            .with_ansi(colours)
            .with_writer(std::io::stderr)
            .with_filter(log_filter.and(filter_fn(log_context)))
            .boxed(),
        // Span fields are included, so `trace_id`/`span_id` recorded on request spans lead
        // from a log line to its trace.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter.and(filter_fn(log_context)))
            .boxed(),
    });
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_no_layer_wants_are_never_built() {
        let subscriber = tracing_subscriber::registry().with(layers(
            LogFormat::Text,
            None,
            EnvFilter::new("info"),
        ));
        tracing::subscriber::with_default(subscriber, || {
            assert!(
                tracing::trace_span!(target: "h2::proto", "pop_frame").is_disabled(),
                "a library's trace span at RUST_LOG=info"
            );
            assert!(
                tracing::info_span!("admission.wait").is_disabled(),
                "a trace-only child span without a tracer"
            );
            assert!(!tracing::info_span!("http_request").is_disabled());
        });
    }

    #[test]
    fn parses_known_formats_and_names_the_bad_one() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("TEXT".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "LOG_FORMAT must be `text` or `json`, got `yaml`"
        );
    }
}
