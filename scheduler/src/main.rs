//! `scheduler` binary: parse config, serve until SIGTERM / Ctrl-C, or run `healthcheck`.

use std::time::Duration;

use clap::Parser;
use scheduler::config::{Cli, Command};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

// A faster allocator for the many small per-request allocations (measured in scripts/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = llmgw_telemetry::runtime::build(cli.config.worker_threads)?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck(&cli.config.listen).await;
    }
    let _telemetry = llmgw_telemetry::init("scheduler")?;
    let config = cli.config;
    let wanted = tokio::net::lookup_host(&config.listen)
        .await?
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "SCHEDULER_LISTEN `{}` resolves to no address",
                config.listen
            )
        })?;
    let (address, confined) = config.confine(wanted);
    if confined {
        tracing::warn!(
            requested = %wanted,
            listening = %address,
            "SCHEDULER_AUTH_TOKEN is unset: listening on loopback only; set the token (and the same on every gateway), or SCHEDULER_ALLOW_UNAUTHENTICATED=true to serve the requested address without one"
        );
    } else if config.auth_token.is_none() && !wanted.ip().is_loopback() {
        tracing::warn!(
            listening = %address,
            "SCHEDULER_ALLOW_UNAUTHENTICATED=true: serving without a token; anyone who reaches this port may name any tenant and priority"
        );
    }
    let listener = TcpListener::bind(address).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        ollama_base = %config.ollama_base,
        max_concurrency = config.max_concurrency,
        max_queue = config.max_queue,
        queue_timeout_ms = config.queue_timeout_ms,
        "scheduler listening"
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    // Lives for the whole process; it only cancels the token.
    tokio::spawn(async move {
        llmgw_telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    scheduler::serve(listener, config, shutdown).await?;
    Ok(())
}

async fn healthcheck(listen: &str) -> anyhow::Result<()> {
    let port = listen.rsplit(':').next().unwrap_or("50051");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let mut client = HealthClient::new(endpoint.connect().await?);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    if response.status() == ServingStatus::Serving {
        Ok(())
    } else {
        anyhow::bail!("scheduler is {:?}", response.status())
    }
}
