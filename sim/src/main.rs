//! `llm-sim` binary: parse flags, serve until Ctrl-C / SIGTERM.

use clap::Parser;
use llm_sim::SimConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = llmgw_telemetry::init("llm-sim")?;
    let config = SimConfig::parse();
    let listener = TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, slots = config.slots, overflow = ?config.overflow,
        ttft_ms = config.ttft_ms, tpot_ms = config.tpot_ms, instant = config.instant,
        fault = ?config.fault, "llm-sim listening");
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        llmgw_telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    llm_sim::serve(listener, config, shutdown).await?;
    Ok(())
}
