//! `POST /v1/completions` (legacy text completions), streaming and not: the same path as chat —
//! governance, one Complete call to the scheduler, the status decided by its first content
//! event — with `text_completion` shapes.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_telemetry::TraceContext;

use super::AppState;
use super::call::{self, Call};
use super::observation::Observation;
use super::{gather, stream};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::governed::Governed;
use crate::layers::IncomingTrace;
use crate::translate::completion::{TextStream, ValidCompletion, meta, parse, whole};
use crate::translate::response::Aggregate;

/// The route label of this endpoint.
const ROUTE: &str = "/v1/completions";

pub async fn completions(
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
    let ValidCompletion {
        mut request,
        stream,
        include_usage,
    } = parse(&body)?;
    request.stamp(caller, state.config.request_timeout_ms);
    let Admitted {
        mut reservation,
        headers,
    } = state.governance.admit(caller, &mut request).await?;
    observation.limit_headers = headers;
    let model = request.model.clone();
    let meta = meta(model.clone());
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", model.as_str());
    let rpc_span = call::rpc_span("Complete");
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    let commit_after = (stream && !keepalive.is_zero()).then_some(keepalive);
    let (mut events, opening) = call::open(
        state,
        Call::Complete(request),
        incoming,
        &rpc_span,
        commit_after,
        &mut reservation,
    )
    .await?;
    let started = opening.started.clone();
    observation.model = Some(model.clone());
    observation.streaming = stream;
    let mut response = if stream {
        stream::stream_response(
            TextStream::new(meta, include_usage),
            opening,
            events,
            keepalive,
            observation.clone(),
            (server_span, rpc_span),
            reservation,
        )
    } else {
        let mut aggregate = Aggregate::new(meta.clone());
        for event in gather::rest(opening, &mut events, &rpc_span, &mut reservation).await? {
            aggregate.push(event);
        }
        let (answer, usage) = aggregate.whole()?;
        gather::settle(
            reservation,
            observation,
            &model,
            (usage.prompt_tokens, usage.completion_tokens),
        )
        .await;
        Json(whole(&meta, &answer.content, &answer.finish_reason, usage)).into_response()
    };
    if let Some(started) = started {
        gather::started_headers(response.headers_mut(), &started);
    }
    Ok(response)
}
