//! [`serve`]: the scheduler as a library function, so tests run the real thing on port 0.

use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::scheduler_server::SchedulerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::lease::{self, Lease};
use crate::readiness::Readiness;
use crate::service::SchedulerService;
use crate::topology::Topologies;
use crate::{auth, health, metrics_server, reload};

/// Largest `ChatRequest` accepted over gRPC.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// Largest event sent (a non-streamed answer arrives as one delta).
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Why the scheduler could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the Scheduler, gRPC health and server reflection (v1 and v1alpha) on `listener`
/// until `shutdown` is cancelled; in-flight streams then get `shutdown_grace_ms` to finish.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let topologies = load(&config)?;
    serve_topologies(listener, config, topologies, shutdown).await
}

/// The topology `config` describes (reads `SCHEDULER_CONFIG` if set).
pub fn load(config: &Config) -> Result<Arc<Topologies>, ServeError> {
    config.validate().map_err(ServeError::Config)?;
    Topologies::load(config)
        .map(Arc::new)
        .map_err(ServeError::Config)
}

/// [`serve`] with a topology built by the caller, who may keep it to watch admission state
/// (tests, embedding) or reload it.
pub async fn serve_topologies(
    listener: TcpListener,
    config: Config,
    topologies: Arc<Topologies>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let tasks = TaskTracker::new();
    // Not serving until the first probe says a backend answers (and, with a lease, until this
    // replica leads its group).
    let readiness = Arc::new(Readiness::new(reporter, config.redis_url.is_none()).await);
    let lease = match config.lease() {
        None => Arc::new(Lease::sole()),
        Some(lease_config) => {
            let (lease, contending) =
                lease::start(lease_config, Arc::clone(&readiness), shutdown.clone())
                    .map_err(ServeError::Config)?;
            tasks.spawn(contending);
            lease
        }
    };
    let metrics_listener = TcpListener::bind(&config.metrics_listen)
        .await
        .map_err(|err| {
            ServeError::Config(format!(
                "SCHEDULER_METRICS_LISTEN {}: {err}",
                config.metrics_listen
            ))
        })?;
    tasks.spawn(metrics_server::serve(
        metrics_listener,
        Arc::clone(&topologies),
        shutdown.clone(),
    ));
    tasks.spawn(reload::watch(Arc::clone(&topologies), shutdown.clone()));
    if config.load_poll_ms > 0 {
        tasks.spawn(crate::load_poll::run(
            Arc::clone(&topologies),
            Duration::from_millis(config.load_poll_ms.max(50)),
            shutdown.clone(),
        ));
    }
    tasks.spawn(health::run_probes(
        Arc::clone(&topologies),
        readiness,
        config.probe_interval(),
        shutdown.clone(),
    ));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(llmgw_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl 1.8 and Python's grpcio-reflection only speak v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // The token guards the service and its schema; health stays open for container probes.
    let guard = auth::Guard::new(config.auth_token.clone());

    // Token frames are tiny: without TCP_NODELAY they would wait on delayed ACKs.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, guard.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, guard.clone()))
        .add_service(InterceptedService::new(
            SchedulerServer::new(SchedulerService::new(topologies, lease))
                // tonic's default of 4 MiB would refuse large prompts the gateway accepted
                // (GATEWAY_MAX_BODY_BYTES) as OUT_OF_RANGE.
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_ANSWER_BYTES),
            guard,
        ));
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let drain_deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        served = router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()) => served?,
        () = drain_deadline => tracing::warn!(grace_ms = config.shutdown_grace_ms, "drain grace period over; closing remaining streams"),
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}
