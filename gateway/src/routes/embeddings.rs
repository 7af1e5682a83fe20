//! `POST /v1/embeddings`: governance (model allow-list, limits on the input tokens), one Embed
//! call to the scheduler — queued, admitted and routed like a chat, holding one of its pool's
//! slots while the engine computes — and OpenAI's `list` of vectors.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_proto::v1::chat_event::Event;
use llmgw_telemetry::TraceContext;

use super::AppState;
use super::call::{self, Call};
use super::gather;
use super::observation::Observation;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::governed::Governed;
use crate::layers::IncomingTrace;
use crate::translate::embedding::{ValidEmbedding, list, parse};

/// The route label of this endpoint.
const ROUTE: &str = "/v1/embeddings";

pub async fn embeddings(
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
    let ValidEmbedding {
        mut request,
        base64,
    } = parse(&body)?;
    request.stamp(caller, state.config.request_timeout_ms);
    let Admitted {
        mut reservation,
        headers,
    } = state.governance.admit(caller, &mut request).await?;
    observation.limit_headers = headers;
    let model = request.model.clone();
    tracing::Span::current().record("gen_ai.request.model", model.as_str());
    let rpc_span = call::rpc_span("Embed");
    let (mut events, opening) = call::open(
        state,
        Call::Embed(request),
        incoming,
        &rpc_span,
        None,
        &mut reservation,
    )
    .await?;
    let started = opening.started.clone();
    observation.model = Some(model.clone());
    let (mut vectors, mut usage) = (None, None);
    for event in gather::rest(opening, &mut events, &rpc_span, &mut reservation).await? {
        match event {
            Event::Embeddings(embeddings) => vectors = Some(embeddings.vectors),
            Event::Usage(reported) => usage = Some(reported.prompt_tokens),
            _ => {}
        }
    }
    let Some(vectors) = vectors else {
        return Err(ApiError::backend_interrupted());
    };
    let prompt_tokens = usage.unwrap_or(0);
    gather::settle(reservation, observation, &model, (prompt_tokens, 0)).await;
    let vectors = vectors.into_iter().map(|vector| vector.values).collect();
    let mut response = Json(list(&model, vectors, base64, prompt_tokens)).into_response();
    if let Some(started) = started {
        gather::started_headers(response.headers_mut(), &started);
    }
    Ok(response)
}
