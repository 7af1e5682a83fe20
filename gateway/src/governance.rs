//! Governance: who may call, with what, and how much. With `GATEWAY_CONFIG` the API key
//! decides the tenant (`x-tenant-id` is ignored) and its class limits; every request of a
//! limited tenant reserves its worst case (prompt estimate + completion cap) against RPM, TPM,
//! concurrency and token budgets atomically, sends the cap upstream as its limit, and settles
//! to the actual usage when it ends — so a budget holds however many streams run on however
//! many gateways.
//!
//! # Layout
//! - [`config`]: the `GATEWAY_CONFIG` file and its validation.
//! - [`policy`]: the file compiled for lookups (keys by hash, tenants, model globs).
//! - [`keys`]: how keys are presented and hashed (`gateway hash-key`).
//! - [`ledger`]: the limit arithmetic (token buckets, calendar budgets, reservations).
//! - [`store`]: where counters live: memory or Redis (`store/limits.lua`, the ledger's twin).
//! - [`limiter`]: the store behind a timeout and the `on_error` rule.
//! - [`estimate`]: the prompt-token estimate; [`reservation`]: settlement on every exit path.
//! - [`headers`]: `x-ratelimit-*`, `RateLimit-Policy` and `RateLimit`.

pub mod config;
pub mod estimate;
pub mod governed;
pub mod headers;
pub mod keys;
pub mod ledger;
pub mod limiter;
pub mod policy;
pub mod reservation;
pub mod store;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use self::governed::Governed;
use axum::http::{HeaderMap, StatusCode};
use llmgw_proto::Reason;

use self::config::{AuthMode, GatewayFile};
use self::ledger::{Decision, Limit, Remaining};
use self::limiter::Limiter;
use self::policy::{Policy, Tenant, rank};
use self::reservation::Reservation;
use self::store::Reserve;
use self::store::memory::MemoryStore;
use self::store::redis::RedisStore;
use crate::caller::{Caller, parse_priority, priority_name};
use crate::error::{ApiError, Refusal};
use crate::metrics::GatewayMetrics;

/// Tenants the status page lists with their limits (each one a store round trip).
const MAX_TENANTS_SHOWN: usize = 200;

/// The live policy (reloadable) and the limiter.
#[derive(Debug)]
pub struct Governance {
    file: Option<String>,
    policy: RwLock<Option<Arc<Policy>>>,
    limiter: Option<Arc<Limiter>>,
}

impl Governance {
    /// Open mode: no file, identity from headers, no limits.
    pub fn open() -> Self {
        Self {
            file: None,
            policy: RwLock::new(None),
            limiter: None,
        }
    }

    /// Reads `file` (if any) and prepares its store; a bad file is an error naming the key.
    pub fn load(file: Option<&str>, metrics: Arc<GatewayMetrics>) -> Result<Self, String> {
        let Some(path) = file else {
            return Ok(Self::open());
        };
        let parsed = GatewayFile::load(Path::new(path)).map_err(|err| err.to_string())?;
        let policy = Policy::compile(&parsed)?;
        let timeout = Duration::from_millis(parsed.store.timeout_ms);
        let store: Arc<dyn store::LimitStore> = match &parsed.store.redis_url {
            Some(url) => Arc::new(
                RedisStore::connect_lazy(url, &parsed.store.key_prefix, timeout)
                    .map_err(|err| err.to_string())?,
            ),
            None => Arc::new(MemoryStore::default()),
        };
        tracing::info!(
            auth = ?parsed.auth,
            tenants = parsed.tenants.len(),
            keys = parsed.keys.len(),
            store = store.kind(),
            on_error = ?parsed.store.on_error,
            "governance loaded"
        );
        let limiter = Limiter::new(store, parsed.store.on_error, timeout, metrics);
        Ok(Self {
            file: Some(path.to_owned()),
            policy: RwLock::new(Some(Arc::new(policy))),
            limiter: Some(Arc::new(limiter)),
        })
    }

