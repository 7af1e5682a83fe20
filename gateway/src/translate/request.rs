//! Parse, don't validate: the raw body becomes a [`ValidChat`] once, here, with 400s that name
//! the field and the rule ("`temperature` must be between 0 and 2, got 3.1").
//!
//! Fields are taken out of the JSON object one by one so every type error carries its path
//! (`messages[1].content`). Known OpenAI fields we do not act on are listed and ignored on
//! purpose; features no engine can honour through us (`logit_bias`) are refused; anything else is passed on
//! to the engine as extra options (`top_k`, `num_ctx`, …).

use llmgw_proto::v1::response_format::Kind as FormatKind;
use llmgw_proto::v1::{ChatRequest, Image, Message, ResponseFormat, Tool, ToolCall};
use serde_json::{Map, Value};

use super::fields::{body_object, engine_options, field, model, required, sampling};
use crate::error::ApiError;
use crate::openai::request::{
    ChatMessage, ContentPart, MessageContent, StreamOptions, ToolDefinition,
};

/// A chat request that passed validation, ready for the scheduler (caller fields unset).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChat {
    pub request: ChatRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// OpenAI fields accepted and deliberately not acted on.
const IGNORED: [&str; 7] = [
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// The most choices one request may ask for.
const MAX_CHOICES: i64 = 8;

/// Parses and validates a `/v1/chat/completions` body.
pub fn parse(body: &[u8]) -> Result<ValidChat, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let messages: Vec<ChatMessage> = required(&mut object, "messages")?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<_, _>>()?;
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(false);
    let include_usage = field::<StreamOptions>(&mut object, "stream_options")?
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let sampling = sampling(&mut object)?;
    let tools = field::<Vec<ToolDefinition>>(&mut object, "tools")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| tool(i, t))
        .collect::<Result<_, _>>()?;
    let tool_choice_json = field::<Value>(&mut object, "tool_choice")?
        .map(|v| v.to_string())
        .unwrap_or_default();
    let response_format = response_format(&mut object)?;
    let Choices {
        n,
        logprobs,
        top_logprobs,
    } = choices(&mut object)?;
    refuse_unsupported(&mut object)?;
    for name in IGNORED {
        object.remove(name);
    }
    let extra_json = engine_options(object, "")?;
    Ok(ValidChat {
        request: ChatRequest {
            model,
            messages,
            sampling: Some(sampling),
            tools,
            tool_choice_json,
            stream,
            extra_json,
            response_format,
            n,
            logprobs,
            top_logprobs,
            ..Default::default()
        },
        stream,
        include_usage,
    })
}

/// `n`, `logprobs` and `top_logprobs`: checked here, honoured by OpenAI-compatible endpoints;
/// Ollama (0.12.11+) honours the log probabilities, and the scheduler refuses `n` > 1 for a
/// model it serves, naming the field.
struct Choices {
    n: u32,
    logprobs: bool,
    top_logprobs: u32,
}

fn choices(object: &mut Map<String, Value>) -> Result<Choices, ApiError> {
    let n = match field::<i64>(object, "n")? {
        None => 1,
        Some(n) if (1..=MAX_CHOICES).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"),
            ));
        }
    };
    let (logprobs, top_logprobs) = log_probabilities(object)?;
    Ok(Choices {
        n,
        logprobs,
        top_logprobs,
    })
}

/// `logprobs` and `top_logprobs` (0–20, only with `logprobs: true`), as OpenAI and Ollama
/// spell them.
pub(super) fn log_probabilities(object: &mut Map<String, Value>) -> Result<(bool, u32), ApiError> {
    let logprobs = field::<bool>(object, "logprobs")?.unwrap_or(false);
    let top_logprobs = match field::<i64>(object, "top_logprobs")? {
        None => 0,
        Some(top) if !logprobs && top != 0 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ));
        }
        Some(top) if (0..=20).contains(&top) => top as u32,
        Some(top) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be between 0 and 20, got {top}"),
            ));
        }
    };
    Ok((logprobs, top_logprobs))
}

fn refuse_unsupported(object: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(bias) = field::<Map<String, Value>>(object, "logit_bias")?
        && !bias.is_empty()
    {
        return Err(ApiError::invalid(
            "logit_bias",
            "`logit_bias` is not supported",
        ));
    }
    Ok(())
}

