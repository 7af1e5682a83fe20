//! Ollama's native API: `POST /api/chat` (NDJSON stream or one JSON object), `GET /api/tags`,
//! `GET /api/ps`, `GET /api/version`. Shapes follow Ollama's docs.

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
use llmgw_telemetry::timestamp::now_rfc3339;

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Value>,
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    tools: Vec<Value>,
    /// Ollama 0.12.11+: log probabilities of the output tokens, and of this many alternatives.
    #[serde(default)]
    logprobs: bool,
    #[serde(default)]
    top_logprobs: Option<u32>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    crate::refusal::with_retry_after(
        (status, Json(json!({ "error": message.into() }))).into_response(),
    )
}

/// `POST /api/chat`.
pub async fn chat(State(sim): State<Sim>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    sim.slots.stats().count_request(&headers);
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {err}")),
    };
    sim.slots
        .stats()
        .saw_images(crate::images::in_messages(&request.messages));
    let Some(model) = sim.config.resolve_model(&request.model) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "model \"{}\" not found, try pulling it first",
                request.model
            ),
        );
    };
    let fault = sim.fault();
    if let Fault::Status(code) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "simulated upstream failure");
    }
    let option = |name: &str| {
        request
            .options
            .as_ref()
            .and_then(|o| o.get(name))
            .and_then(Value::as_i64)
    };
    let plan = Plan::new(
        &sim.config,
        model,
        prompt_from_messages(&request.messages),
        option("seed"),
        option("num_predict").filter(|n| *n >= 0),
    )
    .with_format(request.format.as_ref().and_then(JsonFormat::from_ollama));
    let call = crate::tool_calls::chosen(
        &request.tools,
        None,
        &request.messages,
        &plan.prompt,
        plan.seed,
    );
    let plan = plan.with_tool_call(call);
    let Ok(slot) = sim.slots.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy, please try again.  maximum pending requests exceeded",
        );
    };
    let mut plan = plan;
    sim.cache(&mut plan);
    let steps = run(plan.clone(), &sim.config, fault, slot);
    let logprobs = Logprobs {
        asked: request.logprobs,
        alternatives: request.top_logprobs.unwrap_or(0).min(20),
    };
    if request.stream.unwrap_or(true) {
        let mut index = 0;
        // A tool call is one line before the last, as Ollama streams it: its pieces are not text.
        let calling = plan.tool_call.is_some();
        let lines = steps
            .filter(move |step| {
                futures::future::ready(!(calling && matches!(step, Step::Token(_))))
            })
            .flat_map(move |step| {
                let mut lines = Vec::new();
                if calling && step == Step::Done {
                    lines.push(line_of(&call_object(&plan)));
                }
                lines.push(frame_line(&plan, step, logprobs, index));
                index += 1;
                futures::stream::iter(lines)
            });
        return crate::responses::streaming_response("application/x-ndjson", lines);
    }
    let mut content = String::new();
    let mut entries = Vec::new();
    let mut steps = std::pin::pin!(steps);
    while let Some(step) = steps.next().await {
        match step {
            Step::Token(_) if plan.tool_call.is_some() => {}
            Step::Token(token) => {
                if logprobs.asked {
                    entries.push(crate::logprobs::entry(
                        &token,
                        entries.len(),
                        logprobs.alternatives,
                    ));
                }
                content.push_str(&token);
            }
            Step::Done => {
                let mut answer = final_object(&plan, &content);
                if plan.tool_call.is_some() {
                    answer["message"] = call_message(&plan);
                }
                if logprobs.asked {
                    answer["logprobs"] = Value::Array(entries);
                }
                return Json(answer).into_response();
            }
            Step::Drop => return crate::responses::cut_response("application/json"),
            Step::Garbage => {
                let garbage =
                    futures::stream::once(async move { frame_line(&plan, step, logprobs, 0) });
                return crate::responses::streaming_response("application/json", garbage);
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without finishing",
    )
}

/// Whether a chat asked for log probabilities, and of how many alternatives.
#[derive(Debug, Clone, Copy)]
struct Logprobs {
    asked: bool,
    alternatives: u32,
}

/// The NDJSON line of one step; `index` counts the tokens so far.
fn frame_line(
    plan: &Plan,
    step: Step,
    logprobs: Logprobs,
    index: usize,
) -> Result<Bytes, std::io::Error> {
    let object = match step {
        Step::Token(token) => {
            let mut object = json!({
                "model": plan.model,
                "created_at": now_rfc3339(),
                "message": { "role": "assistant", "content": token },
                "done": false,
            });
            if logprobs.asked {
                object["logprobs"] =
                    json!([crate::logprobs::entry(&token, index, logprobs.alternatives)]);
            }
            object
        }
        Step::Done => final_object(plan, ""),
        Step::Drop => return Err(std::io::Error::other("simulated mid-stream drop")),
        Step::Garbage => return Ok(Bytes::from_static(b"\x00\xfe<html>not ndjson{{{\n")),
    };
    line_of(&object)
}

fn line_of(object: &Value) -> Result<Bytes, std::io::Error> {
    let mut line = serde_json::to_vec(object).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// The assistant message of a tool call (Ollama's `arguments` are an object).
fn call_message(plan: &Plan) -> Value {
    let calls: Vec<Value> = plan
        .tool_call
        .iter()
        .map(|call| json!({ "function": { "name": call.name, "arguments": call.arguments } }))
        .collect();
    json!({ "role": "assistant", "content": "", "tool_calls": calls })
}

/// The streamed line that carries a tool call.
fn call_object(plan: &Plan) -> Value {
    json!({
        "model": plan.model,
        "created_at": now_rfc3339(),
        "message": call_message(plan),
        "done": false,
    })
}

fn final_object(plan: &Plan, content: &str) -> Value {
    json!({
        "model": plan.model,
        "created_at": now_rfc3339(),
        "message": { "role": "assistant", "content": content },
        "done": true,
        "done_reason": plan.finish_reason(),
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": plan.prompt_tokens,
        "eval_count": plan.tokens,
    })
}

/// `GET /api/tags`.
pub async fn tags(State(sim): State<Sim>) -> Json<Value> {
    let models: Vec<Value> = sim
        .config
        .models
        .iter()
        .filter_map(|m| sim.config.resolve_model(m))
        .map(|name| {
            json!({ "name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0,
                    "digest": "sim", "details": { "family": "sim", "parameter_size": "0B" } })
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/ps`: every model counts as loaded.
pub async fn ps(state: State<Sim>) -> Json<Value> {
    tags(state).await
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": concat!("0.0.0-llm-sim-", env!("CARGO_PKG_VERSION")) }))
}