    /// The config file, if any.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The policy in force (`None` = open mode without a file).
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the file; an invalid one keeps the running policy. The store is fixed at
    /// start-up: a changed `[store]` section needs a restart (said in the log).
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let parsed = GatewayFile::load(Path::new(path)).map_err(|err| err.to_string())?;
        let policy = Policy::compile(&parsed)?;
        if self.policy().is_some_and(|old| old.store != policy.store) {
            tracing::warn!("`[store]` changed: it takes effect at the next restart");
        }
        *self
            .policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(policy));
        Ok(())
    }

    /// Who is calling: the key's tenant (with keys), or the headers (open mode).
    pub fn identify(&self, headers: &HeaderMap, request_id: String) -> Result<Caller, ApiError> {
        let Some(policy) = self.policy() else {
            return Caller::from_headers(headers, request_id);
        };
        match policy.auth {
            AuthMode::None => {
                let mut caller = Caller::from_headers(headers, request_id)?;
                if rank(caller.priority) > rank(policy.open_max_priority) {
                    caller.priority = policy.open_max_priority;
                }
                caller.tenant_rules = policy.tenant(&caller.tenant).cloned();
                if caller.tenant_rules.is_none() {
                    caller.metrics_tenant = llmgw_proto::OVERFLOW_TENANT.to_owned();
                }
                Ok(caller)
            }
            AuthMode::ApiKey => {
                let Some(presented) = keys::presented(headers) else {
                    return Err(invalid_key(
                        "Missing API key: send `Authorization: Bearer <key>` or `x-api-key`",
                    ));
                };
                let Some(key) = policy.key(presented) else {
                    return Err(invalid_key("Invalid API key"));
                };
                let tenant = Arc::clone(&key.tenant);
                let priority =
                    match headers.get("x-priority") {
                        None => tenant.priority,
                        Some(value) => {
                            let asked = value.to_str().ok().and_then(parse_priority).ok_or_else(|| {
                            ApiError::invalid(
                                "x-priority",
                                "header `x-priority` must be critical, interactive or batch",
                            )
                        })?;
                            if rank(asked) > rank(tenant.max_priority) {
                                return Err(refusal(
                                    StatusCode::FORBIDDEN,
                                    Reason::PriorityNotAllowed,
                                    format!(
                                        "This key may ask for priority up to `{}`, not `{}`",
                                        priority_name(tenant.max_priority),
                                        priority_name(asked)
                                    ),
                                    Some("x-priority"),
                                ));
                            }
                            asked
                        }
                    };
                Ok(Caller {
                    metrics_tenant: tenant.name.to_string(),
                    tenant: tenant.name.to_string(),
                    priority,
                    request_id,
                    tenant_rules: Some(tenant),
                    key_name: key.name.clone(),
                    slo_ttft_ms: crate::caller::slo_ttft_ms(headers)?,
                    slo_tpot_ms: crate::caller::slo_tpot_ms(headers)?,
                })
            }
        }
    }

    /// The prompt tokens of `request` for a client that asks (`/v1/messages/count_tokens`):
    /// the model's configured tokenizer, else ~4 bytes a token (a realistic count, not the
    /// upper bound reservations charge), images at `IMAGE_PROMPT_TOKENS` each.
    pub async fn count_prompt(&self, request: &(dyn Governed + Send + Sync)) -> u64 {
        let (texts, messages) = request.prompt_texts();
        let policy = self.policy();
        let tokenizer = policy
            .as_ref()
            .and_then(|policy| policy.tokenizers.for_model(request.model()));
        estimate::prompt_tokens_off_runtime(&texts, messages, tokenizer, 4.0).await
            + u64::from(request.prompt_images()) * u64::from(llmgw_proto::IMAGE_PROMPT_TOKENS)
    }

    /// Checks the model and engine options, caps the completion, and reserves against the
    /// tenant's limits. Returns the reservation (if the tenant is limited) and the
    /// rate-limit headers to send.
    pub async fn admit(
        &self,
        caller: &Caller,
        request: &mut (dyn Governed + Send),
    ) -> Result<Admitted, ApiError> {
        let (Some(tenant), Some(policy), Some(limiter)) = (
            caller.tenant_rules.as_ref(),
            self.policy(),
            self.limiter.as_ref(),
        ) else {
            return Ok(Admitted::default());
        };
        if !tenant.allows_model(request.model()) {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                Reason::ModelNotAllowed,
                format!("This key may not use model `{}`", request.model()),
                Some("model"),
            ));
        }
        // In every auth mode: a configured tenant passes only its `allowed_options`.
        check_options(tenant, request.extra_json())?;
        if let Some(cap) = tenant.max_tokens
            && let Some(sampling) = request.sampling_mut()
        {
            sampling.max_tokens = Some(sampling.max_tokens.map_or(cap, |asked| asked.min(cap)));
        }
        if !tenant.is_limited() {
            return Ok(Admitted::default());
        }
        let limits = tenant.limits;
        let counts_tokens = limits.tpm.is_some()
            || limits.tokens_per_day.is_some()
            || limits.tokens_per_month.is_some();
        let (texts, messages) = request.prompt_texts();
        let tokenizer = policy.tokenizers.for_model(request.model());
        let counted = tokenizer.is_some();
        let prompt = estimate::prompt_tokens_off_runtime(
            &texts,
            messages,
            tokenizer,
            policy.accounting.prompt_bytes_per_token,
        )
        .await
            + u64::from(request.prompt_images()) * u64::from(llmgw_proto::IMAGE_PROMPT_TOKENS);
        // A real tokenizer's count is better than the scheduler's own rough one (the byte
        // heuristic is an upper bound for charging, not a size for scheduling).
        if counted {
            request.estimate_prompt(u32::try_from(prompt).unwrap_or(u32::MAX));
        }
        let completion = request.max_output().map_or(0, u64::from);
        let tokens = if counts_tokens {
            prompt + completion
        } else {
            0
        };
        let id = format!("{}.{:016x}", caller.request_id, fastrand::u64(..));
        let ask = Reserve {
            tenant: Arc::clone(&tenant.name),
            id: id.clone(),
            tokens,
            limits,
            ttl_ms: policy.accounting.reservation_ttl_ms,
        };
        let (decision, place) = limiter.reserve(ask).await.map_err(|unavailable| {
            tracing::warn!(tenant = %tenant.name, error = %unavailable, "limits unavailable: refusing");
            limiter.metrics().ratelimit(&tenant.name, "store", "unavailable");
            tracing::Span::current().record("llmgw.ratelimit.decision", "unavailable");
            limits_unavailable()
        })?;
        match decision {
            Decision::Granted(remaining) => {
                let outcome = match place {
                    limiter::Ledgered::Store => "granted",
                    limiter::Ledgered::Local => "granted_locally",
                };
                limiter.metrics().ratelimit(&tenant.name, "all", outcome);
                tracing::Span::current().record("llmgw.ratelimit.decision", outcome);
                record_remaining(limiter.metrics(), tenant, &remaining);
                tracing::debug!(tenant = %tenant.name, reserved = tokens, outcome, "limits: reserved");
                Ok(Admitted {
                    reservation: Some(Reservation::new(
                        Arc::clone(limiter),
                        place,
                        Arc::clone(&tenant.name),
                        id,
                        limits,
                        tokens,
                        prompt,
                        policy.accounting.reservation_ttl_ms,
                    )),
                    headers: headers::rate_limit_headers(tenant, &remaining),
                })
            }
            Decision::Refused {
                limit,
                retry_after_ms,
                remaining,
            } => {
                limiter
                    .metrics()
                    .ratelimit(&tenant.name, limit.as_str(), "refused");
                record_remaining(limiter.metrics(), tenant, &remaining);
                tracing::debug!(tenant = %tenant.name, limit = limit.as_str(), requested = tokens, "limits: refused");
                Err(limit_refusal(
                    tenant,
                    limit,
                    retry_after_ms,
                    &remaining,
                    prompt,
                    completion,
                ))
            }
        }
    }

    /// Whether `headers` may read the status page: `Ok(true)` with keys and an
    /// `admin = true` key; `Ok(false)` without keys (the route then decides by the client's
    /// address); a missing or unknown key is 401, a tenant's ordinary key 403.
    pub fn admin(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        let Some(policy) = self.policy().filter(|p| p.auth == AuthMode::ApiKey) else {
            return Ok(false);
        };
        let Some(presented) = keys::presented(headers) else {
            return Err(invalid_key(
                "Missing API key: the status page needs an admin key (`Authorization: Bearer <key>`)",
            ));
        };
        match policy.key(presented) {
            None => Err(invalid_key("Invalid API key")),
            Some(key) if key.admin => Ok(true),
            Some(_) => Err(refusal(
                StatusCode::FORBIDDEN,
                Reason::AdminRequired,
                "The status page needs a key with `admin = true`; this key is a tenant's"
                    .to_owned(),
                None,
            )),
        }
    }

    /// Every configured tenant's limits and what remains of them (tenants without limits:
    /// [`Usage::Unlimited`]), for the status page.
    pub async fn usage(&self) -> Vec<(Arc<Tenant>, Usage)> {
        let Some(policy) = self.policy() else {
            return Vec::new();
        };
        // Asked at once: a silent store costs one timeout, not one per tenant.
        let peeks = policy
            .tenants()
            .into_iter()
            .take(MAX_TENANTS_SHOWN)
            .map(|tenant| async move {
                let used = match (&self.limiter, tenant.is_limited()) {
                    (Some(limiter), true) => {
                        match limiter.peek(Arc::clone(&tenant.name), tenant.limits).await {
                            Ok(remaining) => Usage::Remaining(remaining),
                            Err(_) => Usage::StoreSilent,
                        }
                    }
                    _ => Usage::Unlimited,
                };
                (Arc::clone(tenant), used)
            });
        futures::future::join_all(peeks).await
    }

    /// What remains for the caller's tenant, for `GET /v1/limits`.
    pub async fn remaining(&self, caller: &Caller) -> Result<Option<Remaining>, ApiError> {
        let (Some(tenant), Some(limiter)) = (caller.tenant_rules.as_ref(), self.limiter.as_ref())
        else {
            return Ok(None);
        };
        if !tenant.is_limited() {
            return Ok(None);
        }
        limiter
            .peek(Arc::clone(&tenant.name), tenant.limits)
            .await
            .map(Some)
            .map_err(|_| limits_unavailable())
    }
}

