//! Process-wide telemetry shared by the gateway and the scheduler: logs, OpenTelemetry traces
//! and W3C trace-context propagation.
//!
//! # Layout
//! - [`logging`]: `RUST_LOG` filtering and `LOG_FORMAT` (`text` | `json`) output.
//! - [`log_fields`]: text log lines without the trace attributes (cheaper, and readable).
//! - [`otel`]: the OTLP/gRPC trace exporter, configured only by the standard `OTEL_*`
//!   variables; with `OTEL_EXPORTER_OTLP_ENDPOINT` unset there is no exporter and no cost.
//! - [`propagation`]: `traceparent` in and out of HTTP headers and gRPC metadata, and the ids
//!   of a span for logs and response headers.
//! - [`runtime`]: the Tokio runtime sized by `*_WORKER_THREADS` (one = current-thread).
//! - [`signals`]: the stop signals every binary shuts down on, and config-file watching
//!   (SIGHUP or a changed file).
//!
//! [`init`] is the one call both binaries make; the returned [`TelemetryGuard`] flushes the
//! exporter when dropped, so `main` drops it last.

pub mod log_fields;
pub mod logging;
pub mod otel;
pub mod propagation;
pub mod runtime;
pub mod signals;
pub mod timestamp;

pub use signals::shutdown_signal;

/// Target of the per-request decision events (admission, routing, first token): recorded on
/// traces always, logged only at `debug` (`RUST_LOG=llmgw_decisions=debug`), so the default
/// log level writes one summary line per request.
pub const DECISIONS: &str = "llmgw_decisions";

pub use logging::{LogFormat, LogFormatError};
/// A trace context (the remote parent, or what is sent downstream).
pub use opentelemetry::Context as TraceContext;

/// Keeps telemetry alive for the life of the process; dropping it flushes pending spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces failed: {err}");
        }
    }
}

/// Errors while setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    LogFormat(#[from] LogFormatError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// Installs logging and, if `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export for
/// `service_name` (overridden by `OTEL_SERVICE_NAME`). Call from inside the Tokio runtime.
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    let format = LogFormat::from_env()?;
    let provider = otel::provider(service_name)?;
    let tracer = provider
        .as_ref()
        .map(|p| opentelemetry::trace::TracerProvider::tracer(p, service_name));
    logging::install(format, tracer)?;
    propagation::install();
    tracing::debug!(
        service = service_name,
        ?format,
        exporting = provider.is_some(),
        "telemetry initialised"
    );
    Ok(TelemetryGuard { provider })
}
