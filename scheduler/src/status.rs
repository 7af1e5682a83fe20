//! The `Status` RPC's answer: a snapshot of this replica — its role in its group, and per pool
//! its capacity, what runs and waits (by class, in requests and tokens, with the oldest wait),
//! its endpoints (probe, breaker, declared and learned slots, first-token time, saturation)
//! and its tenants (running, waiting, served tokens). Each pool is read under its admission
//! lock once; nothing here touches a request's path.

use std::time::Duration;

use llmgw_proto::v1::{
    ClassWaiting, EndpointStatus, PoolStatus, StatusResponse, TenantStatus as TenantWire,
};

use crate::endpoint::Endpoint;
use crate::lease::Lease;
use crate::pool::Pool;
use crate::routing::config::EndpointKind;
use crate::topology::Topology;

/// Tenants listed per pool: those running or waiting first, then the most served.
const MAX_TENANTS_LISTED: usize = 100;

/// The snapshot of `topology` as seen by the replica holding `lease`, up for `uptime`.
pub fn snapshot(topology: &Topology, lease: &Lease, uptime: Duration) -> StatusResponse {
    let leads = lease.is_leader();
    let role = match (lease.is_sole(), leads) {
        (true, _) => "sole",
        (false, true) => "leader",
        (false, false) => "standby",
    };
    let pools: Vec<PoolStatus> = topology
        .pools
        .values()
        .map(|pool| pool_status(pool))
        .collect();
    StatusResponse {
        role: role.to_owned(),
        serving: leads && topology.pools.values().any(|pool| pool.serving()),
        leader: lease.leader().unwrap_or_default(),
        models: topology
            .routes
            .public_models()
            .map(<[String]>::to_vec)
            .unwrap_or_default(),
        pools,
        uptime_ms: uptime.as_millis() as u64,
    }
}

fn pool_status(pool: &Pool) -> PoolStatus {
    let admission = pool.admission.status();
    let mut tenants: Vec<TenantWire> = admission
        .tenants
        .into_iter()
        .map(|(tenant, status)| TenantWire {
            tenant: tenant.to_string(),
            running: status.running,
            waiting: status.waiting,
            served_tokens: status.served_tokens,
        })
        .collect();
    // Those running or waiting now first (a new tenant has served nothing yet), then by use.
    tenants.sort_by(|a, b| {
        (b.running + b.waiting)
            .cmp(&(a.running + a.waiting))
            .then(b.served_tokens.cmp(&a.served_tokens))
            .then_with(|| a.tenant.cmp(&b.tenant))
    });
    tenants.truncate(MAX_TENANTS_LISTED);
    PoolStatus {
        name: pool.name.clone(),
        capacity: admission.capacity as u32,
        running: admission.running as u32,
        waiting: admission
            .waiting
            .iter()
            .map(|class| ClassWaiting {
                class: class.class.name().to_owned(),
                requests: class.requests as u32,
                tokens: class.tokens,
                oldest_wait_ms: class.oldest_wait.as_millis() as u64,
            })
            .collect(),
        endpoints: pool.endpoints.iter().map(|e| endpoint_status(e)).collect(),
        tenants,
    }
}

fn endpoint_status(endpoint: &Endpoint) -> EndpointStatus {
    EndpointStatus {
        name: without_credentials(endpoint.name()),
        kind: match endpoint.config.kind {
            EndpointKind::Ollama => "ollama",
            EndpointKind::Openai => "openai",
        }
        .to_owned(),
        up: endpoint.probe_ok(),
        breaker: endpoint.breaker.state_name().to_owned(),
        slots_declared: endpoint.config.slots.ceiling() as u32,
        slots: endpoint.slots() as u32,
        slots_source: endpoint.capacity.source().name().to_owned(),
        in_flight: endpoint.outstanding() as u32,
        ttft_ms: endpoint.ttft_estimate().as_millis() as u64,
        saturated: endpoint.capacity.saturated(),
        tpot_ms: endpoint
            .pace
            .decode_in_batch(endpoint.outstanding().max(1))
            .map_or(0, |pace| pace.as_millis() as u64),
    }
}

/// `kind@scheme://user:secret@host/…` without `user:secret@`: an endpoint URL may carry
/// credentials, and the status page is no place for them.
fn without_credentials(name: &str) -> String {
    let Some(scheme_end) = name.find("://").map(|at| at + 3) else {
        return name.to_owned();
    };
    let authority_end = name[scheme_end..]
        .find('/')
        .map_or(name.len(), |at| scheme_end + at);
    match name[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &name[..scheme_end], &name[scheme_end + at + 1..]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_an_endpoint_url_never_reach_the_page() {
        assert_eq!(
            without_credentials("openai@https://me:s3cret@engine:8000/v1"),
            "openai@https://engine:8000/v1"
        );
        assert_eq!(
            without_credentials("ollama@http://127.0.0.1:11434"),
            "ollama@http://127.0.0.1:11434"
        );
    }
}
