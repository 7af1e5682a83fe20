//! [`ApiError`]: everything that can go wrong with a request, rendered as OpenAI's error
//! envelope with the right status, `x-llmgw-reason`, and `Retry-After` on refusals.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llmgw_proto::{REASON_METADATA, Reason};
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
    /// Governance said no: key, permission, rate limit, budget, or the limit store is down.
    #[error("{}", .0.message)]
    Refused(Box<Refusal>),
}

/// A refusal the gateway decided itself, with everything its response carries.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: Reason,
    /// Safe to show: never echoes a key.
    pub message: String,
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
    /// Extra headers (rate-limit state).
    pub headers: HeaderMap,
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
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(Reason::BackendInterrupted.as_str()),
        );
        Self::Scheduler(status)
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::Scheduler(status) if scheduler_reason(status) == Reason::SchedulerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Scheduler(status) => http_status(status.code()),
            Self::Refused(refusal) => refusal.status,
        }
    }

    /// Stable reason (the `x-llmgw-reason` header and the error `code`).
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidRequest { .. } => Reason::InvalidRequest,
            Self::BodyTooLarge { .. } => Reason::BodyTooLarge,
            Self::RouteNotFound(_) => Reason::RouteNotFound,
            Self::Scheduler(status) => scheduler_reason(status),
            Self::Refused(refusal) => refusal.reason,
        }
    }

    fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            Self::Scheduler(status) => status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| HeaderValue::from_str(v).ok()),
            Self::Refused(refusal) => refusal
                .retry_after_s
                .and_then(|s| HeaderValue::from_str(&s.to_string()).ok()),
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
        match scheduler_message(scheduler_reason(status)) {
            Said::Fixed(message) => message.to_owned(),
            Said::Theirs => status.message().to_owned(),
            Said::Objective if self.param().as_deref() == Some("x-slo-tpot-ms") => {
                "The time-per-output-token objective cannot be met now: the engine is predicted to take longer per token in the batch this request would join; retry after Retry-After or relax x-slo-tpot-ms".to_owned()
            }
            Said::Objective => {
                "The first-token objective cannot be met now: the work queued ahead is predicted to take longer; retry after Retry-After or relax x-slo-ttft-ms".to_owned()
            }
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            Self::Scheduler(status) if status.code() == Code::NotFound => Some("model".to_owned()),
            Self::Scheduler(status) if status.code() == Code::InvalidArgument => {
                scheduler_param(status).map(str::to_owned)
            }
            // An objective refusal names the objective's header, and only that.
            Self::Scheduler(status) if scheduler_reason(status) == Reason::SloUnattainable => {
                scheduler_param(status)
                    .filter(|header| OBJECTIVE_HEADERS.contains(header))
                    .map(str::to_owned)
            }
            Self::Refused(refusal) => refusal.param.clone(),
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
                code: Some(self.reason().as_str()),
            },
        }
    }
}

