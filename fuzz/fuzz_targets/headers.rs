//! The header parsers a client reaches: tenant and priority, the presented API key, W3C trace
//! context. Input is `name: value` lines; any bytes give a value or a 400, never a panic, and:
//! - `Caller::from_headers` accepts exactly when `x-tenant-id` is absent or a valid token
//!   (1 to 64 of letters, digits, `.`, `_`, `-`) and `x-priority` is absent or a known class;
//!   an accepted caller's tenant is that token (or `anonymous`), also as its metrics label, its
//!   priority a real class (interactive by default) whose name parses back to it; `x-slo-ttft-ms`
//!   is accepted exactly when absent or a whole number of milliseconds from 1 to 3,600,000
//!   (0 = none); a refusal is a 400 naming the first header that is wrong;
//! - a presented key is non-empty, trimmed, visible ASCII (spaces and tabs only inside), taken
//!   from the `Authorization: Bearer` value when there is one, else from `x-api-key`;
//! - a trace id is 32 lowercase hex digits, not all zero, and only comes from a `traceparent`
//!   header; the context injected from it carries the same trace id again.
#![no_main]

use gateway::caller::{Caller, parse_priority, priority_name, valid_token};
use gateway::error::ApiError;
use gateway::governance::keys::presented;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use llmgw_proto::v1::Priority;
use llmgw_telemetry::propagation::{extract_http, inject_http, trace_id};

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
    caller(&headers);
    key(&headers);
    trace(&headers);
});

/// A header's first value as trimmed text: `None` absent, `Some(None)` not visible ASCII.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<Option<&'a str>> {
    headers
        .get(name)
        .map(|value| value.to_str().ok().map(str::trim))
}

fn caller(headers: &HeaderMap) {
    let tenant = text(headers, "x-tenant-id");
    let priority = text(headers, "x-priority");
    let slo = text(headers, "x-slo-ttft-ms");
    let tpot = text(headers, "x-slo-tpot-ms");
    let tenant_ok = tenant.is_none_or(|t| t.is_some_and(valid_token));
    let priority_ok = priority.is_none_or(|p| p.and_then(parse_priority).is_some());
    let objective = |header: Option<Option<&str>>, max: u32| {
        header.map(|s| {
            s.and_then(|s| s.parse::<u32>().ok())
                .filter(|ms| (1..=max).contains(ms))
        })
    };
    let slo_ms = objective(slo, 3_600_000);
    let tpot_ms = objective(tpot, 60_000);
    let slo_ok = slo_ms.is_none_or(|ms| ms.is_some());
    let tpot_ok = tpot_ms.is_none_or(|ms| ms.is_some());
    match Caller::from_headers(headers, "req-1".to_owned()) {
        Ok(caller) => {
            assert!(
                tenant_ok && priority_ok && slo_ok && tpot_ok,
                "accepted {tenant:?} / {priority:?} / {slo:?} / {tpot:?}"
            );
            assert_eq!(caller.slo_ttft_ms, slo_ms.flatten().unwrap_or(0));
            assert_eq!(caller.slo_tpot_ms, tpot_ms.flatten().unwrap_or(0));
            assert!(valid_token(&caller.tenant), "tenant {:?}", caller.tenant);
            assert_eq!(
                caller.tenant,
                tenant.flatten().unwrap_or(llmgw_proto::ANONYMOUS_TENANT)
            );
            assert_eq!(caller.metrics_tenant, caller.tenant);
            assert_eq!(caller.request_id, "req-1");
            assert!(caller.tenant_rules.is_none() && caller.key_name.is_none());
            assert_ne!(caller.priority, Priority::Unspecified);
            if priority.is_none() {
                assert_eq!(caller.priority, Priority::Interactive);
            }
            assert_eq!(
                parse_priority(priority_name(caller.priority)),
                Some(caller.priority)
            );
        }
        Err(error) => {
            assert!(
                !(tenant_ok && priority_ok && slo_ok && tpot_ok),
                "refused {tenant:?} / {priority:?} / {slo:?} / {tpot:?}"
            );
            let ApiError::InvalidRequest { param, .. } = &error else {
                panic!("not a 400: {error:?}");
            };
            let param = param.as_deref();
            assert!(
                (param == Some("x-tenant-id") && !tenant_ok)
                    || (param == Some("x-priority") && tenant_ok && !priority_ok)
                    || (param == Some("x-slo-ttft-ms") && tenant_ok && priority_ok && !slo_ok)
                    || (param == Some("x-slo-tpot-ms")
                        && tenant_ok
                        && priority_ok
                        && slo_ok
                        && !tpot_ok),
                "refusal names {param:?}"
            );
        }
    }
}

fn key(headers: &HeaderMap) {
    // A bearer token: `Bearer` (any case), a space, then something that is not blank.
    let bearer = text(headers, "authorization")
        .flatten()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let api_key = text(headers, "x-api-key").flatten();
    match presented(headers) {
        Some(key) => {
            assert!(!key.is_empty());
            assert_eq!(key, key.trim(), "the key is trimmed");
            assert!(
                key.bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
                "a key with control or non-ASCII bytes: {key:?}"
            );
            match bearer {
                Some(token) => assert_eq!(key, token, "the bearer token wins"),
                None => assert_eq!(Some(key), api_key, "else x-api-key"),
            }
        }
        None => {
            assert!(bearer.is_none(), "a bearer token was not presented");
            assert!(
                api_key.is_none_or(str::is_empty),
                "x-api-key was not presented"
            );
        }
    }
}

fn trace(headers: &HeaderMap) {
    let context = extract_http(headers);
    let mut injected = HeaderMap::new();
    inject_http(&context, &mut injected);
    let Some(id) = trace_id(&context) else {
        assert!(
            injected.get("traceparent").is_none(),
            "no trace, no traceparent"
        );
        return;
    };
    assert!(headers.contains_key("traceparent"));
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    assert!(
        id.bytes().any(|b| b != b'0'),
        "the all-zero trace id is invalid"
    );
    let traceparent = injected
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .expect("a trace is injected as traceparent");
    assert!(
        traceparent.starts_with("00-") && traceparent.get(3..35) == Some(id.as_str()),
        "{traceparent}"
    );
    assert_eq!(
        trace_id(&extract_http(&injected)).as_deref(),
        Some(id.as_str())
    );
}
