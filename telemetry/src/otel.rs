//! The OTLP/gRPC trace exporter, configured by the standard variables only:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (unset, or `OTEL_TRACES_EXPORTER=none`: no export at all),
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (read by
//! the SDK). Spans go through a batch processor: an unreachable collector costs a background
//! retry, never a request.

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::TelemetryError;

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A tracer provider if the environment asks for export, else `None`.
pub fn provider(service_name: &'static str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none") {
        return Ok(None);
    }
    let Some(endpoint) =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
    let mut resource = Resource::builder();
    if set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}
