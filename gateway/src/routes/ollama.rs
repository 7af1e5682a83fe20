//! Ollama's native API at the edge — `POST /api/chat`, `/api/generate`, `/api/embed` (and the
//! older `/api/embeddings`) — through the same path as the OpenAI routes: keys (a Bearer
//! header), tenants, limits, the scheduler's queue, routing, fallbacks and traces. Answers are
//! Ollama's own shapes: NDJSON streams (Ollama's default) or one object.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmgw_proto::v1::chat_event::Event;
use llmgw_telemetry::TraceContext;
use serde_json::{Value, json};

use super::AppState;
use super::call::{self, Call};
use super::observation::Observation;
use super::{gather, stream};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::governance::Admitted;
use crate::governance::governed::Governed as _;
use crate::layers::IncomingTrace;
use crate::translate::ollama_request::{self, OllamaChat, OllamaGenerate};
use crate::translate::ollama_response::{
    Endpoint, NdjsonStream, Totals, object, ollama_done_reason,
};
use crate::translate::response::{Aggregate, ResponseMeta};

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut observation = Observation::new(&state, &caller, "/api/chat");
    let handled = async {
        let body = gather::body(body, state.config.max_body_bytes)?;
        let OllamaChat {
            mut request,
            stream,
        } = ollama_request::chat(&body)?;
        request.stamp(&caller, state.config.request_timeout_ms);
        let admitted = state.governance.admit(&caller, &mut request).await?;
        let model = request.model.clone();
        let call = Admissible {
            call: Call::Chat(request),
            method: "Chat",
            admitted,
        };
        generate_or_chat(
            &state,
            call,
            Endpoint::Chat,
            (model, stream),
            &incoming,
            &mut observation,
        )
        .await
    }
    .await;
    observation.respond(handled)
}

/// `POST /api/generate`. An empty prompt is Ollama's "load the model": answered at once.
pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut observation = Observation::new(&state, &caller, "/api/generate");
    let handled = async {
        let body = gather::body(body, state.config.max_body_bytes)?;
        let OllamaGenerate {
            mut request,
            stream,
        } = ollama_request::generate(&body)?;
        request.stamp(&caller, state.config.request_timeout_ms);
        let admitted = state.governance.admit(&caller, &mut request).await?;
        if request.prompt.is_empty() && request.suffix.is_empty() {
            observation.limit_headers = admitted.headers;
            return load(&state, &request.model).await;
        }
        let model = request.model.clone();
        let call = Admissible {
            call: Call::Complete(request),
            method: "Complete",
            admitted,
        };
        generate_or_chat(
            &state,
            call,
            Endpoint::Generate,
            (model, stream),
            &incoming,
            &mut observation,
        )
        .await
    }
    .await;
    observation.respond(handled)
}

/// Ollama's "load the model" (an empty prompt), answered by the gateway once governance let
/// it through (the schedulers load a model on first use): only for a model some scheduler
/// serves, else the 404 a generation would get.
async fn load(state: &AppState, model: &str) -> Result<Response, ApiError> {
    let served = tokio::time::timeout(LOAD_LISTING_TIMEOUT, super::models::served(state))
        .await
        .map_err(|_| {
            ApiError::Scheduler(tonic::Status::deadline_exceeded(
                "listing the served models took too long",
            ))
        })??;
    // A pinned version (`name@version`) is served under its model's name.
    let name = model.split_once('@').map_or(model, |(name, _)| name);
    let tagged = format!("{name}:latest");
    if !served.iter().any(|m| m.id == name || m.id == tagged) {
        return Err(ApiError::Scheduler(tonic::Status::not_found(format!(
            "model `{model}` not found"
        ))));
    }
    let mut loaded = object(Endpoint::Generate, model, "", &[], None);
    loaded["done"] = json!(true);
    loaded["done_reason"] = json!("load");
    Ok(Json(loaded).into_response())
}

/// How long the load ping waits for the served models.
const LOAD_LISTING_TIMEOUT: Duration = Duration::from_secs(2);

/// A request that passed governance, ready for its scheduler call.
struct Admissible {
    call: Call,
    method: &'static str,
    admitted: Admitted,
}

