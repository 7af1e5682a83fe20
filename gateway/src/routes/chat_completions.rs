//! `POST /v1/chat/completions`, streaming and not.
//!
//! The HTTP status is decided by the scheduler's first *content* event: until then (queued,
//! admitted, backend connecting) any refusal or failure can still be an honest 4xx/5xx. After
//! it, failures end an SSE stream with an error event (never a hang, never a fake `[DONE]`).
//! Dropping the response (client gone) drops the gRPC stream, which frees the slot upstream.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_telemetry::TraceContext;

use super::AppState;
use super::call::{self as open, Call};
use super::observation::Observation;
use super::{gather, stream};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::governed::Governed;
use crate::layers::IncomingTrace;
use crate::translate::request::{ValidChat, parse};
use crate::translate::response::{Aggregate, ResponseMeta, SseTranslator};

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut observation = Observation::new(&state, &caller, ROUTE);
    let handled = handle(&state, &caller, body, &incoming, &mut observation).await;
    observation.respond(handled)
}

async fn handle(
    state: &AppState,
    caller: &Caller,
    body: Result<Bytes, BytesRejection>,
    incoming: &TraceContext,
    observation: &mut Observation,
) -> Result<Response, ApiError> {
    let body = gather::body(body, state.config.max_body_bytes)?;
    let ValidChat {
        mut request,
        stream,
        include_usage,
    } = parse(&body)?;
    request.stamp(caller, state.config.request_timeout_ms);
    // Model allow-list, engine options, completion cap and the reservation against limits.
    let Admitted {
        mut reservation,
        headers,
    } = state.governance.admit(caller, &mut request).await?;
    observation.limit_headers = headers;
    let model = request.model.clone();
    let meta = ResponseMeta::new(model.clone());
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", request.model.as_str());
    tracing::debug!(model = %request.model, stream, messages = request.messages.len(), "chat request");
    let rpc_span = open::rpc_span("Chat");
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    let commit_after = (stream && !keepalive.is_zero()).then_some(keepalive);
    let (events, opening) = open::open(
        state,
        Call::Chat(request),
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
        let mut events = events;
        let mut aggregate = Aggregate::new(meta);
        for event in gather::rest(opening, &mut events, &rpc_span, &mut reservation).await? {
            aggregate.push(event);
        }
        let completion = aggregate.finish()?;
        let usage = completion.usage;
        gather::settle(
            reservation,
            observation,
            &model,
            (usage.prompt_tokens, usage.completion_tokens),
        )
        .await;
        Json(completion).into_response()
    };
    if let Some(started) = started {
        gather::started_headers(response.headers_mut(), &started);
    }
    Ok(response)
}

/// The route label of this endpoint.
const ROUTE: &str = "/v1/chat/completions";
