//! Ollama's native request bodies (`/api/chat`, `/api/generate`, `/api/embed` and the older
//! `/api/embeddings`) as the scheduler's requests. Ollama's `options` map onto the sampling
//! parameters (`num_predict` is the output cap); the rest of `options` stays engine options.
//! Fields Ollama clients send that govern the server itself (`keep_alive`) are ignored;
//! a chat message's `images` (base64) pass on; `/api/generate`'s top-level `images` are
//! refused with a 400 naming the field.

use llmgw_proto::v1::response_format::Kind as FormatKind;
use llmgw_proto::v1::{
    ChatRequest, CompletionRequest, EmbedRequest, Message, ResponseFormat, SamplingParams, Tool,
    ToolCall,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{body_object, engine_options, field, model, ranged};
use super::request::{log_probabilities, tool};
use crate::error::ApiError;
use crate::openai::request::{Stop, ToolDefinition};

/// A chat from Ollama's API, and whether it streams (Ollama's default: yes).
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaChat {
    pub request: ChatRequest,
    pub stream: bool,
}

/// A generate call: a completion, or (empty prompt) Ollama's "load the model" ping.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaGenerate {
    pub request: CompletionRequest,
    pub stream: bool,
}

#[derive(Debug, Deserialize)]
struct OllamaMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Vec<OllamaToolCall>,
    #[serde(default)]
    tool_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OllamaToolCall {
    function: OllamaFunction,
}

#[derive(Debug, Deserialize)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// Top-level fields that steer the Ollama server, not the generation: accepted and ignored.
const IGNORED: [&str; 3] = ["keep_alive", "think", "truncate"];

/// `POST /api/chat`.
pub fn chat(body: &[u8]) -> Result<OllamaChat, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let messages: Vec<OllamaMessage> = field(&mut object, "messages")?.unwrap_or_default();
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut messages = messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| chat_message(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    pair_tool_results(&mut messages);
    let tools = field::<Vec<ToolDefinition>>(&mut object, "tools")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, definition)| tool(index, definition))
        .collect::<Result<Vec<Tool>, _>>()?;
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(true);
    let response_format = format(&mut object)?;
    let (logprobs, top_logprobs) = log_probabilities(&mut object)?;
    let (sampling, extra_json) = options(&mut object)?;
    ignore_the_rest(object);
    Ok(OllamaChat {
        request: ChatRequest {
            model,
            messages,
            sampling: Some(sampling),
            tools,
            stream,
            extra_json,
            response_format,
            logprobs,
            top_logprobs,
            ..Default::default()
        },
        stream,
    })
}

/// `POST /api/generate`.
pub fn generate(body: &[u8]) -> Result<OllamaGenerate, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let prompt = field::<String>(&mut object, "prompt")?.unwrap_or_default();
    let suffix = field::<String>(&mut object, "suffix")?.unwrap_or_default();
    let raw = field::<bool>(&mut object, "raw")?.unwrap_or(false);
    for unsupported in ["system", "template", "context", "images"] {
        if field::<Value>(&mut object, unsupported)?.is_some() {
            return Err(ApiError::invalid(
                unsupported,
                format!("`{unsupported}` is not supported through the gateway; use /api/chat"),
            ));
        }
    }
    if field::<bool>(&mut object, "logprobs")?.unwrap_or(false) {
        return Err(ApiError::invalid(
            "logprobs",
            "`logprobs` is supported on /api/chat; /api/generate passes text only",
        ));
    }
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(true);
    if format(&mut object)?.is_some() {
        return Err(ApiError::invalid(
            "format",
            "`format` is supported on /api/chat; /api/generate passes text only",
        ));
    }
    let (sampling, extra_json) = options(&mut object)?;
    ignore_the_rest(object);
    Ok(OllamaGenerate {
        request: CompletionRequest {
            model,
            prompt,
            suffix,
            raw,
            stream,
            sampling: Some(sampling),
            extra_json,
            ..Default::default()
        },
        stream,
    })
}

/// One text or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

