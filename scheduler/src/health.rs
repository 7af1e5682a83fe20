//! Active probes of every endpoint, driving endpoint availability, pool capacity and gRPC
//! health: the scheduler is SERVING while at least one pool can serve, so the gateway's
//! `/readyz` and container health checks tell the truth.

use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::scheduler_server::SchedulerServer;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::endpoint::Endpoint;
use crate::service::SchedulerService;
use crate::topology::Topologies;

/// Name under which the Scheduler service's health is reported.
pub const SCHEDULER_SERVICE: &str = <SchedulerServer<SchedulerService> as NamedService>::NAME;

/// Sets both the overall ("") and the Scheduler service's status.
pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SCHEDULER_SERVICE, status).await;
}

async fn probe(endpoint: Arc<Endpoint>, timeout: Duration) {
    let probe = async {
        endpoint.backend.probe().await?;
        endpoint.backend.loaded_models().await
    };
    let outcome = tokio::time::timeout(timeout, probe).await;
    let was_ok = endpoint.probe_ok();
    match outcome {
        Ok(Ok(loaded)) => endpoint.set_probe(true, Some(loaded)),
        Ok(Err(err)) => {
            if was_ok {
                tracing::warn!(endpoint = endpoint.name(), error = %err, "endpoint probe failed");
            }
            endpoint.set_probe(false, None);
        }
        Err(_) => {
            if was_ok {
                tracing::warn!(endpoint = endpoint.name(), "endpoint probe timed out");
            }
            endpoint.set_probe(false, None);
        }
    }
    if !was_ok && endpoint.probe_ok() {
        tracing::info!(
            endpoint = endpoint.name(),
            "endpoint answers its probe again"
        );
    }
}

/// Probes every endpoint of the current topology each `interval` (every 500 ms while nothing
/// can serve) until `shutdown`, then reports NOT_SERVING.
pub async fn run_probes(
    topologies: Arc<Topologies>,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        let topology = topologies.current();
        let probes = topology
            .pools
            .values()
            .flat_map(|pool| pool.endpoints.iter())
            .map(|endpoint| probe(Arc::clone(endpoint), interval.min(Duration::from_secs(2))));
        futures::future::join_all(probes).await;
        let mut any_up = false;
        for pool in topology.pools.values() {
            pool.refresh_capacity();
            any_up |= pool.capacity() > 0;
        }
        let status = if any_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(serving = any_up, "scheduler health changed");
            report(&reporter, status).await;
            last = Some(status);
        }
        let wait = if any_up {
            interval
        } else {
            interval.min(Duration::from_millis(500))
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}
