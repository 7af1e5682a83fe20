//! Polls each endpoint's own report of its load (`/metrics`, `/props`) every
//! `SCHEDULER_LOAD_POLL_MS` and applies it to its [`crate::capacity::Capacity`]: the slots it
//! runs, and whether it is saturated. A pool's capacity follows at once, so work the engine
//! cannot start waits in our queue, where classes, fairness and objectives decide. An engine
//! that answered no report [`QUIET_AFTER`] times in a row (Ollama, a hosted API) is asked only
//! every [`QUIET_EVERY`]th round.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::topology::Topologies;

/// Rounds without a report after which an endpoint is asked less often.
pub const QUIET_AFTER: u32 = 3;
/// How often a quiet endpoint is still asked (it may have gained `/metrics`).
pub const QUIET_EVERY: u64 = 30;

/// One report from `endpoint`, applied; whether there was one. A failure or an engine that
/// reports nothing changes nothing (the probe judges health).
async fn poll(endpoint: Arc<Endpoint>, pool: String, timeout: Duration) -> bool {
    let report = tokio::time::timeout(timeout, endpoint.backend.engine_load()).await;
    let Ok(Ok(Some(load))) = report else {
        endpoint.capacity.silent();
        return false;
    };
    if let Some(moved) = endpoint.capacity.apply(&load, endpoint.outstanding()) {
        tracing::info!(pool = %pool, endpoint = endpoint.name(), from = moved.from, to = moved.to,
            why = moved.why, "endpoint slots moved");
    }
    true
}

/// Polls every endpoint of the current topology each `interval` until `shutdown`.
pub async fn run(topologies: Arc<Topologies>, interval: Duration, shutdown: CancellationToken) {
    let timeout = interval.clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut round: u64 = 0;
    loop {
        round = round.wrapping_add(1);
        let topology = topologies.current();
        let polls = topology.pools.values().flat_map(|pool| {
            pool.endpoints
                .iter()
                .filter(|endpoint| endpoint.available())
                .filter(|endpoint| {
                    endpoint.capacity.silent_polls() < QUIET_AFTER
                        || round.is_multiple_of(QUIET_EVERY)
                })
                .map(|endpoint| poll(Arc::clone(endpoint), pool.name.clone(), timeout))
        });
        let reported = futures::future::join_all(polls).await;
        if reported.iter().any(|r| *r) {
            for pool in topology.pools.values() {
                pool.refresh_capacity();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
