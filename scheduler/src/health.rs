//! Active probes of every endpoint, driving endpoint availability, pool capacity and one input
//! of gRPC health ([`Readiness`]): whether at least one pool can serve.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::readiness::Readiness;
use crate::topology::Topologies;

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

/// How long a probe may take: at least a second, so a backend busy with a burst of requests is
/// not taken for dead (a failed probe ejects an endpoint at once), and at most two.
fn probe_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(2))
}

/// Probes every endpoint of the current topology each `interval` (every 500 ms while nothing
/// can serve) until `shutdown`, then reports NOT_SERVING.
pub async fn run_probes(
    topologies: Arc<Topologies>,
    readiness: Arc<Readiness>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let topology = topologies.current();
        let probes = topology
            .pools
            .values()
            .flat_map(|pool| pool.endpoints.iter())
            .map(|endpoint| probe(Arc::clone(endpoint), probe_timeout(interval)));
        futures::future::join_all(probes).await;
        let mut any_up = false;
        for pool in topology.pools.values() {
            pool.refresh_capacity();
            any_up |= pool.capacity() > 0;
        }
        readiness.set_backends_up(any_up).await;
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
    readiness.stop().await;
}
