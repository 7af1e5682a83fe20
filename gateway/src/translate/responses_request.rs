//! OpenAI's Responses request (`POST /v1/responses`) as the scheduler's chat: `instructions`
//! becomes the system message; `input` — a string, or items: messages (`input_text`,
//! `output_text` and `input_image` parts), an earlier `function_call` and its
//! `function_call_output` — becomes the conversation; `tools` (functions, in the flat form),
//! `tool_choice`, `max_output_tokens`, `temperature`, `top_p` and `text.format` (structured
//! outputs, through the chat path's rules) map onto the chat fields. `store` and
//! `previous_response_id` are the route's to act on. Every 400 names its field.

use llmgw_proto::v1::{ChatRequest, Message, SamplingParams, Tool, ToolCall};
use serde_json::{Map, Value, json};

use super::fields::{
    body_object, engine_options, field, function_tool, model, positive, ranged, string_at,
};
use crate::error::ApiError;

/// A parsed Responses request.
#[derive(Debug)]
pub struct ValidResponses {
    /// The chat for this turn alone: its instructions and input (the route prepends the
    /// stored conversation of `previous_response_id`).
    pub request: ChatRequest,
    /// The input items as messages (the conversation this turn adds), without instructions.
    pub input: Vec<Message>,
    pub instructions: Option<String>,
    pub stream: bool,
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// The request's echoable settings, as the response object repeats them.
    pub echo: Map<String, Value>,
}

/// Fields accepted and not acted on.
const IGNORED: [&str; 7] = [
    "metadata",
    "user",
    "parallel_tool_calls",
    "truncation",
    "reasoning",
    "service_tier",
    "include",
];

