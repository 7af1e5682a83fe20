//! Text completions: Ollama's `POST /api/generate` (NDJSON or one object) and OpenAI's legacy
//! `POST /v1/completions` (SSE or one object). The prompt is continued with the same
//! deterministic text as a chat whose messages joined to that prompt.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Fault;
use crate::generation::{Plan, Step, run};
use crate::state::Sim;
use crate::structured::JsonFormat;
use llmgw_telemetry::timestamp::{now_rfc3339, unix_seconds};

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    stream: bool,
    stream_options: Option<Value>,
    max_tokens: Option<i64>,
    seed: Option<i64>,
}

/// Checks model and fault, plans, and takes a slot; `Err` is the refusal for the protocol.
async fn start(
    sim: &Sim,
    headers: &axum::http::HeaderMap,
    model: &str,
    prompt: String,
    (seed, max_tokens): (Option<i64>, Option<i64>),
    format: Option<JsonFormat>,
    refuse: fn(StatusCode, String) -> Response,
) -> Result<(Plan, impl futures::Stream<Item = Step> + Send + 'static), Response> {
    sim.slots.stats().count_request(headers);
    let Some(model) = sim.config.resolve_model(model) else {
        let message = format!("model \"{model}\" not found, try pulling it first");
        return Err(refuse(StatusCode::NOT_FOUND, message));
    };
    let fault = sim.fault();
    if let Fault::Status(code) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(refuse(status, "simulated upstream failure".to_owned()));
    }
    let plan = Plan::new(&sim.config, model, prompt, seed, max_tokens).with_format(format);
    let Ok(slot) = sim.slots.acquire().await else {
        let busy = "server busy, please try again.".to_owned();
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, busy));
    };
    let mut plan = plan;
    sim.cache(&mut plan);
    let steps = run(plan.clone(), &sim.config, fault, slot);
    Ok((plan, steps))
}

fn ollama_error(status: StatusCode, message: String) -> Response {
    crate::refusal::with_retry_after((status, Json(json!({ "error": message }))).into_response())
}

fn openai_error(status: StatusCode, message: String) -> Response {
    let body = json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } });
    crate::refusal::with_retry_after((status, Json(body)).into_response())
}

/// `POST /api/generate`.
pub async fn ollama(
    State(sim): State<Sim>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let request: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return ollama_error(StatusCode::BAD_REQUEST, format!("invalid request: {err}"));
        }
    };
    let option = |name: &str| {
        request
            .options
            .as_ref()
            .and_then(|o| o.get(name))
            .and_then(Value::as_i64)
    };
    let limits = (option("seed"), option("num_predict").filter(|n| *n >= 0));
    let format = request.format.as_ref().and_then(JsonFormat::from_ollama);
    let (plan, steps) = match start(
        &sim,
        &headers,
        &request.model,
        request.prompt.clone(),
        limits,
        format,
        ollama_error,
    )
    .await
    {
        Ok(started) => started,
        Err(refusal) => return refusal,
    };
    let line = move |plan: &Plan, text: &str, done: bool| {
        let mut object = json!({ "model": plan.model, "created_at": now_rfc3339(), "response": text, "done": done });
        if done {
            object["done_reason"] = json!(plan.finish_reason());
            object["prompt_eval_count"] = json!(plan.prompt_tokens);
            object["eval_count"] = json!(plan.tokens);
            object["context"] = json!([]);
        }
        object
    };
    if request.stream.unwrap_or(true) {
        let lines = steps.map(move |step| {
            let object = match step {
                Step::Token(token) => line(&plan, &token, false),
                Step::Done => line(&plan, "", true),
                Step::Drop => return Err(std::io::Error::other("simulated mid-stream drop")),
                Step::Garbage => return Ok(Bytes::from_static(b"\x00\xfe<html>not ndjson{{{\n")),
            };
            Ok(Bytes::from(format!("{object}\n")))
        });
        return crate::responses::streaming_response("application/x-ndjson", lines);
    }
    let mut text = String::new();
    let mut steps = std::pin::pin!(steps);
    while let Some(step) = steps.next().await {
        match step {
            Step::Token(token) => text.push_str(&token),
            Step::Done => return Json(line(&plan, &text, true)).into_response(),
            Step::Drop => return crate::responses::cut_response("application/json"),
            Step::Garbage => return (StatusCode::OK, "\u{0}<html>not json").into_response(),
        }
    }
    ollama_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without finishing".to_owned(),
    )
}

/// `POST /v1/completions`.
pub async fn openai(
    State(sim): State<Sim>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return openai_error(StatusCode::BAD_REQUEST, err.to_string()),
    };
    let limits = (request.seed, request.max_tokens);
    let (plan, steps) = match start(
        &sim,
        &headers,
        &request.model,
        request.prompt.clone(),
        limits,
        None,
        openai_error,
    )
    .await
    {
        Ok(started) => started,
        Err(refusal) => return refusal,
    };
    let id = format!("cmpl-sim{}", sim.slots.stats().snapshot().requests);
    let created = unix_seconds();
    let usage = json!({
        "prompt_tokens": plan.prompt_tokens, "completion_tokens": plan.tokens,
        "total_tokens": plan.prompt_tokens + plan.tokens,
    });
    let finish = plan.finish_reason();
    let model = plan.model.clone();
    let object = move |text: &str, finish: Option<&str>, usage: Option<&Value>| {
        let mut object = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }],
        });
        if let Some(usage) = usage {
            object["usage"] = usage.clone();
        }
        object
    };
    if request.stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let frames = steps.flat_map(move |step| {
            let data = |value: Value| Ok(Bytes::from(format!("data: {value}\n\n")));
            let out = match step {
                Step::Token(token) => vec![data(object(&token, None, None))],
                Step::Done => {
                    let mut out = vec![data(object("", Some(finish), None))];
                    if include_usage {
                        let mut last = object("", None, Some(&usage));
                        last["choices"] = json!([]);
                        out.push(data(last));
                    }
                    out.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                    out
                }
                Step::Drop => vec![Err(std::io::Error::other("simulated mid-stream drop"))],
                Step::Garbage => vec![Ok(Bytes::from_static(b"\x00\xfe<html>not sse\n\n"))],
            };
            futures::stream::iter(out)
        });
        return crate::responses::streaming_response("text/event-stream", frames);
    }
    let mut text = String::new();
    let mut steps = std::pin::pin!(steps);
    while let Some(step) = steps.next().await {
        match step {
            Step::Token(token) => text.push_str(&token),
            Step::Done => return Json(object(&text, Some(finish), Some(&usage))).into_response(),
            Step::Drop => return crate::responses::cut_response("application/json"),
            Step::Garbage => return (StatusCode::OK, "\u{0}<html>not json").into_response(),
        }
    }
    openai_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation ended without finishing".to_owned(),
    )
}