/// `POST /api/embed` (`input`), or the older `/api/embeddings` (`prompt`, one vector).
pub fn embed(body: &[u8], legacy: bool) -> Result<EmbedRequest, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let name = if legacy { "prompt" } else { "input" };
    let input = match field::<Input>(&mut object, name)? {
        None => return Err(ApiError::invalid(name, format!("`{name}` is required"))),
        Some(Input::One(text)) => vec![text],
        // `/api/embeddings` answers with one vector: one prompt, as Ollama itself takes it.
        Some(Input::Many(_)) if legacy => {
            return Err(ApiError::invalid("prompt", "`prompt` must be one string"));
        }
        Some(Input::Many(texts)) => texts,
    };
    if input.is_empty() {
        return Err(ApiError::invalid(
            name,
            format!("`{name}` must hold at least one text"),
        ));
    }
    let dimensions = field::<u32>(&mut object, "dimensions")?.unwrap_or(0);
    let (_, extra_json) = options(&mut object)?;
    ignore_the_rest(object);
    Ok(EmbedRequest {
        model,
        input,
        dimensions,
        extra_json,
        ..Default::default()
    })
}

fn ignore_the_rest(mut object: Map<String, Value>) {
    for name in IGNORED {
        object.remove(name);
    }
    // Unknown top-level fields are ignored, as Ollama itself does.
}