/// A tenant's limits as the status page shows them.
#[derive(Debug, Clone)]
pub enum Usage {
    /// No limits.
    Unlimited,
    /// What remains of them.
    Remaining(Remaining),
    /// The limit store did not answer.
    StoreSilent,
}

/// What admission to a governed tenant's limits produced.
#[derive(Debug, Default)]
pub struct Admitted {
    pub reservation: Option<Reservation>,
    pub headers: HeaderMap,
}

fn refusal(status: StatusCode, reason: Reason, message: String, param: Option<&str>) -> ApiError {
    ApiError::Refused(Box::new(Refusal {
        status,
        reason,
        message,
        param: param.map(str::to_owned),
        retry_after_s: None,
        headers: HeaderMap::new(),
    }))
}

/// The store did not answer and `on_error = "deny"`: retry in a second.
fn limits_unavailable() -> ApiError {
    ApiError::Refused(Box::new(Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: Reason::LimitsUnavailable,
        message: "Rate limits cannot be checked right now; retry shortly".to_owned(),
        param: None,
        retry_after_s: Some(1),
        headers: HeaderMap::new(),
    }))
}

fn invalid_key(message: &str) -> ApiError {
    refusal(
        StatusCode::UNAUTHORIZED,
        Reason::InvalidApiKey,
        message.to_owned(),
        None,
    )
}

