//! Active backend probes driving gRPC health: the scheduler is SERVING while at least one
//! pool's backend answers its probe, so the gateway's `/readyz` and container health checks
//! tell the truth about whether a request could be served.

use std::time::Duration;

use llmgw_proto::v1::scheduler_server::SchedulerServer;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::pool::Pools;
use crate::service::SchedulerService;

/// Name under which the Scheduler service's health is reported.
pub const SCHEDULER_SERVICE: &str = <SchedulerServer<SchedulerService> as NamedService>::NAME;

/// Sets both the overall ("") and the Scheduler service's status.
pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SCHEDULER_SERVICE, status).await;
}

/// Probes every pool's backend each `interval` until `shutdown`, then reports NOT_SERVING.
pub async fn run_probes(
    pools: Pools,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        let mut any_up = false;
        for pool in pools.all() {
            let probe =
                tokio::time::timeout(interval.min(Duration::from_secs(2)), pool.backend.probe());
            match probe.await {
                Ok(Ok(())) => any_up = true,
                Ok(Err(err)) => {
                    tracing::debug!(backend = pool.backend.name(), error = %err, "probe failed")
                }
                Err(_) => tracing::debug!(backend = pool.backend.name(), "probe timed out"),
            }
        }
        let status = if any_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            // Logged on change only, so a down backend does not flood the log.
            tracing::info!(serving = any_up, "backend health changed");
            report(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // While down, look again soon: readiness should follow a backend that comes up.
            _ = tokio::time::sleep(if any_up { interval } else { interval.min(Duration::from_millis(500)) }) => {}
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}
