//! [`serve`] and [`router`]: the gateway as a library function, so tests run the real thing on
//! port 0, or drive the router without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::ApiError;
use crate::layers;
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
    let metrics = Arc::new(GatewayMetrics::new());
    let state = AppState {
        scheduler,
        config: Arc::new(config.clone()),
        metrics: Arc::clone(&metrics),
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
        // Layers, innermost first (each `.layer` wraps everything above it):
        // the body limit bounds memory per request before any parsing; over it is a 413.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        // the caller (tenant, priority) as an extension; a bad header is a 400 that still
        // passes through every layer below, so it is counted, traced and has its request id.
        .layer(middleware::from_fn(layers::caller))
        // every response counted by matched route and status, whole responses timed.
        .layer(middleware::from_fn_with_state(metrics, layers::observe))
        // the server span, child of the caller's trace context, around all of the above.
        .layer(middleware::from_fn(layers::server_span))
        // outermost, so the span and every response (even a 500 from a layer) carry it.
        .layer(middleware::from_fn(layers::request_id))
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