fn chat_message(index: usize, message: OllamaMessage) -> Result<Message, ApiError> {
    let role = match message.role.as_str() {
        role @ ("system" | "user" | "assistant" | "tool") => role.to_owned(),
        other => {
            return Err(ApiError::invalid(
                format!("messages[{index}].role"),
                format!(
                    "`messages[{index}].role` must be one of system, user, assistant, tool; got `{other}`"
                ),
            ));
        }
    };
    let images = message
        .images
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(image, data)| {
            let path = format!("messages[{index}].images[{image}]");
            match data.as_str() {
                Some(data) => super::image::from_base64(&path, data),
                None => Err(ApiError::invalid(
                    &path,
                    format!("`{path}` must be a base64 string"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tool_calls = message
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(call, tool_call)| ToolCall {
            id: format!("call_{index}_{call}"),
            r#type: "function".to_owned(),
            name: tool_call.function.name,
            arguments_json: tool_call.function.arguments.to_string(),
        })
        .collect();
    Ok(Message {
        role,
        content: message.content,
        name: message.tool_name.unwrap_or_default(),
        tool_calls,
        tool_call_id: String::new(),
        images,
    })
}

/// Ollama's tool results name their tool (`tool_name`) but no call; OpenAI-compatible engines
/// need the id of the call each answers. A result takes the id of the earliest unanswered call
/// of the last assistant message with its tool's name, or else the earliest unanswered one.
fn pair_tool_results(messages: &mut [Message]) {
    let mut pending: Vec<(String, String)> = Vec::new();
    for message in messages.iter_mut() {
        match message.role.as_str() {
            "assistant" if !message.tool_calls.is_empty() => {
                pending = message
                    .tool_calls
                    .iter()
                    .map(|call| (call.name.clone(), call.id.clone()))
                    .collect();
            }
            "tool" if !pending.is_empty() => {
                let at = pending
                    .iter()
                    .position(|(name, _)| *name == message.name)
                    .unwrap_or(0);
                message.tool_call_id = pending.remove(at).1;
            }
            _ => {}
        }
    }
}

/// `format`: `"json"` or a JSON Schema object.
fn format(object: &mut Map<String, Value>) -> Result<Option<ResponseFormat>, ApiError> {
    match field::<Value>(object, "format")? {
        None => Ok(None),
        Some(Value::String(kind)) if kind == "json" => Ok(Some(ResponseFormat {
            kind: FormatKind::JsonObject as i32,
            ..Default::default()
        })),
        Some(schema @ Value::Object(_)) => Ok(Some(ResponseFormat {
            kind: FormatKind::JsonSchema as i32,
            schema_json: schema.to_string(),
            ..Default::default()
        })),
        Some(_) => Err(ApiError::invalid(
            "format",
            "`format` must be \"json\" or a JSON Schema object",
        )),
    }
}

/// Ollama's `options`: the sampling parameters the scheduler knows, the rest as engine options.
fn options(object: &mut Map<String, Value>) -> Result<(SamplingParams, String), ApiError> {
    let Some(mut options) = field::<Map<String, Value>>(object, "options")? else {
        return Ok((SamplingParams::default(), String::new()));
    };
    let named = |name: &str| format!("options.{name}");
    let temperature = ranged(&mut options, "temperature", 0.0, 2.0)
        .map_err(|e| rename(e, &named("temperature")))?;
    let top_p = ranged(&mut options, "top_p", 0.0, 1.0).map_err(|e| rename(e, &named("top_p")))?;
    let presence_penalty = ranged(&mut options, "presence_penalty", -2.0, 2.0)
        .map_err(|e| rename(e, &named("presence_penalty")))?;
    let frequency_penalty = ranged(&mut options, "frequency_penalty", -2.0, 2.0)
        .map_err(|e| rename(e, &named("frequency_penalty")))?;
    // -1 is "no limit" and -2 "fill the context" in Ollama: no cap either way.
    let max_tokens = field::<i64>(&mut options, "num_predict")
        .map_err(|e| rename(e, &named("num_predict")))?
        .filter(|n| *n > 0)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let stop = match field::<Stop>(&mut options, "stop").map_err(|e| rename(e, &named("stop")))? {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one],
        Some(Stop::Many(many)) => many,
    };
    let seed = field::<i64>(&mut options, "seed").map_err(|e| rename(e, &named("seed")))?;
    let extra = engine_options(options, "options.")?;
    let sampling = SamplingParams {
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
        presence_penalty,
        frequency_penalty,
    };
    Ok((sampling, extra))
}

/// The same error, naming the field by its path under `options`.
fn rename(error: ApiError, path: &str) -> ApiError {
    match error {
        ApiError::InvalidRequest {
            message,
            param: Some(param),
        } => ApiError::InvalidRequest {
            message: message.replacen(&format!("`{param}"), &format!("`options.{param}"), 1),
            param: Some(path.to_owned()),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_maps_options_format_and_streams_by_default() {
        let chat = chat(
            br#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],
            "format":"json","keep_alive":"5m",
            "options":{"temperature":0.2,"num_predict":7,"seed":3,"top_k":40}}"#,
        )
        .unwrap();
        assert!(chat.stream);
        let sampling = chat.request.sampling.unwrap();
        assert_eq!((sampling.max_tokens, sampling.seed), (Some(7), Some(3)));
        assert_eq!(chat.request.extra_json, r#"{"top_k":40}"#);
        assert_eq!(
            chat.request.response_format.unwrap().kind(),
            FormatKind::JsonObject
        );
    }

    #[test]
    fn errors_name_the_field_under_options_and_messages() {
        let param = |body: &[u8]| match chat(body) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"options":{"temperature":7}}"#).as_deref(),
            Some("options.temperature")
        );
        assert_eq!(
            param(br#"{"model":"m","messages":[{"role":"user","content":"x","images":["@@"]}]}"#)
                .as_deref(),
            Some("messages[0].images[0]")
        );
        assert_eq!(
            param(br#"{"model":"m","messages":[]}"#).as_deref(),
            Some("messages")
        );
    }

    #[test]
    fn tool_results_answer_the_calls_they_name() {
        let chat = chat(
            br#"{"model":"m","messages":[
            {"role":"user","content":"weather and time?"},
            {"role":"assistant","content":"","tool_calls":[
                {"function":{"name":"weather","arguments":{"city":"Paris"}}},
                {"function":{"name":"time","arguments":{}}}]},
            {"role":"tool","content":"12:00","tool_name":"time"},
            {"role":"tool","content":"sunny"}]}"#,
        )
        .unwrap();
        let messages = &chat.request.messages;
        let ids: Vec<&str> = messages[1]
            .tool_calls
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(messages[2].tool_call_id, ids[1], "named: the `time` call");
        assert_eq!(messages[3].tool_call_id, ids[0], "unnamed: the call left");
        assert_eq!(
            messages[1].tool_calls[0].arguments_json,
            r#"{"city":"Paris"}"#
        );
    }

    #[test]
    fn generate_and_embed() {
        let generate =
            generate(br#"{"model":"m","prompt":"Once","raw":true,"stream":false}"#).unwrap();
        assert!(generate.request.raw && !generate.stream);
        assert_eq!(
            embed(br#"{"model":"m","input":["a","b"]}"#, false)
                .unwrap()
                .input
                .len(),
            2
        );
        assert_eq!(
            embed(br#"{"model":"m","prompt":"a"}"#, true).unwrap().input,
            vec!["a".to_owned()]
        );
        assert!(embed(br#"{"model":"m"}"#, false).is_err());
        assert!(
            embed(br#"{"model":"m","prompt":["a","b"]}"#, true).is_err(),
            "/api/embeddings answers one vector, so it takes one prompt"
        );
    }
}