/// Parses a `/v1/responses` body.
pub fn parse(body: &[u8]) -> Result<ValidResponses, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let instructions = field::<String>(&mut object, "instructions")?;
    let input = match field::<Value>(&mut object, "input")? {
        Some(Value::String(text)) => vec![Message {
            role: "user".to_owned(),
            content: text,
            ..Default::default()
        }],
        Some(Value::Array(items)) => items_to_messages(&items)?,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or an array of items",
            ));
        }
    };
    if input.is_empty() {
        return Err(ApiError::invalid(
            "input",
            "`input` must contain at least one item",
        ));
    }
    let max_tokens = positive(&mut object, "max_output_tokens")?;
    let sampling = SamplingParams {
        temperature: ranged(&mut object, "temperature", 0.0, 2.0)?,
        top_p: ranged(&mut object, "top_p", 0.0, 1.0)?,
        max_tokens,
        ..Default::default()
    };
    let tools_given = field::<Vec<Value>>(&mut object, "tools")?.unwrap_or_default();
    let tools = tools_given
        .iter()
        .enumerate()
        .map(|(index, tool)| tool_of(index, tool))
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = field::<Value>(&mut object, "tool_choice")?;
    let tool_choice_json = match &tool_choice {
        None => String::new(),
        Some(Value::String(mode)) if ["auto", "none", "required"].contains(&mode.as_str()) => {
            json!(mode).to_string()
        }
        Some(Value::Object(choice)) if choice.get("type") == Some(&json!("function")) => {
            let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid("tool_choice.name", "`tool_choice.name` must be a string")
            })?;
            json!({"type": "function", "function": {"name": name}}).to_string()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` must be `auto`, `none`, `required` or {\"type\":\"function\",\"name\":…}",
            ));
        }
    };
    let text = field::<Value>(&mut object, "text")?;
    let response_format = match text.as_ref().and_then(|text| text.get("format")) {
        None => None,
        Some(format) => format_of(format)?,
    };
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(false);
    let store = field::<bool>(&mut object, "store")?.unwrap_or(true);
    let previous_response_id = field::<String>(&mut object, "previous_response_id")?;
    for name in IGNORED {
        object.remove(name);
    }
    let extra_json = engine_options(object, "")?;
    let mut messages: Vec<Message> = instructions
        .iter()
        .map(|text| Message {
            role: "system".to_owned(),
            content: text.clone(),
            ..Default::default()
        })
        .collect();
    messages.extend(input.iter().cloned());
    let mut echo = Map::new();
    echo.insert("tools".into(), Value::Array(tools_given));
    echo.insert("tool_choice".into(), tool_choice.unwrap_or(json!("auto")));
    echo.insert(
        "text".into(),
        text.unwrap_or(json!({"format": {"type": "text"}})),
    );
    echo.insert("max_output_tokens".into(), json!(max_tokens));
    echo.insert("temperature".into(), json!(sampling.temperature));
    echo.insert("top_p".into(), json!(sampling.top_p));
    Ok(ValidResponses {
        request: ChatRequest {
            model,
            messages,
            sampling: Some(sampling),
            tools,
            tool_choice_json,
            stream,
            extra_json,
            response_format,
            n: 1,
            ..Default::default()
        },
        input,
        instructions,
        stream,
        store,
        previous_response_id,
        echo,
    })
}

/// Input items in order; consecutive `function_call`s join one assistant message.
fn items_to_messages(items: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut messages: Vec<Message> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at = format!("input[{index}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => messages.push(message_item(item, &at)?),
            "function_call" => {
                let call = ToolCall {
                    id: string_at(item, "call_id", &at)?,
                    r#type: "function".to_owned(),
                    name: string_at(item, "name", &at)?,
                    arguments_json: string_at(item, "arguments", &at)?,
                };
                match messages.last_mut() {
                    Some(last) if last.role == "assistant" && last.content.is_empty() => {
                        last.tool_calls.push(call);
                    }
                    _ => messages.push(Message {
                        role: "assistant".to_owned(),
                        tool_calls: vec![call],
                        ..Default::default()
                    }),
                }
            }
            "function_call_output" => messages.push(Message {
                role: "tool".to_owned(),
                tool_call_id: string_at(item, "call_id", &at)?,
                content: string_at(item, "output", &at)?,
                ..Default::default()
            }),
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!(
                        "`{at}.type` `{other}` is not supported; messages, `function_call` and `function_call_output` are"
                    ),
                ));
            }
        }
    }
    Ok(messages)
}

fn message_item(item: &Value, at: &str) -> Result<Message, ApiError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                format!("`{at}.role` must be one of user, assistant, system, developer"),
            ));
        }
    };
    let mut message = Message {
        role: role.to_owned(),
        ..Default::default()
    };
    match item.get("content") {
        Some(Value::String(text)) => message.content.clone_from(text),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                let path = format!("{at}.content[{index}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => {
                        message.content.push_str(&string_at(part, "text", &path)?);
                    }
                    Some("input_image") => {
                        let url = string_at(part, "image_url", &path)?;
                        message
                            .images
                            .push(super::image::from_url(&format!("{path}.image_url"), &url)?);
                    }
                    other => {
                        return Err(ApiError::invalid(
                            format!("{path}.type"),
                            format!(
                                "`{path}.type` `{}` is not supported; `input_text`, `output_text` and `input_image` are",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
        }
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.content"),
                format!("`{at}.content` must be a string or an array of parts"),
            ));
        }
    }
    Ok(message)
}

/// A function tool in the Responses API's flat form.
fn tool_of(index: usize, tool: &Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{index}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            format!("{at}.type"),
            format!("`{at}.type` must be `function`"),
        ));
    }
    let parameters = tool
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    function_tool(tool, &at, parameters.to_string())
}

/// `text.format` through the chat path's `response_format` rules, errors renamed to it.
fn format_of(format: &Value) -> Result<Option<llmgw_proto::v1::ResponseFormat>, ApiError> {
    let chat_form = match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let mut spec = format.as_object().cloned().unwrap_or_default();
            spec.remove("type");
            json!({"type": "json_schema", "json_schema": spec})
        }
        _ => format.clone(),
    };
    let mut object = Map::new();
    object.insert("response_format".into(), chat_form);
    super::request::response_format(&mut object).map_err(|err| match err {
        ApiError::InvalidRequest { message, param } => {
            let rename = |text: String| {
                text.replace("response_format.json_schema", "text.format")
                    .replace("response_format", "text.format")
            };
            ApiError::InvalidRequest {
                message: rename(message),
                param: param.map(rename),
            }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_the_conversation() {
        let body = br#"{"model":"m","instructions":"be brief","max_output_tokens":20,
            "tools":[{"type":"function","name":"weather","parameters":{"type":"object"}}],
            "tool_choice":{"type":"function","name":"weather"},
            "text":{"format":{"type":"json_schema","name":"w","schema":{"type":"object"},"strict":true}},
            "input":[{"role":"user","content":[{"type":"input_text","text":"Paris?"}]},
              {"type":"function_call","call_id":"c1","name":"weather","arguments":"{}"},
              {"type":"function_call_output","call_id":"c1","output":"sunny"}]}"#;
        let valid = parse(body).unwrap();
        let roles: Vec<&str> = valid
            .request
            .messages
            .iter()
            .map(|m| m.role.as_str())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(valid.input.len(), 3);
        assert_eq!(valid.request.messages[2].tool_calls[0].id, "c1");
        assert_eq!(valid.request.sampling.unwrap().max_tokens, Some(20));
        assert!(valid.request.response_format.is_some());
        assert!(valid.store && !valid.stream);
    }

    #[test]
    fn errors_name_the_field() {
        let param = |body: &[u8]| match parse(body) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(param(br#"{"model":"m"}"#).as_deref(), Some("input"));
        assert_eq!(
            param(br#"{"model":"m","input":[{"type":"reasoning"}]}"#).as_deref(),
            Some("input[0].type")
        );
        assert_eq!(
            param(br#"{"model":"m","input":"x","text":{"format":{"type":"json_schema"}}}"#)
                .as_deref(),
            Some("text.format.schema")
        );
        assert_eq!(
            param(br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"}]}]}"#).as_deref(),
            Some("input[0].content[0].image_url")
        );
    }
}
