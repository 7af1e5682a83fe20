//! [`StatusView`]: the JSON of `GET /status.json` (and what the page draws): every scheduler's
//! `Status` snapshot (asked concurrently, each within [`SCHEDULER_STATUS_TIMEOUT`]), merged
//! with this gateway's own view — its tenants' limits and what remains of them, and what it
//! refused lately. Built only when asked: nothing here runs on a request's path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::{PoolStatus, StatusRequest, StatusResponse};
use serde::Serialize;

use super::recent::{RecentRefusals, Refused, WINDOW_MINUTES};
use crate::governance::policy::Tenant;
use crate::governance::{Governance, Usage};
use crate::scheduler_client::{SchedulerClients, Target};

/// The longest wait for one scheduler's snapshot.
pub const SCHEDULER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub object: &'static str,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub gateway: GatewayView,
    pub schedulers: Vec<SchedulerView>,
    pub tenants: Vec<TenantView>,
    /// Newest first.
    pub recent_refusals: Vec<Refused>,
}

#[derive(Debug, Serialize)]
pub struct GatewayView {
    /// `api_key` or `open`.
    pub auth: &'static str,
    /// The minutes `tenants[].refusals` cover.
    pub refusal_window_minutes: u64,
}

#[derive(Debug, Serialize)]
pub struct SchedulerView {
    pub address: String,
    /// What its health check last said, as `/readyz` says it.
    pub health: &'static str,
    /// `sole`, `leader`, `standby`, or `unknown` when its snapshot did not come.
    pub role: String,
    pub serving: bool,
    pub leader: String,
    pub models: Vec<String>,
    pub uptime_ms: u64,
    /// Why its snapshot is missing.
    pub error: Option<String>,
    pub pools: Vec<PoolView>,
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub name: String,
    pub capacity: u32,
    pub running: u32,
    pub waiting: Vec<ClassView>,
    pub endpoints: Vec<EndpointView>,
    pub tenants: Vec<PoolTenantView>,
}

#[derive(Debug, Serialize)]
pub struct ClassView {
    pub class: String,
    pub requests: u32,
    pub tokens: u64,
    pub oldest_wait_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub name: String,
    pub kind: String,
    pub up: bool,
    pub breaker: String,
    /// Takes no requests now: its probe fails or its breaker is open.
    pub ejected: bool,
    pub slots_declared: u32,
    pub slots: u32,
    pub slots_source: String,
    pub in_flight: u32,
    pub ttft_ms: u64,
    pub saturated: bool,
    /// Time per output token at its current batch, learned in the last minute; 0 = none.
    pub tpot_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct PoolTenantView {
    pub tenant: String,
    pub running: u32,
    pub waiting: u32,
    pub served_tokens: u64,
}

/// One tenant across the serving schedulers' pools and this gateway's limits.
#[derive(Debug, Default, Serialize)]
pub struct TenantView {
    pub tenant: String,
    pub running: u32,
    pub waiting: u32,
    pub served_tokens: u64,
    pub limits: Option<LimitsView>,
    /// Refusals per reason over the last `gateway.refusal_window_minutes`.
    pub refusals: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct LimitsView {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    /// `null` when the limit store did not answer.
    pub remaining: Option<RemainingView>,
}

#[derive(Debug, Serialize)]
pub struct RemainingView {
    pub requests: Option<u64>,
    pub tokens: Option<i64>,
    pub concurrent: Option<u64>,
    pub tokens_today: Option<u64>,
    pub tokens_this_month: Option<u64>,
}

/// Builds the document: the schedulers asked concurrently, then merged.
pub async fn build(
    schedulers: &SchedulerClients,
    governance: &Governance,
    recent: &RecentRefusals,
) -> StatusView {
    let targets = schedulers.targets();
    // The schedulers and the limit store at once: the slowest sets the time.
    let (asked, usage) = tokio::join!(
        futures::future::join_all(targets.iter().map(|t| ask(schedulers, t))),
        governance.usage()
    );
    let schedulers: Vec<SchedulerView> = targets
        .iter()
        .zip(asked)
        .map(|(target, answer)| scheduler_view(target, answer))
        .collect();
    let auth = match governance.policy() {
        Some(policy) if policy.auth == crate::governance::config::AuthMode::ApiKey => "api_key",
        _ => "open",
    };
    let tenants = tenants(&schedulers, usage, recent.by_tenant());
    StatusView {
        object: "status",
        generated_at: llmgw_telemetry::timestamp::now_rfc3339(),
        gateway: GatewayView {
            auth,
            refusal_window_minutes: WINDOW_MINUTES,
        },
        schedulers,
        tenants,
        recent_refusals: recent.last(),
    }
}

async fn ask(clients: &SchedulerClients, target: &Target) -> Result<StatusResponse, String> {
    let mut call = tonic::Request::new(StatusRequest {});
    clients.authorize(&mut call);
    match tokio::time::timeout(SCHEDULER_STATUS_TIMEOUT, target.scheduler().status(call)).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!(
            "no answer within {} ms",
            SCHEDULER_STATUS_TIMEOUT.as_millis()
        )),
    }
}

