//! Rate-limit response headers: OpenAI's `x-ratelimit-*` (what the OpenAI SDKs and many
//! clients read) and the IETF draft's structured `RateLimit-Policy` / `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers). The draft registers no token unit, so the token
//! policy carries it as a vendor parameter, `llmgw-unit="tokens"`.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::ledger::Remaining;
use super::policy::Tenant;

/// OpenAI's duration format: `12ms`, `1s`, `6m0s`, `1h2m3s`.
pub fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = ms.div_ceil(1000);
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The headers for `tenant` given what remains.
pub fn rate_limit_headers(tenant: &Tenant, remaining: &Remaining) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    let mut policies = Vec::new();
    let mut states = Vec::new();
    if let (Some(limit), Some(left)) = (tenant.limits.rpm, remaining.requests) {
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", left.to_string());
        put(
            "x-ratelimit-reset-requests",
            openai_duration(remaining.requests_reset_ms),
        );
        policies.push(format!("\"rpm\";q={limit};w=60"));
        states.push(format!(
            "\"rpm\";r={left};t={}",
            remaining.requests_reset_ms.div_ceil(1000)
        ));
    }
    if let (Some(limit), Some(left)) = (tenant.limits.tpm, remaining.tokens) {
        let left = left.max(0);
        put("x-ratelimit-limit-tokens", limit.to_string());
        put("x-ratelimit-remaining-tokens", left.to_string());
        put(
            "x-ratelimit-reset-tokens",
            openai_duration(remaining.tokens_reset_ms),
        );
        policies.push(format!("\"tpm\";q={limit};w=60;llmgw-unit=\"tokens\""));
        states.push(format!(
            "\"tpm\";r={left};t={}",
            remaining.tokens_reset_ms.div_ceil(1000)
        ));
    }
    if let (Some(limit), Some(left)) = (tenant.limits.tokens_per_day, remaining.today) {
        policies.push(format!("\"day\";q={limit};w=86400;llmgw-unit=\"tokens\""));
        states.push(format!(
            "\"day\";r={left};t={}",
            remaining.day_reset_ms.div_ceil(1000)
        ));
    }
    if !policies.is_empty() {
        put("ratelimit-policy", policies.join(", "));
        put("ratelimit", states.join(", "));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_openai_format() {
        assert_eq!(openai_duration(12), "12ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(1001), "2s");
        assert_eq!(openai_duration(360_000), "6m0s");
        assert_eq!(openai_duration(3_723_000), "1h2m3s");
    }
}