/// `response_format`: `text` (the default), `json_object`, or `json_schema` with a
/// `json_schema.schema` object (`name` and `strict` optional).
pub(crate) fn response_format(
    object: &mut Map<String, Value>,
) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(format) = field::<Map<String, Value>>(object, "response_format")? else {
        return Ok(None);
    };
    let kind = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => FormatKind::JsonObject,
        Some("json_schema") => FormatKind::JsonSchema,
        _ => {
            return Err(ApiError::invalid(
                "response_format.type",
                "`response_format.type` must be `text`, `json_object` or `json_schema`",
            ));
        }
    };
    if kind == FormatKind::JsonObject {
        return Ok(Some(ResponseFormat {
            kind: kind as i32,
            ..Default::default()
        }));
    }
    let Some(Value::Object(spec)) = format.get("json_schema") else {
        return Err(ApiError::invalid(
            "response_format.json_schema",
            "`response_format.json_schema` must be an object with a `schema`",
        ));
    };
    let Some(schema @ Value::Object(_)) = spec.get("schema") else {
        return Err(ApiError::invalid(
            "response_format.json_schema.schema",
            "`response_format.json_schema.schema` must be a JSON Schema object",
        ));
    };
    let name = match spec.get("name") {
        None => String::new(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.json_schema.name",
                "`response_format.json_schema.name` must be a string",
            ));
        }
    };
    let strict = match spec.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(strict)) => *strict,
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.json_schema.strict",
                "`response_format.json_schema.strict` must be a boolean",
            ));
        }
    };
    Ok(Some(ResponseFormat {
        kind: kind as i32,
        name,
        schema_json: schema.to_string(),
        strict,
    }))
}

fn message(index: usize, message: ChatMessage) -> Result<Message, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        other => {
            return Err(ApiError::invalid(
                format!("messages[{index}].role"),
                format!(
                    "`messages[{index}].role` must be one of system, developer, user, assistant, tool; got `{other}`"
                ),
            ));
        }
    };
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| ToolCall {
            id: call.id,
            r#type: call.kind.unwrap_or_else(|| "function".to_owned()),
            name: call.function.name,
            arguments_json: call.function.arguments,
        })
        .collect();
    let (content, images) = match message.content {
        Some(MessageContent::Text(text)) => (text, Vec::new()),
        Some(MessageContent::Parts(parts)) => content_parts(index, parts)?,
        None if role == "assistant" && !tool_calls.is_empty() => (String::new(), Vec::new()),
        None => {
            return Err(ApiError::invalid(
                format!("messages[{index}].content"),
                format!("`messages[{index}].content` is required for role `{role}`"),
            ));
        }
    };
    Ok(Message {
        role: role.to_owned(),
        content,
        name: message.name.unwrap_or_default(),
        tool_calls,
        tool_call_id: message.tool_call_id.unwrap_or_default(),
        images,
    })
}

/// A message's parts: its text parts joined, and its images (`image_url` with a `data:` URL).
fn content_parts(index: usize, parts: Vec<ContentPart>) -> Result<(String, Vec<Image>), ApiError> {
    let (mut text, mut images) = (String::new(), Vec::new());
    for (part_index, part) in parts.into_iter().enumerate() {
        let path = format!("messages[{index}].content[{part_index}]");
        match (part.kind.as_str(), part.text, part.image_url) {
            ("text", Some(part_text), _) => text.push_str(&part_text),
            ("text", None, _) => {
                return Err(ApiError::invalid(
                    format!("{path}.text"),
                    format!("`{path}.text` is required"),
                ));
            }
            ("image_url", _, Some(image)) => {
                images.push(super::image::from_url(
                    &format!("{path}.image_url.url"),
                    &image.url,
                )?);
            }
            ("image_url", _, None) => {
                return Err(ApiError::invalid(
                    format!("{path}.image_url"),
                    format!("`{path}.image_url` is required"),
                ));
            }
            (kind, ..) => {
                return Err(ApiError::invalid(
                    format!("{path}.type"),
                    format!(
                        "`{path}.type` `{kind}` is not supported; only `text` and `image_url` parts are"
                    ),
                ));
            }
        }
    }
    Ok((text, images))
}

