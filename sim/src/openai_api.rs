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
    /// Choices: choice `i` is the text for seed `seed + i`.
    n: Option<u32>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<u32>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
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
    sim.slots
        .stats()
        .saw_images(crate::images::in_messages(&request.messages));
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
    let call = crate::tool_calls::chosen(
        &request.tools,
        request.tool_choice.as_ref(),
        &request.messages,
        &plan.prompt,
        plan.seed,
    );
    let plan = plan.with_tool_call(call);
    let Ok(slot) = sim.slots.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "all generation slots are busy",
        );
    };
    let mut plan = plan;
    sim.cache(&mut plan);
    let id = format!("chatcmpl-sim{}", sim.slots.stats().snapshot().requests);
    let choices = Choices {
        n: request.n.unwrap_or(1).clamp(1, 16),
        logprobs: request.logprobs,
        top_logprobs: request.top_logprobs.unwrap_or(0).min(20),
    };
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
            choices,
            next_token: std::sync::atomic::AtomicUsize::new(0),
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
            Step::Done => {
                return Json(completion_object(&id, &plan, &content, choices)).into_response();
            }
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
    choices: Choices,
    /// Tokens framed so far (the other choices' tokens at the same place).
    next_token: std::sync::atomic::AtomicUsize,
}

/// What a request asked beyond one plain choice.
#[derive(Debug, Clone, Copy)]
struct Choices {
    n: u32,
    logprobs: bool,
    top_logprobs: u32,
}

impl Choices {
    /// Choice `choice`'s token at `index` (choice 0 is the plan's own text).
    fn token(&self, plan: &Plan, choice: u32, index: usize) -> String {
        crate::text::completion_tokens(&plan.prompt, plan.seed + u64::from(choice), index + 1)
            .pop()
            .unwrap_or_default()
    }

    /// OpenAI's `logprobs` for one token ([`crate::logprobs`]).
    fn logprobs(&self, token: &str, index: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        json!({ "content": [crate::logprobs::entry(token, index, self.top_logprobs)] })
    }
}

impl SseFramer {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk_of(0, delta, finish_reason, Value::Null)
    }

    fn chunk_of(
        &self,
        choice: u32,
        delta: Value,
        finish_reason: Option<&str>,
        logprobs: Value,
    ) -> Value {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.plan.model,
            "choices": [{ "index": choice, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs }],
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
            Step::Token(token) => {
                let index = self
                    .next_token
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A tool call's pieces are paced like tokens but sent whole at the end; the
                // other choices stream their text.
                let first = u32::from(self.plan.tool_call.is_some());
                (first..self.choices.n)
                    .map(|choice| {
                        let token = if choice == 0 {
                            token.clone()
                        } else {
                            self.choices.token(&self.plan, choice, index)
                        };
                        let logprobs = self.choices.logprobs(&token, index);
                        Ok(event(&self.chunk_of(
                            choice,
                            json!({ "content": token }),
                            None,
                            logprobs,
                        )))
                    })
                    .collect()
            }
            Step::Done => {
                let mut out = Vec::new();
                if self.plan.tool_call.is_some() {
                    let calls = tool_calls(&self.id, &self.plan);
                    out.push(Ok(event(&self.chunk(json!({ "tool_calls": calls }), None))));
                }
                out.extend((0..self.choices.n).map(|choice| {
                    Ok(event(&self.chunk_of(
                        choice,
                        json!({}),
                        Some(self.plan.finish_reason_of(choice)),
                        Value::Null,
                    )))
                }));
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
        "prompt_tokens_details": { "cached_tokens": plan.cached_tokens },
    })
}

/// OpenAI's `tool_calls` of the plan's call (`arguments` as JSON text, with an index for
/// streamed deltas, which the whole message's parser ignores).
fn tool_calls(id: &str, plan: &Plan) -> Vec<Value> {
    plan.tool_call
        .iter()
        .map(|call| {
            json!({
                "index": 0, "id": format!("call_{id}"), "type": "function",
                "function": { "name": call.name, "arguments": call.arguments_text() },
            })
        })
        .collect()
}

fn completion_object(id: &str, plan: &Plan, content: &str, choices: Choices) -> Value {
    let tokens_of = |choice: u32| -> Vec<String> {
        match &plan.json {
            Some(pieces) if choice == 0 => pieces.iter().take(plan.tokens).cloned().collect(),
            _ => crate::text::completion_tokens(
                &plan.prompt,
                plan.seed + u64::from(choice),
                plan.tokens,
            ),
        }
    };
    let listed: Vec<Value> = (0..choices.n)
        .map(|choice| {
            let tokens = tokens_of(choice);
            let text = if choice == 0 {
                content.to_owned()
            } else {
                tokens.concat()
            };
            let logprobs = if choices.logprobs {
                let content: Vec<Value> = tokens
                    .iter()
                    .enumerate()
                    .flat_map(|(index, token)| {
                        choices.logprobs(token, index)["content"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                json!({ "content": content })
            } else {
                Value::Null
            };
            let message = match &plan.tool_call {
                Some(_) if choice == 0 => json!({
                    "role": "assistant", "content": null, "tool_calls": tool_calls(id, plan),
                }),
                _ => json!({ "role": "assistant", "content": text }),
            };
            json!({
                "index": choice,
                "message": message,
                "finish_reason": plan.finish_reason_of(choice),
                "logprobs": logprobs,
            })
        })
        .collect();
    json!({
        "id": id, "object": "chat.completion", "created": unix_seconds(), "model": plan.model,
        "choices": listed,
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
