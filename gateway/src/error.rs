//! [`ApiError`]: everything that can go wrong with a request, rendered as OpenAI's error
//! envelope with the right status, `x-llmgw-reason`, and `Retry-After` on refusals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

use crate::openai::response::{ErrorBody, ErrorEnvelope};
use crate::status_table::http_status;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message names the field.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The body exceeds the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// No such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The scheduler refused or failed the call (or could not be reached).
    #[error("scheduler: {}", .0.message())]
    Scheduler(tonic::Status),
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The scheduler's stream ended without a finish event: the generation was cut short.
    pub fn backend_interrupted() -> Self {
        let mut status =
            tonic::Status::unknown("backend stream ended before the generation finished");
        status.metadata_mut().insert(
            "x-llmgw-reason",
            tonic::metadata::MetadataValue::from_static("backend_interrupted"),
        );
        Self::Scheduler(status)
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::Scheduler(status) => http_status(status.code()),
        }
    }

    /// Stable snake_case reason (the `x-llmgw-reason` header and the error `code`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::RouteNotFound(_) => "route_not_found",
            Self::Scheduler(status) => scheduler_reason(status),
        }
    }

    fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            Self::Scheduler(status) => status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| HeaderValue::from_str(v).ok()),
            Self::InvalidRequest { .. } | Self::BodyTooLarge { .. } | Self::RouteNotFound(_) => {
                None
            }
        }
    }

    /// What the client is told. Server-side failures say what failed, not the internals
    /// (URLs, addresses); those stay in the log.
    fn client_message(&self) -> String {
        let Self::Scheduler(status) = self else {
            return self.to_string();
        };
        let fixed = match scheduler_reason(status) {
            "queue_full" => "Too many requests are waiting for this model; retry later",
            "displaced" => {
                "A higher-priority request took this request's place in the queue; retry later"
            }
            "queue_timeout" => "No capacity became free in time; retry later",
            "deadline_exceeded" => "The request did not finish within its deadline",
            "connect_timeout" => "The model backend did not answer in time",
            "ttft_timeout" => "The model backend produced no first token in time",
            "idle_timeout" => "The model backend stopped producing tokens",
            "total_timeout" => "The generation exceeded the model's time limit",
            "no_healthy_backend" => "No healthy backend can serve this model right now",
            "backend_unavailable" => "The model backend is unreachable",
            "backend_overloaded" => "The model backend is overloaded",
            "backend_error" => "The model backend returned an error",
            "backend_bad_response" => "The model backend sent an invalid response",
            "backend_interrupted" => "The model backend's stream was interrupted",
            "scheduler_unavailable" => "The scheduler is unavailable",
            "shutting_down" => "The scheduler is shutting down; retry shortly",
            _ if status.code() == Code::NotFound => "The model does not exist",
            _ if self.status().is_client_error() => return status.message().to_owned(),
            _ => "The scheduler failed to serve the request",
        };
        fixed.to_owned()
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            Self::Scheduler(status) if status.code() == Code::NotFound => Some("model".to_owned()),
            Self::BodyTooLarge { .. } | Self::RouteNotFound(_) | Self::Scheduler(_) => None,
        }
    }

    /// The error envelope, for SSE error events and responses alike.
    pub fn envelope(&self) -> ErrorEnvelope {
        let status = self.status();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 if matches!(self, Self::Scheduler(_)) => "invalid_request_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        ErrorEnvelope {
            error: ErrorBody {
                message: self.client_message(),
                kind,
                param: self.param(),
                code: Some(self.reason()),
            },
        }
    }
}

/// The scheduler's reason metadata; for transport failures (no metadata) a reason by code.
fn scheduler_reason(status: &tonic::Status) -> &'static str {
    let sent = status
        .metadata()
        .get("x-llmgw-reason")
        .and_then(|v| v.to_str().ok());
    if let Some(known) = sent.and_then(|s| llmgw_proto::REASONS.iter().find(|k| **k == s)) {
        return known;
    }
    match status.code() {
        Code::Unavailable => "scheduler_unavailable",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "model_not_found",
        Code::InvalidArgument => "invalid_request",
        Code::Cancelled => "cancelled",
        _ => "scheduler_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), reason = self.reason(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), reason = self.reason(), error = %self, "request refused");
        }
        let retry_after = self.retry_after();
        let reason = self.reason();
        let mut response = (status, Json(self.envelope())).into_response();
        let headers = response.headers_mut();
        headers.insert("x-llmgw-reason", HeaderValue::from_static(reason));
        if let Some(retry_after) = retry_after {
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn queue_full_becomes_429_with_retry_after_and_reason() {
        let mut status = tonic::Status::resource_exhausted("queue of pool `default` is full");
        status
            .metadata_mut()
            .insert("x-llmgw-reason", MetadataValue::from_static("queue_full"));
        status
            .metadata_mut()
            .insert("retry-after", MetadataValue::from_static("3"));
        let response = ApiError::Scheduler(status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.headers()["x-llmgw-reason"], "queue_full");
    }

    #[test]
    fn server_side_messages_do_not_leak_internals() {
        let status =
            tonic::Status::unavailable("tcp connect error: 127.0.0.1:50051: Connection refused");
        let error = ApiError::Scheduler(status);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let envelope = error.envelope();
        assert_eq!(envelope.error.message, "The scheduler is unavailable");
        assert_eq!(envelope.error.code, Some("scheduler_unavailable"));
        assert_eq!(envelope.error.kind, "server_error");
    }
}
