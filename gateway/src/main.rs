//! `gateway` binary: parse config, serve until SIGTERM / Ctrl-C, or run `healthcheck`.

use std::time::Duration;

use clap::Parser;
use gateway::config::{Cli, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

// A faster allocator for the many small per-request allocations (measured in scripts/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = llmgw_telemetry::runtime::build(cli.config.worker_threads)?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Healthcheck) => return healthcheck(&cli.config.listen).await,
        Some(Command::HashKey { key }) => return hash_key(key),
        None => {}
    }
    let _telemetry = llmgw_telemetry::init("gateway")?;
    let config = cli.config;
    let listener = TcpListener::bind(&config.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        scheduler_url = %config.scheduler_url,
        scheduler_connections = config.scheduler_connections,
        max_body_bytes = config.max_body_bytes,
        request_timeout_ms = config.request_timeout_ms,
        "gateway listening"
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    // Lives for the whole process; it only cancels the token.
    tokio::spawn(async move {
        llmgw_telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    gateway::serve(listener, config, shutdown).await?;
    Ok(())
}

/// Prints the hash to put in `[[key]] sha256`; the key itself goes nowhere else.
fn hash_key(key: Option<String>) -> anyhow::Result<()> {
    let key = match key.filter(|k| k != "-") {
        Some(key) => key,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(!key.trim().is_empty(), "the key must not be empty");
    println!(
        "{}",
        gateway::governance::keys::hex(&gateway::governance::keys::hash(key.trim()))
    );
    Ok(())
}

/// `GET /healthz` over a raw socket: slim images have no curl.
async fn healthcheck(listen: &str) -> anyhow::Result<()> {
    let port = listen.rsplit(':').next().unwrap_or("8080");
    let check = async {
        let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(3), check).await??;
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        anyhow::bail!("gateway /healthz did not answer 200")
    }
}
