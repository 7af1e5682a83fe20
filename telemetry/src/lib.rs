//! Process-wide telemetry setup shared by the gateway and the scheduler.
//!
//! # Layout
//! - [`logging`]: `RUST_LOG` filtering and `LOG_FORMAT` (`text` | `json`) output.
//!
//! OpenTelemetry export and W3C trace-context propagation plug in here (the
//! observability issue): [`init`] is the one place both binaries call, and the
//! returned [`TelemetryGuard`] is what flushes exporters on shutdown.

pub mod logging;

pub use logging::{LogFormat, LogFormatError};

/// Keeps telemetry alive for the life of the process; drop it last.
#[derive(Debug)]
pub struct TelemetryGuard {
    _private: (),
}

/// Errors while setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    LogFormat(#[from] LogFormatError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber for `service_name`, reading `RUST_LOG` and `LOG_FORMAT`.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    let format = LogFormat::from_env()?;
    logging::install(format)?;
    tracing::debug!(service = service_name, ?format, "telemetry initialised");
    Ok(TelemetryGuard { _private: () })
}
