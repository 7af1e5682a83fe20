//! `POST /v1/chat/completions`, streaming and not.
//!
//! The HTTP status is decided by the scheduler's first *content* event: until then (queued,
//! admitted, backend connecting) any refusal or failure can still be an honest 4xx/5xx. After
//! it, failures end an SSE stream with an error event (never a hang, never a fake `[DONE]`).
//! Dropping the response (client gone) drops the gRPC stream, which frees the slot upstream.

mod open;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_telemetry::TraceContext;
use tokio::time::Instant;

use super::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::layers::{IncomingTrace, Observed, put};
use crate::metrics::GatewayMetrics;
use crate::translate::request::{ValidChat, parse};
use crate::translate::response::{Aggregate, ResponseMeta, SseTranslator};

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut observation = Observation {
        metrics: Arc::clone(&state.metrics),
        model: None,
        tenant: caller.metrics_tenant.clone(),
        received: Instant::now(),
        streaming: false,
    };
    let mut limit_headers = HeaderMap::new();
    let handled = handle(
        &state,
        &caller,
        body,
        &incoming,
        &mut observation,
        &mut limit_headers,
    )
    .await;
    let mut response = match handled {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    // The tenant's rate-limit state as of its reservation, on success and failure alike.
    response.headers_mut().extend(limit_headers);
    if let Some(model) = observation.model {
        response.extensions_mut().insert(Observed {
            model,
            streaming: observation.streaming,
        });
    }
    response
}

async fn handle(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    incoming: &TraceContext,
    observation: &mut Observation,
    limit_headers: &mut HeaderMap,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| body_error(rejection, state.config.max_body_bytes))?;
    let ValidChat {
        mut request,
        stream,
        include_usage,
    } = parse(&body)?;
    request.tenant = caller.tenant.clone();
    request.priority = caller.priority as i32;
    request.request_id = caller.request_id.clone();
    request.deadline_ms = state.config.request_timeout_ms;
    // Model allow-list, engine options, completion cap and the reservation against limits.
    let Admitted {
        mut reservation,
        headers,
    } = state.governance.admit_chat(caller, &mut request).await?;
    *limit_headers = headers;
    let model = request.model.clone();
    let meta = ResponseMeta::new(model.clone());
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", request.model.as_str());
    tracing::debug!(model = %request.model, stream, messages = request.messages.len(), "chat request");
    let rpc_span = open::rpc_span();
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    let commit_after = (stream && !keepalive.is_zero()).then_some(keepalive);
    let (events, opening) = open::open(
        state,
        request,
        incoming,
        &rpc_span,
        commit_after,
        &mut reservation,
    )
    .await?;
    let started = opening.started.clone();
    // The scheduler accepted the model name: from here on it may label metrics.
    observation.model = Some(model.clone());
    observation.streaming = stream;
    let mut response = if stream {
        stream::stream_response(
            SseTranslator::new(meta, include_usage),
            opening,
            events,
            keepalive,
            observation.clone(),
            (server_span, rpc_span),
            reservation,
        )
    } else {
        let collected = Collected {
            opening,
            events,
            reservation,
        };
        complete_response(meta, collected, &rpc_span, observation).await?
    };
    if let Some(started) = started {
        let headers = response.headers_mut();
        put(headers, "x-llmgw-queue-ms", &started.queue_ms.to_string());
        put(
            headers,
            "x-llmgw-backend",
            &crate::backend_label::public(&started.backend),
        );
    }
    Ok(response)
}

/// A non-streamed call once opened: what came before the first content event and the rest.
struct Collected {
    opening: open::Opening,
    events: tonic::Streaming<llmgw_proto::v1::ChatEvent>,
    reservation: Option<crate::governance::reservation::Reservation>,
}

/// A non-streamed answer: every event gathered into one `chat.completion`.
async fn complete_response(
    meta: ResponseMeta,
    collected: Collected,
    rpc_span: &tracing::Span,
    observation: &Observation,
) -> Result<Response, ApiError> {
    let Collected {
        opening,
        mut events,
        reservation,
    } = collected;
    let mut aggregate = Aggregate::new(meta);
    if let Some(first) = opening.first {
        aggregate.push(first);
    }
    while let Some(event) = events
        .message()
        .await
        .map_err(|status| open::record_rpc_failure(rpc_span, status))?
    {
        if let Some(event) = event.event {
            aggregate.push(event);
        }
    }
    rpc_span.record("rpc.grpc.status_code", 0);
    let completion = aggregate.finish()?;
    let usage = &completion.usage;
    if let Some(reservation) = reservation {
        reservation.finish(usage.prompt_tokens, usage.completion_tokens);
    }
    observation.metrics.tokens(
        &completion.model,
        &observation.tenant,
        usage.prompt_tokens,
        usage.completion_tokens,
    );
    tracing::info!(
        status = 200,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        elapsed_ms = observation.received.elapsed().as_millis() as u64,
        "chat completed"
    );
    Ok(Json(completion).into_response())
}

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::InvalidRequest {
            message: format!("cannot read request body: {rejection}"),
            param: None,
        }
    }
}

/// The route label of this endpoint.
pub(super) const ROUTE: &str = "/v1/chat/completions";

/// What metrics need to know about one request, filled in as it goes.
#[derive(Debug, Clone)]
pub(super) struct Observation {
    metrics: Arc<GatewayMetrics>,
    /// The requested model once the scheduler accepted it.
    model: Option<String>,
    tenant: String,
    received: Instant,
    /// The response is a stream: its duration is recorded when the stream ends.
    streaming: bool,
}
