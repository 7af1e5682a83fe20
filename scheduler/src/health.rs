//! Active probes of every endpoint, driving endpoint availability, pool capacity and one input
//! of gRPC health ([`Readiness`]): whether at least one pool can serve.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::readiness::Readiness;
use crate::topology::Topologies;

/// Probes one endpoint within `timeout`; `window` is how recent output must be for a timeout
/// to read as "busy".
async fn probe(endpoint: Arc<Endpoint>, timeout: Duration, window: Duration) {
    let busy_before = endpoint.outstanding() > 0;
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
        // Some engines (llama-cpp-python's server) answer nothing, not even their model list,
        // while they generate. A probe that times out while the endpoint serves our requests
        // and their output is flowing says "busy", not "dead": ejecting it would refuse the
        // next request with `no_healthy_backend` just as the engine frees up. Without output
        // in `window` (an engine that accepts requests but never answers) the timeout ejects
        // as before; refused connections and errors eject at once.
        Err(_) if (busy_before || endpoint.outstanding() > 0) && endpoint.output_within(window) => {
            tracing::debug!(
                endpoint = endpoint.name(),
                in_flight = endpoint.outstanding(),
                "endpoint probe timed out while it serves requests; state kept"
            );
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
            .map(|endpoint| {
                let timeout = probe_timeout(interval);
                probe(Arc::clone(endpoint), timeout, interval + timeout)
            });
        futures::future::join_all(probes).await;
        let mut any_up = false;
        for pool in topology.pools.values() {
            pool.refresh_capacity();
            any_up |= pool.serving();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendError, EventStream, SendGate};
    use crate::routing::config::{BreakerConfig, EndpointConfig, EndpointKind};
    use crate::work::Work;
    use futures::future::BoxFuture;

    /// An engine that answers no probe at all (busy generating, or hung).
    #[derive(Debug)]
    struct Unanswering;

    impl Backend for Unanswering {
        fn name(&self) -> &str {
            "unanswering"
        }
        fn call(
            &self,
            _work: Work,
            _trace: http::HeaderMap,
            _gate: SendGate,
        ) -> BoxFuture<'static, Result<EventStream, BackendError>> {
            Box::pin(futures::future::pending())
        }
        fn provider(&self) -> &'static str {
            "test"
        }
        fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
            Box::pin(futures::future::pending())
        }
    }

    fn endpoint() -> Arc<Endpoint> {
        let config = EndpointConfig {
            url: "http://127.0.0.1:9".into(),
            kind: EndpointKind::Openai,
            slots: crate::routing::config::Slots::Fixed(1),
            api_key_env: None,
            schema_format: Default::default(),
        };
        let breaker = BreakerConfig {
            failures: 1,
            open_ms: 1000,
        };
        Arc::new(Endpoint::new(config, Arc::new(Unanswering), breaker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_timing_out_while_output_flows_keeps_the_endpoint_in() {
        let (timeout, window) = (Duration::from_secs(1), Duration::from_secs(3));
        let serving = endpoint();
        let in_flight = serving.begin();
        serving.record_output();
        probe(Arc::clone(&serving), timeout, window).await;
        assert!(serving.probe_ok(), "busy is not dead");
        drop(in_flight);
        probe(Arc::clone(&serving), timeout, window).await;
        assert!(!serving.probe_ok(), "silent and idle is dead");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_takes_requests_but_gives_no_output_is_taken_out() {
        let (timeout, window) = (Duration::from_secs(1), Duration::from_secs(3));
        let hung = endpoint();
        let _in_flight = hung.begin();
        probe(Arc::clone(&hung), timeout, window).await;
        assert!(!hung.probe_ok(), "never any output");
        hung.set_probe(true, None);
        hung.record_output();
        tokio::time::advance(Duration::from_secs(5)).await;
        probe(Arc::clone(&hung), timeout, window).await;
        assert!(!hung.probe_ok(), "no output for longer than the window");
    }
}
