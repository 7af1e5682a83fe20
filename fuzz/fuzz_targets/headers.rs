//! The header parsers a client reaches: tenant and priority, the presented API key, W3C trace
//! context. Input is `name: value` lines; any bytes give a value or a 400, never a panic.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in input.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    if let Ok(caller) = gateway::caller::Caller::from_headers(&headers, "req-1".to_owned()) {
        assert!(!caller.tenant.is_empty());
    }
    let _ = gateway::governance::keys::presented(&headers);
    let context = llmgw_telemetry::propagation::extract_http(&headers);
    let _ = llmgw_telemetry::propagation::trace_id(&context);
});
