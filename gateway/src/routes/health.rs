//! `GET /healthz` (liveness: the process answers) and `GET /readyz` (readiness: a scheduler
//! answers gRPC health SERVING, i.e. it leads its group and has a backend that can serve).

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

/// 200 while at least one scheduler reports SERVING (it leads its group and has a backend
/// that can serve); 503 with the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let checks = state.scheduler.targets().into_iter().map(|target| async move {
        let mut health = target.health();
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(response)) => Ok(response.get_ref().status()),
            Ok(Err(status)) => {
                tracing::debug!(scheduler = %target.address, error = %status, "readiness check failed");
                Err("unreachable")
            }
            Err(_) => Err("health check timed out"),
        }
    });
    let answers = futures::future::join_all(checks).await;
    if answers
        .iter()
        .any(|answer| matches!(answer, Ok(ServingStatus::Serving)))
    {
        return (StatusCode::OK, "ready".to_owned());
    }
    let why = match answers.first() {
        Some(Ok(status)) => format!("scheduler reports {}", status.as_str_name()),
        Some(Err(reason)) => format!("scheduler {reason}"),
        None => "no scheduler".to_owned(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
}
