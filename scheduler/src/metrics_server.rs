//! `GET /metrics` on `SCHEDULER_METRICS_LISTEN`, separate from the gRPC port so Prometheus
//! scrapes plain HTTP.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::topology::Topologies;

/// What Prometheus negotiates for OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn render(State(topologies): State<Arc<Topologies>>) -> impl IntoResponse {
    let current = topologies.current();
    let text = topologies.metrics().render(current.pools.values());
    ([(header::CONTENT_TYPE, OPENMETRICS)], text)
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    topologies: Arc<Topologies>,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route("/metrics", get(render))
        .with_state(topologies);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(err) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %err, "metrics server stopped");
    }
}
