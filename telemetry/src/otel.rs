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
    if !named_by_environment(
        set("OTEL_SERVICE_NAME").as_deref(),
        set("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
    ) {
        resource = resource.with_service_name(service_name);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// Whether the standard variables name the service: `OTEL_SERVICE_NAME`, or a `service.name`
/// among `OTEL_RESOURCE_ATTRIBUTES` (the SDK reads both; our default must not override them).
fn named_by_environment(service_name: Option<&str>, resource_attributes: Option<&str>) -> bool {
    service_name.is_some()
        || resource_attributes.is_some_and(|attributes| {
            attributes
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .any(|(key, value)| key.trim() == "service.name" && !value.trim().is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::named_by_environment;

    #[test]
    fn the_environment_names_the_service_either_way() {
        assert!(!named_by_environment(None, None));
        assert!(named_by_environment(Some("edge"), None));
        assert!(named_by_environment(
            None,
            Some("deployment.environment=prod, service.name=edge")
        ));
        assert!(!named_by_environment(
            None,
            Some("deployment.environment=prod")
        ));
        assert!(!named_by_environment(None, Some("service.name=")));
    }
}
