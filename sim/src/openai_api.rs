//! The OpenAI-compatible API: `POST /v1/chat/completions` (SSE or one object), `GET /v1/models`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Fault;
use crate::generation::{Plan, Step, prompt_from_messages, run};
use crate::state::Sim;
use crate::structured::JsonFormat;
use llmgw_telemetry::timestamp::unix_seconds;

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<Value>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    seed: Option<i64>,
    response_format: Option<Value>,
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "message": message.into(), "type": kind, "param": null, "code": null } });
    crate::refusal::with_retry_after((status, Json(body)).into_response())
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(sim): State<Sim>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    sim.slots.stats().count_request(&headers);
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                err.to_string(),
            );
        }
    };
    let Some(model) = sim.config.resolve_model(&request.model) else {
        let message = format!("The model `{}` does not exist", request.model);
        return error(StatusCode::NOT_FOUND, "invalid_request_error", message);
    };
    let fault = sim.fault();
    if let Fault::Status(code) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "server_error", "simulated upstream failure");
    }
    let plan = Plan::new(
        &sim.config,
        model,
        prompt_from_messages(&request.messages),
        request.seed,
        request.max_completion_tokens.or(request.max_tokens),
    )
    .with_format(
        request
            .response_format
            .as_ref()
            .and_then(JsonFormat::from_openai),
    );
    let Ok(slot) = sim.slots.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "all generation slots are busy",
        );
    };
    let id = format!("chatcmpl-sim{}", sim.slots.stats().snapshot().requests);
    let steps = run(plan.clone(), &sim.config, fault, slot);
    if request.stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let framer = SseFramer {
            id,
            plan,
            include_usage,
            created: unix_seconds(),
        };
        let role = futures::stream::once(futures::future::ready(Ok(framer.role_chunk())));
        let events =
            role.chain(steps.flat_map(move |step| futures::stream::iter(framer.frame(step))));
        return crate::responses::streaming_response("text/event-stream", events);
    }
    let mut content = String::new();
    let mut steps = std::pin::pin!(steps);
    while let Some(step) = steps.next().await {
        match step {
            Step::Token(token) => content.push_str(&token),
            Step::Done => return Json(completion_object(&id, &plan, &content)).into_response(),
            Step::Drop => return crate::responses::cut_response("application/json"),
            Step::Garbage => return (StatusCode::OK, "\u{0}<html>not json").into_response(),
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "generation ended without finishing",
    )
}

struct SseFramer {
    id: String,
    plan: Plan,
    include_usage: bool,
    created: u64,
}

impl SseFramer {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.plan.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn role_chunk(&self) -> Bytes {
        event(&self.chunk(json!({ "role": "assistant", "content": "" }), None))
    }

    fn frame(&self, step: Step) -> Vec<Result<Bytes, std::io::Error>> {
        match step {
            Step::Token(token) => vec![Ok(event(&self.chunk(json!({ "content": token }), None)))],
            Step::Done => {
                let mut out = vec![Ok(event(
                    &self.chunk(json!({}), Some(self.plan.finish_reason())),
                ))];
                if self.include_usage {
                    out.push(Ok(event(&json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.plan.model, "choices": [], "usage": usage(&self.plan),
                    }))));
                }
                out.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                out
            }
            Step::Drop => vec![Err(std::io::Error::other("simulated mid-stream drop"))],
            Step::Garbage => vec![Ok(Bytes::from_static(b"\x00\xfe<html>not sse\n\n"))],
        }
    }
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.tokens,
        "total_tokens": plan.prompt_tokens + plan.tokens,
    })
}

fn completion_object(id: &str, plan: &Plan, content: &str) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": unix_seconds(), "model": plan.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": plan.finish_reason(),
        }],
        "usage": usage(plan),
    })
}

/// `GET /v1/models`.
pub async fn models(State(sim): State<Sim>) -> Json<Value> {
    let data: Vec<Value> = sim
        .config
        .models
        .iter()
        .filter_map(|m| sim.config.resolve_model(m))
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "llm-sim" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}
