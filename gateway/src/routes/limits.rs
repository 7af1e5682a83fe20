//! `GET /v1/limits`: the caller's own limits and what remains, so a client can plan. Open
//! mode (or a tenant without limits) answers with `limits: null`.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use crate::caller::{Caller, priority_name};
use crate::error::ApiError;
use crate::governance::headers::openai_duration;

#[derive(Debug, Serialize)]
pub struct LimitsView {
    object: &'static str,
    tenant: String,
    priority: &'static str,
    max_priority: Option<&'static str>,
    max_tokens: Option<u32>,
    limits: Option<Limits>,
}

#[derive(Debug, Serialize)]
struct Limits {
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_concurrent: Option<u64>,
    tokens_per_day: Option<u64>,
    tokens_per_month: Option<u64>,
    remaining: Remaining,
    reset: Reset,
}

#[derive(Debug, Serialize)]
struct Remaining {
    requests: Option<u64>,
    tokens: Option<i64>,
    concurrent: Option<u64>,
    tokens_today: Option<u64>,
    tokens_this_month: Option<u64>,
}

/// Durations in OpenAI's format (`1s`, `6m0s`) and in milliseconds.
#[derive(Debug, Serialize)]
struct Reset {
    requests: String,
    tokens: String,
    day: String,
    month: String,
    requests_ms: u64,
    tokens_ms: u64,
    day_ms: u64,
    month_ms: u64,
}

pub async fn limits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<LimitsView>, ApiError> {
    let remaining = state.governance.remaining(&caller).await?;
    let tenant = caller.tenant_rules.as_ref();
    let limits = match (tenant, remaining) {
        (Some(tenant), Some(left)) => Some(Limits {
            rpm: tenant.limits.rpm,
            tpm: tenant.limits.tpm,
            max_concurrent: tenant.limits.max_concurrent,
            tokens_per_day: tenant.limits.tokens_per_day,
            tokens_per_month: tenant.limits.tokens_per_month,
            remaining: Remaining {
                requests: left.requests,
                tokens: left.tokens,
                concurrent: left.concurrent,
                tokens_today: left.today,
                tokens_this_month: left.this_month,
            },
            reset: Reset {
                requests: openai_duration(left.requests_reset_ms),
                tokens: openai_duration(left.tokens_reset_ms),
                day: openai_duration(left.day_reset_ms),
                month: openai_duration(left.month_reset_ms),
                requests_ms: left.requests_reset_ms,
                tokens_ms: left.tokens_reset_ms,
                day_ms: left.day_reset_ms,
                month_ms: left.month_reset_ms,
            },
        }),
        _ => None,
    };
    Ok(Json(LimitsView {
        object: "limits",
        tenant: caller.tenant.clone(),
        priority: priority_name(caller.priority),
        max_priority: tenant.map(|t| priority_name(t.max_priority)),
        max_tokens: tenant.and_then(|t| t.max_tokens),
        limits,
    }))
}
