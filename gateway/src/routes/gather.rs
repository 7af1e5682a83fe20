//! A non-streamed answer, for every route: the call's events read to the end, then the
//! settlement once the route has built its body — the reservation charged with what was used,
//! token metrics, and the request's one log line.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatEvent, Started};
use tonic::Streaming;

use super::call::{Opening, record_rpc_failure};
use super::observation::Observation;
use crate::edge::body::BodyError;
use crate::error::ApiError;
use crate::governance::reservation::Reservation;
use crate::layers::put;

/// Every event after the opening, in order (the opening's first content event first); the
/// reservation learns whether the engine reported the prompt's tokens.
pub(crate) async fn rest(
    opening: Opening,
    events: &mut Streaming<ChatEvent>,
    rpc_span: &tracing::Span,
    reservation: &mut Option<Reservation>,
) -> Result<Vec<Event>, ApiError> {
    let mut all: Vec<Event> = opening.first.into_iter().collect();
    while let Some(event) = events
        .message()
        .await
        .map_err(|status| record_rpc_failure(rpc_span, status))?
    {
        all.extend(event.event);
    }
    if let Some(reservation) = reservation {
        for event in &all {
            if let Event::Usage(usage) = event {
                reservation.usage_seen(usage);
            }
        }
    }
    rpc_span.record("rpc.grpc.status_code", 0);
    Ok(all)
}

/// Charges a finished answer's usage — the reservation (awaited: before the answer goes
/// out), the token metrics, the log line.
pub(crate) async fn settle(
    reservation: Option<Reservation>,
    observation: &Observation,
    model: &str,
    (prompt_tokens, completion_tokens): (u32, u32),
) {
    if let Some(reservation) = reservation {
        reservation.finish(prompt_tokens, completion_tokens).await;
    }
    observation
        .metrics
        .tokens(model, &observation.tenant, prompt_tokens, completion_tokens);
    tracing::info!(
        status = 200,
        prompt_tokens,
        completion_tokens,
        elapsed_ms = observation.received.elapsed().as_millis() as u64,
        "request completed"
    );
}

/// The headers that explain where an answer ran: time queued, the first-token time admission
/// predicted, the endpoint's label and how many requests it takes at once (with where that
/// number comes from), and the model that served it (the one asked for, or a fallback).
pub(crate) fn started_headers(headers: &mut HeaderMap, started: &Started) {
    put(headers, "x-llmgw-queue-ms", &started.queue_ms.to_string());
    if started.predicted_ttft_ms > 0 {
        put(
            headers,
            "x-llmgw-predicted-ttft-ms",
            &started.predicted_ttft_ms.to_string(),
        );
    }
    if !started.served_model.is_empty() {
        put(headers, "x-llmgw-model", &started.served_model);
    }
    put(
        headers,
        "x-llmgw-backend",
        &crate::backend_label::public(&started.backend),
    );
    if started.endpoint_slots > 0 {
        put(
            headers,
            "x-llmgw-endpoint-slots",
            &format!(
                "{}; source={}",
                started.endpoint_slots, started.slots_source
            ),
        );
    }
}

/// The error for a body that could not be read: over the limit (413), too slow (408), over
/// the gateway's body memory (503), or broken (400).
pub(crate) fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::BodyTooLarge { limit };
    }
    match BodyError::find(&rejection) {
        Some(error) => error.to_api_error(),
        None => ApiError::InvalidRequest {
            message: format!("cannot read request body: {rejection}"),
            param: None,
        },
    }
}

/// The body as bytes, or its error.
pub(crate) fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| body_error(rejection, limit))
}