/// What the client is told about a scheduler-side reason.
enum Said {
    /// A fixed sentence that says what failed without internals.
    Fixed(&'static str),
    /// The scheduler's own message: the client's mistake, naming the field.
    Theirs,
    /// The objective named by the refusal's `param` could not be met.
    Objective,
}

/// The message table: every reason has an entry, so a new reason forces a decision here.
fn scheduler_message(reason: Reason) -> Said {
    Said::Fixed(match reason {
        Reason::InvalidRequest
        | Reason::BodyTooLarge
        | Reason::BodyTimeout
        | Reason::RouteNotFound
        | Reason::BackendRejected
        | Reason::OptionNotAllowed => return Said::Theirs,
        Reason::ModelNotFound => "The model does not exist",
        Reason::InvalidApiKey | Reason::Unauthenticated => {
            "The gateway's scheduler token was refused"
        }
        Reason::ModelNotAllowed => "This key may not use this model",
        Reason::PriorityNotAllowed => "This key may not ask for this priority",
        Reason::AdminRequired => "The status page needs an admin key",
        Reason::RateLimited => "A rate limit was reached; retry later",
        Reason::BudgetExhausted => "The token budget is spent",
        Reason::LimitsUnavailable => "Rate limits cannot be checked right now; retry shortly",
        Reason::StoreUnavailable => "Stored responses cannot be read right now; retry shortly",
        Reason::GatewayOverloaded => {
            "The gateway is at its limit of requests in flight; retry shortly"
        }
        Reason::QueueFull => "Too many requests are waiting for this model; retry later",
        Reason::Displaced => {
            "A higher-priority request took this request's place in the queue; retry later"
        }
        Reason::QueueTimeout => "No capacity became free in time; retry later",
        Reason::SloUnattainable => return Said::Objective,
        Reason::PromptTooHeavy => {
            "The prompt is too long for the model's first-token time limit; shorten it or ask the operator to raise the limit"
        }
        Reason::DeadlineExceeded => "The request did not finish within its deadline",
        Reason::ConnectTimeout => "The model backend did not answer in time",
        Reason::TtftTimeout => "The model backend produced no first token in time",
        Reason::IdleTimeout => "The model backend stopped producing tokens",
        Reason::TotalTimeout => "The generation exceeded the model's time limit",
        Reason::NoHealthyBackend => "No healthy backend can serve this model right now",
        Reason::BackendUnavailable => "The model backend is unreachable",
        Reason::BackendOverloaded => "The model backend is overloaded",
        Reason::BackendError => "The model backend returned an error",
        Reason::BackendBadResponse => "The model backend sent an invalid response",
        Reason::BackendInterrupted => "The model backend's stream was interrupted",
        Reason::SchedulerUnavailable => "The scheduler is unavailable",
        Reason::ShuttingDown => "The scheduler is shutting down; retry shortly",
        Reason::NotLeader => "The scheduler replica is standing by for another; retry shortly",
        Reason::SchedulerError => "The scheduler failed to serve the request",
        Reason::Cancelled => "The request was cancelled",
    })
}

/// The request headers that carry objectives.
const OBJECTIVE_HEADERS: [&str; 2] = ["x-slo-ttft-ms", "x-slo-tpot-ms"];

/// The field the scheduler's refusal names, if any.
fn scheduler_param(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(llmgw_proto::PARAM_METADATA)
        .and_then(|value| value.to_str().ok())
}

/// The scheduler's reason metadata; for transport failures (no metadata) a reason by code.
fn scheduler_reason(status: &tonic::Status) -> Reason {
    let sent = status
        .metadata()
        .get(REASON_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|word| word.parse::<Reason>().ok());
    if let Some(known) = sent {
        return known;
    }
    match status.code() {
        // Without a reason the scheduler never answered as itself: its connection failed or
        // broke (an h2 error mid-stream is reported as UNKNOWN, a connection reset by a killed
        // scheduler sometimes as CANCELLED). The client is still here to read this, so it
        // did not cancel.
        Code::Unavailable | Code::Unknown | Code::Cancelled => Reason::SchedulerUnavailable,
        Code::DeadlineExceeded => Reason::DeadlineExceeded,
        Code::NotFound => Reason::ModelNotFound,
        Code::InvalidArgument => Reason::InvalidRequest,
        Code::Unauthenticated => Reason::Unauthenticated,
        _ => Reason::SchedulerError,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), reason = self.reason().as_str(), error = %self, "request failed");
        } else {
            tracing::info!(
                status = status.as_u16(),
                reason = self.reason().as_str(),
                "request refused"
            );
        }
        let retry_after = self.retry_after();
        let reason = self.reason();
        let envelope = self.envelope();
        let extra = match self {
            Self::Refused(refusal) => refusal.headers,
            Self::InvalidRequest { .. }
            | Self::BodyTooLarge { .. }
            | Self::RouteNotFound(_)
            | Self::Scheduler(_) => HeaderMap::new(),
        };
        let mut response = (status, Json(envelope)).into_response();
        let headers = response.headers_mut();
        headers.extend(extra);
        headers.insert(REASON_METADATA, HeaderValue::from_static(reason.as_str()));
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

    #[test]
    fn a_cancelled_call_without_a_reason_is_a_broken_scheduler_connection() {
        // A SIGKILLed scheduler's connection reset can surface as CANCELLED: the client is
        // still waiting, so it is the scheduler that is gone (503), not a 499.
        let error = ApiError::Scheduler(tonic::Status::cancelled("operation was canceled"));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.reason(), Reason::SchedulerUnavailable);
    }

    #[test]
    fn every_reason_the_scheduler_sends_survives_the_trip() {
        for reason in Reason::ALL {
            let mut status = tonic::Status::unavailable("x");
            status
                .metadata_mut()
                .insert(REASON_METADATA, MetadataValue::from_static(reason.as_str()));
            let error = ApiError::Scheduler(status);
            assert_eq!(error.reason(), *reason);
            assert!(!error.envelope().error.message.is_empty());
        }
    }
}
