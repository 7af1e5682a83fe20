//! W3C trace context across the hops: incoming HTTP headers → gRPC metadata → backend HTTP
//! headers. The parent context is attached to a span before it is entered.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes W3C `traceparent`/`tracestate` the process's propagation format.
pub fn install() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by HTTP headers (empty context if none).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The remote parent carried by gRPC metadata.
pub fn extract_grpc(metadata: &tonic::metadata::MetadataMap) -> Context {
    extract_http(&metadata.clone().into_headers())
}

/// The context to send downstream from `span`: the span's own when traces are recorded,
/// otherwise `incoming` passed through, so a caller's trace survives even without export.
pub fn outgoing(span: &tracing::Span, incoming: &Context) -> Context {
    let own = span.context();
    if own.span().span_context().is_valid() {
        own
    } else {
        incoming.clone()
    }
}

/// Writes `context` as `traceparent` (and `tracestate`) into HTTP headers.
pub fn inject_http(context: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Writes `context` into gRPC metadata.
pub fn inject_grpc(context: &Context, metadata: &mut tonic::metadata::MetadataMap) {
    let mut headers = http::HeaderMap::new();
    inject_http(context, &mut headers);
    for (name, value) in &headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// Sets `parent` as the span's parent (before it is entered). No-op without a trace layer.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    let _ = span.set_parent(parent);
}

/// Makes `parent` the parent of a request span and records the span's own ids in its
/// `trace_id` / `span_id` fields (declared `Empty`), so JSON log lines lead to the trace.
/// Returns the trace id when traces are recorded.
pub fn adopt(span: &tracing::Span, parent: Context) -> Option<String> {
    set_parent(span, parent);
    let (trace_id, span_id) = ids(span)?;
    span.record("trace_id", trace_id.as_str());
    span.record("span_id", span_id.as_str());
    Some(trace_id)
}

/// The trace id of `context` as 32 hex digits, if it has a valid span.
pub fn trace_id(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// (trace id, span id) of `span`, if traces are recorded.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_through_headers_and_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let context = extract_http(&headers);
        assert_eq!(
            trace_id(&context).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_grpc(&context, &mut metadata);
        assert_eq!(
            metadata.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(trace_id(&extract_grpc(&metadata)), trace_id(&context));
        assert_eq!(trace_id(&extract_http(&http::HeaderMap::new())), None);
    }
}
