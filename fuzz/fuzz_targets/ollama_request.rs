//! Ollama's native request parsers (`/api/chat`, `/api/generate`, `/api/embed` and the older
//! `/api/embeddings`): any bytes give a request or a 400, never a panic, and an accepted request
//! holds what the scheduler relies on: a non-blank model; for a chat at least one message, known
//! roles, tool calls with unique ids and JSON arguments, tool results that answer an earlier call;
//! sampling parameters in their ranges (`options.num_predict` only as a positive cap); a
//! `format` that is JSON mode or a schema object; engine options (`extra_json`) only as a JSON
//! object of allow-listed engine options (`llmgw_proto::engine_options`), none of them a field
//! the parser took; for embeddings at least one input, and exactly
//! one for the single-prompt `/api/embeddings`. Parsing the same body twice gives the same result.
#![no_main]

use gateway::error::ApiError;
use gateway::translate::ollama_request;
use libfuzzer_sys::fuzz_target;
use llmgw_proto::v1::response_format::Kind as FormatKind;
use llmgw_proto::v1::{ResponseFormat, SamplingParams};
use serde_json::Value;

/// The sampling fields taken out of `options`: never left in the engine options.
const SAMPLING: [&str; 7] = [
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "num_predict",
    "stop",
    "seed",
];

fuzz_target!(|body: &[u8]| {
    match ollama_request::chat(body) {
        Ok(chat) => {
            assert_eq!(ollama_request::chat(body).ok().as_ref(), Some(&chat));
            let request = &chat.request;
            assert!(!request.model.trim().is_empty());
            assert_eq!(request.stream, chat.stream);
            assert!(!request.messages.is_empty());
            let mut call_ids: Vec<&str> = Vec::new();
            for message in &request.messages {
                assert!(
                    matches!(
                        message.role.as_str(),
                        "system" | "user" | "assistant" | "tool"
                    ),
                    "role {:?}",
                    message.role
                );
                if !message.tool_call_id.is_empty() {
                    assert_eq!(message.role, "tool");
                    assert!(
                        call_ids.contains(&message.tool_call_id.as_str()),
                        "a tool result answers no earlier call: {:?}",
                        message.tool_call_id
                    );
                }
                for call in &message.tool_calls {
                    assert!(!call_ids.contains(&call.id.as_str()), "duplicate call id");
                    call_ids.push(&call.id);
                    assert_eq!(call.r#type, "function");
                    json(&call.arguments_json);
                }
            }
            for tool in &request.tools {
                assert_eq!(tool.r#type, "function");
                assert!(!tool.name.trim().is_empty());
                if !tool.parameters_json.is_empty() {
                    json(&tool.parameters_json);
                }
            }
            assert!(request.top_logprobs <= 20);
            assert!(request.logprobs || request.top_logprobs == 0);
            check_format(request.response_format.as_ref());
            check_sampling(request.sampling.as_ref());
            check_extra(&request.extra_json);
        }
        Err(error) => bad_request(&error),
    }

    match ollama_request::generate(body) {
        Ok(generate) => {
            assert_eq!(
                ollama_request::generate(body).ok().as_ref(),
                Some(&generate)
            );
            let request = &generate.request;
            assert!(!request.model.trim().is_empty());
            assert_eq!(request.stream, generate.stream);
            check_sampling(request.sampling.as_ref());
            check_extra(&request.extra_json);
        }
        Err(error) => bad_request(&error),
    }

    for legacy in [false, true] {
        match ollama_request::embed(body, legacy) {
            Ok(request) => {
                assert!(!request.model.trim().is_empty());
                assert!(!request.input.is_empty());
                if legacy {
                    // `/api/embeddings` answers with one vector: it must ask for exactly one.
                    assert_eq!(
                        request.input.len(),
                        1,
                        "/api/embeddings took several prompts"
                    );
                }
                check_extra(&request.extra_json);
            }
            Err(error) => bad_request(&error),
        }
    }
});

/// A refused body is a 400.
fn bad_request(error: &ApiError) {
    assert!(
        matches!(error, ApiError::InvalidRequest { .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), 400);
}

/// `text` is JSON.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}

fn check_format(format: Option<&ResponseFormat>) {
    let Some(format) = format else {
        return;
    };
    match format.kind() {
        FormatKind::JsonObject => assert!(format.schema_json.is_empty()),
        FormatKind::JsonSchema => assert!(json(&format.schema_json).is_object()),
        FormatKind::Text => panic!("`format` never asks for text"),
    }
}

fn check_sampling(sampling: Option<&SamplingParams>) {
    let sampling = sampling.expect("the parsers always set sampling parameters");
    let within = |value: Option<f32>, min: f32, max: f32| {
        assert!(value.is_none_or(|v| (min..=max).contains(&v)), "{value:?}");
    };
    within(sampling.temperature, 0.0, 2.0);
    within(sampling.top_p, 0.0, 1.0);
    within(sampling.presence_penalty, -2.0, 2.0);
    within(sampling.frequency_penalty, -2.0, 2.0);
    assert_ne!(sampling.max_tokens, Some(0), "a zero cap is no cap");
}

/// Engine options: none, or a JSON object of allow-listed options, none of them a sampling
/// field already taken.
fn check_extra(extra_json: &str) {
    if extra_json.is_empty() {
        return;
    }
    let extra = json(extra_json);
    let object = extra.as_object().expect("engine options are an object");
    assert!(!object.is_empty());
    for name in SAMPLING {
        assert!(!object.contains_key(name), "`{name}` left in {extra_json}");
    }
    for name in object.keys() {
        assert!(
            llmgw_proto::engine_options::is_engine_option(name),
            "`{name}` passed on but not on the engine-option allow-list"
        );
    }
}
