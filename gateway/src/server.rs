//! [`serve`] and [`router`]: the gateway as a library function, so tests run the real thing on
//! port 0, or drive the router without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::GatewayMetrics;
use crate::routes::{AppState, chat_completions, health, metrics, models};
use crate::scheduler_client::SchedulerClients;

/// Why the gateway could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid SCHEDULER_URL: {0}")]
    SchedulerUrl(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The gateway's routes and layers for `config`.
pub fn router(config: &Config) -> Result<Router, ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let scheduler = SchedulerClients::connect_lazy(
        &config.scheduler_url,
        config.scheduler_connections,
        config.scheduler_connect_timeout(),
    )?;
    let state = AppState {
        scheduler,
        config: Arc::new(config.clone()),
        metrics: Arc::new(GatewayMetrics::new()),
    };
    Ok(Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions::chat_completions),
        )
        .route("/v1/models", get(models::list_models))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        // Layers, outermost last:
        // the body limit bounds memory per request before any parsing; over it is a 413.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state))
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// Serves the gateway on `listener` until `shutdown` is cancelled; in-flight requests then get
/// `shutdown_grace_ms` to finish.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    if config.config_file.is_none() {
        tracing::warn!(
            "GATEWAY_CONFIG is unset: open mode, no authentication; tenants and priorities come from headers"
        );
    }
    let app = router(&config)?;
    // Every accepted socket: token-sized SSE writes must not wait on Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let drain_deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    let serving = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    tokio::select! {
        served = serving => served?,
        () = drain_deadline => tracing::warn!(grace_ms = config.shutdown_grace_ms, "drain grace period over; closing remaining requests"),
    }
    Ok(())
}
