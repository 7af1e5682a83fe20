//! Ollama's native API at the edge — `POST /api/chat`, `/api/generate`, `/api/embed` (and the
//! older `/api/embeddings`) — through the same path as the OpenAI routes: keys (a Bearer
//! header), tenants, limits, the scheduler's queue, routing, fallbacks and traces. Answers are
//! Ollama's own shapes: NDJSON streams (Ollama's default) or one object.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use llmgw_proto::v1::chat_event::Event;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::AppState;
use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Unstreamed, Whole};
use crate::error::ApiError;
use crate::translate::ollama_request::{self, OllamaChat, OllamaGenerate};
use crate::translate::ollama_response::{
    Endpoint, NdjsonStream, Totals, object, ollama_done_reason,
};
use crate::translate::response::{Aggregate, ResponseMeta};

/// `POST /api/chat`.
pub async fn chat(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange("/api/chat", body, async |exchange, body| {
        let OllamaChat { request, stream } = ollama_request::chat(&body)?;
        let received = exchange.observation.received;
        let answer = answer(Endpoint::Chat, request.model.clone(), stream, received);
        pipeline::serve(exchange, request, answer).await
    })
    .await
}

/// `POST /api/generate`. An empty prompt is Ollama's "load the model": answered at once.
pub async fn generate(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange("/api/generate", body, async |exchange, body| {
        let OllamaGenerate {
            mut request,
            stream,
        } = ollama_request::generate(&body)?;
        let reservation = pipeline::admit(exchange, &mut request).await?;
        if request.prompt.is_empty() && request.suffix.is_empty() {
            return load(exchange.state, &request.model).await;
        }
        let received = exchange.observation.received;
        let answer = answer(Endpoint::Generate, request.model.clone(), stream, received);
        pipeline::run(exchange, request.into(), reservation, answer).await
    })
    .await
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

/// How a chat or generate is answered in Ollama's shape: an NDJSON stream, or one object.
fn answer(
    endpoint: Endpoint,
    model: String,
    stream: bool,
    received: Instant,
) -> Answer<NdjsonStream, impl FnOnce(Vec<Event>, &Observation) -> Result<Whole, ApiError>> {
    if stream {
        return Answer::Streamed(NdjsonStream::new(endpoint, model, received));
    }
    Answer::Whole(move |events, observation: &Observation| {
        let mut aggregate = Aggregate::new(ResponseMeta::new(model.clone()));
        for event in events {
            aggregate.push(event);
        }
        let (whole, usage) = aggregate.whole()?;
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
        Ok(Whole {
            response: Json(answer).into_response(),
            usage: (usage.prompt_tokens, usage.completion_tokens),
        })
    })
}

/// `POST /api/embed`.
pub async fn embed(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    embed_route(edge, body, false).await
}

/// `POST /api/embeddings`: the older single-prompt form (`embedding`, one vector).
pub async fn embeddings(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    embed_route(edge, body, true).await
}

async fn embed_route(edge: Edge, body: Result<Bytes, BytesRejection>, legacy: bool) -> Response {
    let route = if legacy {
        "/api/embeddings"
    } else {
        "/api/embed"
    };
    edge.exchange(route, body, async |exchange, body| {
        let request = ollama_request::embed(&body, legacy)?;
        let model = request.model.clone();
        let answer = Answer::<Unstreamed, _>::Whole(move |events, observation: &Observation| {
            let (vectors, prompt_tokens) = pipeline::embeddings(events)?;
            let mut vectors = vectors.into_iter();
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
            Ok(Whole {
                response: Json(answer).into_response(),
                usage: (prompt_tokens, 0),
            })
        });
        pipeline::serve(exchange, request, answer).await
    })
    .await
}
