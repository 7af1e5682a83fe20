//! `GET /healthz` (liveness: the process answers) and `GET /readyz` (readiness: a scheduler
//! reports SERVING, i.e. it leads its group and has a backend that can serve, and the gateway
//! is not shutting down).

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// Always `200 OK`.
pub async fn healthz() -> &'static str {
    "OK"
}

/// 200 while at least one scheduler's last health check said SERVING; 503 with the reason
/// otherwise, and from the moment a shutdown began. Answered from the state the gateway's
/// scheduler watch keeps (a health check every half second), so a probe costs no RPC.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down");
    }
    let targets = state.scheduler.targets();
    if targets.iter().any(|target| target.is_known_serving()) {
        return (StatusCode::OK, "ready");
    }
    let why = if targets.is_empty() {
        "not ready: no scheduler"
    } else if targets.iter().all(|target| !target.is_checked()) {
        "not ready: no scheduler health check has answered yet"
    } else {
        "not ready: no scheduler reports SERVING"
    };
    (StatusCode::SERVICE_UNAVAILABLE, why)
}
