//! `GET /healthz` (liveness: the process answers) and `GET /readyz` (readiness: a scheduler
//! reports SERVING, i.e. it leads its group and has a backend that can serve, and the gateway
//! is not shutting down).

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use crate::scheduler_client::Health;

/// Always `200 OK`.
pub async fn healthz() -> &'static str {
    "OK"
}

/// 200 while at least one scheduler's last health check said SERVING; 503 with the reason
/// otherwise, and from the moment a shutdown began. Answered from the state the gateway's
/// scheduler watch keeps (a health check every half second), so a probe costs no RPC.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    if state.stopping.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down".to_owned(),
        );
    }
    let targets = state.scheduler.targets();
    let health: Vec<Health> = targets.iter().map(|target| target.last_health()).collect();
    if health.contains(&Health::Serving) {
        return (StatusCode::OK, "ready".to_owned());
    }
    let why = health
        .iter()
        .find(|health| **health != Health::Unchecked)
        .or(health.first())
        .map_or("no scheduler", |health| health.describe());
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
}