/// The scheduler call of a chat or generate, answered in Ollama's shape.
async fn generate_or_chat(
    state: &AppState,
    governed: Admissible,
    endpoint: Endpoint,
    (model, stream): (String, bool),
    incoming: &TraceContext,
    observation: &mut Observation,
) -> Result<Response, ApiError> {
    let Admissible {
        call,
        method,
        admitted: Admitted {
            mut reservation,
            headers,
        },
    } = governed;
    observation.limit_headers = headers;
    let server_span = tracing::Span::current();
    server_span.record("gen_ai.request.model", model.as_str());
    let rpc_span = call::rpc_span(method);
    let keepalive = Duration::from_millis(state.config.sse_keepalive_ms);
    // NDJSON has no comments to keep a waiting stream alive: the head goes out when the
    // answer starts, so a refusal while queued is still an honest status.
    let (mut events, opening) =
        call::open(state, call, incoming, &rpc_span, None, &mut reservation).await?;
    let started = opening.started.clone();
    observation.model = Some(model.clone());
    observation.streaming = stream;
    let mut response = if stream {
        let shape = NdjsonStream::new(endpoint, model, observation.received);
        stream::stream_response(
            shape,
            opening,
            events,
            keepalive,
            observation.clone(),
            (server_span, rpc_span),
            reservation,
        )
    } else {
        let mut aggregate = Aggregate::new(ResponseMeta::new(model.clone()));
        for event in gather::rest(opening, &mut events, &rpc_span, &mut reservation).await? {
            aggregate.push(event);
        }
        let (whole, usage) = aggregate.whole()?;
        gather::settle(
            reservation,
            observation,
            &model,
            (usage.prompt_tokens, usage.completion_tokens),
        )
        .await;
        let totals = Totals {
            done_reason: ollama_done_reason(whole.finish_reason),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        };
        let mut answer = object(
            endpoint,
            &model,
            &whole.content,
            &whole.tool_calls,
            Some((&totals, observation.received)),
        );
        if let Some(logprobs) = whole.logprobs {
            answer["logprobs"] = Value::Array(logprobs);
        }
        Json(answer).into_response()
    };
    if let Some(started) = started {
        gather::started_headers(response.headers_mut(), &started);
    }
    Ok(response)
}

/// `POST /api/embed`.
pub async fn embed(
    state: State<AppState>,
    caller: Extension<Caller>,
    incoming: Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    embed_route(state, caller, incoming, body, false).await
}

/// `POST /api/embeddings`: the older single-prompt form (`embedding`, one vector).
pub async fn embeddings(
    state: State<AppState>,
    caller: Extension<Caller>,
    incoming: Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    embed_route(state, caller, incoming, body, true).await
}

async fn embed_route(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(IncomingTrace(incoming)): Extension<IncomingTrace>,
    body: Result<Bytes, BytesRejection>,
    legacy: bool,
) -> Response {
    let route = if legacy {
        "/api/embeddings"
    } else {
        "/api/embed"
    };
    let mut observation = Observation::new(&state, &caller, route);
    let handled = async {
        let body = gather::body(body, state.config.max_body_bytes)?;
        let mut request = ollama_request::embed(&body, legacy)?;
        request.stamp(&caller, state.config.request_timeout_ms);
        let Admitted {
            mut reservation,
            headers,
        } = state.governance.admit(&caller, &mut request).await?;
        observation.limit_headers = headers;
        let model = request.model.clone();
        let rpc_span = call::rpc_span("Embed");
        let (mut events, opening) = call::open(
            &state,
            Call::Embed(request),
            &incoming,
            &rpc_span,
            None,
            &mut reservation,
        )
        .await?;
        let started = opening.started.clone();
        observation.model = Some(model.clone());
        let (mut vectors, mut prompt_tokens) = (None, 0);
        for event in gather::rest(opening, &mut events, &rpc_span, &mut reservation).await? {
            match event {
                Event::Embeddings(embeddings) => vectors = Some(embeddings.vectors),
                Event::Usage(usage) => prompt_tokens = usage.prompt_tokens,
                _ => {}
            }
        }
        let Some(vectors) = vectors else {
            return Err(ApiError::backend_interrupted());
        };
        gather::settle(reservation, &observation, &model, (prompt_tokens, 0)).await;
        let mut vectors = vectors.into_iter().map(|vector| vector.values);
        let answer = if legacy {
            json!({ "embedding": vectors.next().unwrap_or_default() })
        } else {
            let total_ns =
                u64::try_from(observation.received.elapsed().as_nanos()).unwrap_or(u64::MAX);
            json!({
                "model": model,
                "embeddings": vectors.collect::<Vec<_>>(),
                "total_duration": total_ns,
                "load_duration": 0,
                "prompt_eval_count": prompt_tokens,
            })
        };
        let mut response = Json(answer).into_response();
        if let Some(started) = started {
            gather::started_headers(response.headers_mut(), &started);
        }
        Ok(response)
    }
    .await;
    observation.respond(handled)
}
