//! Anthropic's Messages API at the edge — `POST /v1/messages` (streamed and not) and
//! `POST /v1/messages/count_tokens` — through the route pipeline like every other route: keys
//! (`x-api-key` or a Bearer header; `anthropic-version` accepted), tenants, limits, the
//! scheduler's queue, routing, fallbacks and traces. Errors take Anthropic's envelope
//! (`{"type":"error","error":{"type","message"}}`), refusals from the layers in front included.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::observation::Observation;
use super::pipeline::{self, Answer, Edge, Exchange, Whole};
use crate::error::ApiError;
use crate::translate::anthropic_request::{ValidMessages, parse};
use crate::translate::anthropic_response::{MessagesStream, message_id, whole};
use crate::translate::response::{Aggregate, ResponseMeta};

/// `POST /v1/messages`.
pub async fn messages(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange("/v1/messages", body, handle).await
}

async fn handle(exchange: &mut Exchange<'_>, body: Bytes) -> Result<Response, ApiError> {
    let ValidMessages { request, stream } = parse(&body, false)?;
    let (id, model) = (message_id(), request.model.clone());
    let answer = if stream {
        Answer::Streamed(MessagesStream::new(id, model))
    } else {
        Answer::Whole(move |events, _: &Observation| {
            let mut aggregate = Aggregate::new(ResponseMeta::new(model.clone()));
            for event in events {
                aggregate.push(event);
            }
            let (answer, usage) = aggregate.whole()?;
            let usage = (usage.prompt_tokens, usage.completion_tokens);
            Ok(Whole {
                response: Json(whole(&id, &model, &answer, usage)).into_response(),
                usage,
            })
        })
    };
    pipeline::serve(exchange, request, answer).await
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the gateway estimates them (the
/// model's configured tokenizer, else ~4 bytes a token; images at their fixed count). Nothing
/// is generated, reserved or sent to a scheduler.
pub async fn count_tokens(edge: Edge, body: Result<Bytes, BytesRejection>) -> Response {
    edge.exchange("/v1/messages/count_tokens", body, async |exchange, body| {
        let ValidMessages { request, .. } = parse(&body, true)?;
        let tokens = exchange.state.governance.count_prompt(&request).await;
        Ok(Json(json!({ "input_tokens": tokens })).into_response())
    })
    .await
}

/// The most of an error body read to reshape (the gateway's own errors are far smaller).
const ERROR_BODY_BYTES: usize = 64 << 10;

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 408 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Rewrites OpenAI error envelopes on the Messages routes as Anthropic's, so its SDK raises the
/// right error with the message (the reason stays in `x-llmgw-reason`).
pub async fn anthropic_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = match axum::body::to_bytes(body, ERROR_BODY_BYTES).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|body| Some(body.get("error")?.get("message")?.as_str()?.to_owned())),
        Err(_) => None,
    }
    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    Response::from_parts(parts, Body::from(body.to_string()))
}