/// With keys, engine options pass only if the tenant's `allowed_options` lists them.
fn check_options(tenant: &Tenant, extra_json: &str) -> Result<(), ApiError> {
    if extra_json.is_empty() {
        return Ok(());
    }
    let options: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(extra_json).unwrap_or_default();
    match options
        .keys()
        .find(|key| !tenant.allowed_options.contains(key.as_str()))
    {
        None => Ok(()),
        Some(refused) => Err(refusal(
            StatusCode::FORBIDDEN,
            Reason::OptionNotAllowed,
            format!(
                "This key may not pass engine option `{refused}` (not in the tenant's `allowed_options`)"
            ),
            Some(refused),
        )),
    }
}

fn limit_refusal(
    tenant: &Tenant,
    limit: Limit,
    retry_after_ms: Option<u64>,
    remaining: &Remaining,
    prompt: u64,
    completion: u64,
) -> ApiError {
    let size = |limits: &ledger::Limits| match limit {
        Limit::Requests => limits.rpm,
        Limit::Tokens => limits.tpm,
        Limit::Concurrency => limits.max_concurrent,
        Limit::Day => limits.tokens_per_day,
        Limit::Month => limits.tokens_per_month,
    };
    let of = size(&tenant.limits).unwrap_or(0);
    let Some(retry_after_ms) = retry_after_ms else {
        return ApiError::invalid(
            "max_tokens",
            format!(
                "This request may use up to {} tokens ({prompt} estimated for the prompt + {completion} for the completion), more than the tenant's `{}` of {of}; lower `max_tokens` or shorten the prompt",
                prompt + completion,
                limit.as_str()
            ),
        );
    };
    let retry_after_s = retry_after_ms.div_ceil(1000).max(1);
    let (reason, message) = if limit.is_budget() && retry_after_ms <= ledger::HELD_RETRY_MS {
        (
            Reason::RateLimited,
            format!(
                "The tenant's token budget `{}` ({of}) is held by requests in flight; retry in {}",
                limit.as_str(),
                headers::openai_duration(retry_after_ms)
            ),
        )
    } else if limit.is_budget() {
        (
            Reason::BudgetExhausted,
            format!(
                "The tenant's token budget `{}` ({of}) is spent; it renews in {}",
                limit.as_str(),
                headers::openai_duration(retry_after_ms)
            ),
        )
    } else {
        (
            Reason::RateLimited,
            format!(
                "Rate limit `{}` ({of}) reached; retry in {}",
                limit.as_str(),
                headers::openai_duration(retry_after_ms)
            ),
        )
    };
    ApiError::Refused(Box::new(Refusal {
        status: StatusCode::TOO_MANY_REQUESTS,
        reason,
        message,
        param: None,
        retry_after_s: Some(retry_after_s),
        headers: headers::rate_limit_headers(tenant, remaining),
    }))
}

fn record_remaining(metrics: &GatewayMetrics, tenant: &Tenant, remaining: &Remaining) {
    if let Some(tokens) = remaining.tokens {
        metrics.budget_remaining(&tenant.name, "tpm", tokens);
    }
    if let Some(today) = remaining.today {
        metrics.budget_remaining(&tenant.name, "day", today as i64);
    }
    if let Some(month) = remaining.this_month {
        metrics.budget_remaining(&tenant.name, "month", month as i64);
    }
}
