//! `GET /healthz` (liveness: the process answers) and `GET /readyz` (readiness: the scheduler
//! answers gRPC health SERVING, i.e. it has a backend that can serve).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use super::AppState;

/// Always `200 OK`.
pub async fn healthz() -> &'static str {
    "OK"
}

/// 200 only while the scheduler reports SERVING; 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut health = state.scheduler.health();
    let check = health.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
            (StatusCode::OK, "ready".to_owned())
        }
        Ok(Ok(response)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: scheduler reports {}",
                response.get_ref().status().as_str_name()
            ),
        ),
        Ok(Err(status)) => {
            tracing::debug!(error = %status, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: scheduler unreachable".to_owned(),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: scheduler health check timed out".to_owned(),
        ),
    }
}