fn scheduler_view(target: &Target, answer: Result<StatusResponse, String>) -> SchedulerView {
    let health = target.last_health().describe();
    match answer {
        Ok(status) => SchedulerView {
            address: target.address.clone(),
            health,
            role: status.role,
            serving: status.serving,
            leader: status.leader,
            models: status.models,
            uptime_ms: status.uptime_ms,
            error: None,
            pools: status.pools.into_iter().map(pool_view).collect(),
        },
        Err(error) => SchedulerView {
            address: target.address.clone(),
            health,
            role: "unknown".to_owned(),
            serving: false,
            leader: String::new(),
            models: Vec::new(),
            uptime_ms: 0,
            error: Some(error),
            pools: Vec::new(),
        },
    }
}

fn pool_view(pool: PoolStatus) -> PoolView {
    PoolView {
        name: pool.name,
        capacity: pool.capacity,
        running: pool.running,
        waiting: pool
            .waiting
            .into_iter()
            .map(|class| ClassView {
                class: class.class,
                requests: class.requests,
                tokens: class.tokens,
                oldest_wait_ms: class.oldest_wait_ms,
            })
            .collect(),
        endpoints: pool
            .endpoints
            .into_iter()
            .map(|e| EndpointView {
                ejected: !e.up || e.breaker == "open",
                name: e.name,
                kind: e.kind,
                up: e.up,
                breaker: e.breaker,
                slots_declared: e.slots_declared,
                slots: e.slots,
                slots_source: e.slots_source,
                in_flight: e.in_flight,
                ttft_ms: e.ttft_ms,
                saturated: e.saturated,
                tpot_ms: e.tpot_ms,
            })
            .collect(),
        tenants: pool
            .tenants
            .into_iter()
            .map(|t| PoolTenantView {
                tenant: t.tenant,
                running: t.running,
                waiting: t.waiting,
                served_tokens: t.served_tokens,
            })
            .collect(),
    }
}

/// Every tenant that is configured, active in a serving scheduler's pool, or refused lately.
fn tenants(
    schedulers: &[SchedulerView],
    usage: Vec<(Arc<Tenant>, Usage)>,
    refusals: HashMap<String, HashMap<String, u64>>,
) -> Vec<TenantView> {
    let mut tenants: BTreeMap<String, TenantView> = BTreeMap::new();
    fn entry<'a>(tenants: &'a mut BTreeMap<String, TenantView>, name: &str) -> &'a mut TenantView {
        tenants
            .entry(name.to_owned())
            .or_insert_with(|| TenantView {
                tenant: name.to_owned(),
                ..TenantView::default()
            })
    }
    for (tenant, remaining) in usage {
        let limits = &tenant.limits;
        let remaining = match remaining {
            Usage::Unlimited => {
                entry(&mut tenants, &tenant.name);
                continue;
            }
            Usage::StoreSilent => None,
            Usage::Remaining(left) => Some(RemainingView {
                requests: left.requests,
                tokens: left.tokens,
                concurrent: left.concurrent,
                tokens_today: left.today,
                tokens_this_month: left.this_month,
            }),
        };
        entry(&mut tenants, &tenant.name).limits = Some(LimitsView {
            rpm: limits.rpm,
            tpm: limits.tpm,
            max_concurrent: limits.max_concurrent,
            tokens_per_day: limits.tokens_per_day,
            tokens_per_month: limits.tokens_per_month,
            remaining,
        });
    }
    // A standby's pools hold nothing; the sums are the serving replicas'.
    for scheduler in schedulers.iter().filter(|s| s.role != "standby") {
        for pool in &scheduler.pools {
            for seen in &pool.tenants {
                let tenant = entry(&mut tenants, &seen.tenant);
                tenant.running += seen.running;
                tenant.waiting += seen.waiting;
                tenant.served_tokens += seen.served_tokens;
            }
        }
    }
    for (name, reasons) in refusals {
        entry(&mut tenants, &name).refusals = reasons.into_iter().collect();
    }
    tenants.into_values().collect()
}