pub(crate) fn tool(index: usize, tool: ToolDefinition) -> Result<Tool, ApiError> {
    if tool.kind != "function" {
        return Err(ApiError::invalid(
            format!("tools[{index}].type"),
            format!(
                "`tools[{index}].type` must be `function`, got `{}`",
                tool.kind
            ),
        ));
    }
    if tool.function.name.trim().is_empty() {
        let path = format!("tools[{index}].function.name");
        return Err(ApiError::invalid(
            path.clone(),
            format!("`{path}` must not be empty"),
        ));
    }
    Ok(Tool {
        r#type: tool.kind,
        name: tool.function.name,
        description: tool.function.description.unwrap_or_default(),
        parameters_json: tool
            .function
            .parameters
            .map(|p| p.to_string())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> (String, Option<String>) {
        match parse(body.as_bytes()).unwrap_err() {
            ApiError::InvalidRequest { message, param } => (message, param),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_request_translates_field_by_field() {
        let chat = parse(br#"{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "temperature":0.5,"top_p":0.9,"max_tokens":12,"stop":"END","seed":7,"presence_penalty":1,
            "frequency_penalty":-1,"user":"u1","top_k":40,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto"}"#)
        .unwrap();
        assert!(chat.stream && chat.include_usage);
        let r = chat.request;
        assert_eq!(r.model, "llama3.2");
        assert_eq!(
            (r.messages[0].role.as_str(), r.messages[0].content.as_str()),
            ("system", "be brief")
        );
        assert_eq!(
            (r.messages[1].role.as_str(), r.messages[1].content.as_str()),
            ("user", "hi")
        );
        let s = r.sampling.unwrap();
        assert_eq!(
            (s.temperature, s.top_p, s.max_tokens, s.seed),
            (Some(0.5), Some(0.9), Some(12), Some(7))
        );
        assert_eq!(s.stop, vec!["END".to_owned()]);
        assert_eq!(r.tools[0].name, "f");
        assert_eq!(r.tools[0].parameters_json, r#"{"type":"object"}"#);
        assert_eq!(r.tool_choice_json, r#""auto""#);
        assert_eq!(
            r.extra_json, r#"{"top_k":40}"#,
            "unknown fields pass on; `user` is dropped on purpose"
        );
    }

    #[test]
    fn errors_name_the_field_and_the_rule() {
        let m = r#""messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            error("{"),
            (
                "request body is not valid JSON: EOF while parsing an object at line 1 column 1"
                    .into(),
                None
            )
        );
        assert_eq!(
            error(&format!("{{{m}}}")),
            ("`model` is required".into(), Some("model".into()))
        );
        assert_eq!(
            error(r#"{"model":"m","messages":[]}"#).1,
            Some("messages".into())
        );
        assert_eq!(
            error(&format!(r#"{{"model":"m",{m},"temperature":3.1}}"#)).0,
            "`temperature` must be between 0 and 2, got 3.1"
        );
        assert_eq!(
            error(&format!(r#"{{"model":"m",{m},"max_tokens":-1}}"#)).0,
            "`max_tokens` must be a positive integer, got -1"
        );
        let (message, param) = error(&format!(r#"{{"model":"m",{m},"temperature":"hot"}}"#));
        assert_eq!(param, Some("temperature".into()));
        assert!(
            message.starts_with("`temperature`: invalid type: string \"hot\""),
            "{message}"
        );
        let (message, param) = error(
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"robot","content":"b"}]}"#,
        );
        assert_eq!(param, Some("messages[1].role".into()));
        assert!(message.contains("got `robot`"));
        let (_, param) = error(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#);
        assert_eq!(param, Some("messages[0].content".into()));
        let (_, param) =
            error(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
        assert_eq!(param, Some("messages[0].content[0].image_url".into()));
        let (_, param) = error(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
        );
        assert_eq!(param, Some("messages[0].content[1].image_url.url".into()));
        let (_, param) = error(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}"#,
        );
        assert_eq!(param, Some("messages[0].content[0].type".into()));
        assert_eq!(
            error(&format!(r#"{{"model":"m",{m},"n":9}}"#)).1,
            Some("n".into())
        );
    }
}
