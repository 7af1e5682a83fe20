//! Anthropic's Messages request (`POST /v1/messages`, and `/v1/messages/count_tokens`) as the
//! scheduler's chat: `system` (a string or text blocks) becomes a system message; content
//! blocks — `text`, `image` (base64 source), an assistant's `tool_use`, a user's `tool_result`
//! — become messages, images, tool calls and tool results; `tools` (`input_schema`) and
//! `tool_choice` (`auto`, `any`, `tool`, `none`) take OpenAI's form the backends already speak;
//! `max_tokens` is required, `stop_sequences` are the stop list, `top_k` an engine option.
//! Every 400 names its field.

use llmgw_proto::v1::{ChatRequest, Image, Message, SamplingParams, Tool, ToolCall};
use serde_json::{Value, json};

use super::fields::{
    body_object, engine_options, field, function_tool, model, positive, ranged, required, string_at,
};
use crate::error::ApiError;

/// A parsed Messages request.
#[derive(Debug)]
pub struct ValidMessages {
    pub request: ChatRequest,
    pub stream: bool,
}

/// Fields accepted and not acted on (`metadata.user_id` is the client's own label).
const IGNORED: [&str; 4] = ["metadata", "service_tier", "container", "thinking"];

/// Parses a `/v1/messages` body; `counting` is `/v1/messages/count_tokens`, where `max_tokens`
/// is not required.
pub fn parse(body: &[u8], counting: bool) -> Result<ValidMessages, ApiError> {
    let mut object = body_object(body)?;
    let model = model(&mut object)?;
    let max_tokens = positive(&mut object, "max_tokens")?;
    if max_tokens.is_none() && !counting {
        return Err(ApiError::invalid("max_tokens", "`max_tokens` is required"));
    }
    let mut messages = match field::<Value>(&mut object, "system")? {
        None => Vec::new(),
        Some(system) => vec![Message {
            role: "system".to_owned(),
            content: text_of("system", &system)?,
            ..Default::default()
        }],
    };
    let given: Vec<Value> = required(&mut object, "messages")?;
    if given.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (index, message) in given.iter().enumerate() {
        turn(index, message, &mut messages)?;
    }
    let stop = field::<Vec<String>>(&mut object, "stop_sequences")?.unwrap_or_default();
    let sampling = SamplingParams {
        temperature: ranged(&mut object, "temperature", 0.0, 1.0)?,
        top_p: ranged(&mut object, "top_p", 0.0, 1.0)?,
        max_tokens,
        stop,
        ..Default::default()
    };
    let tools = field::<Vec<Value>>(&mut object, "tools")?
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, tool)| tool_of(index, tool))
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice_json = match field::<Value>(&mut object, "tool_choice")? {
        None => String::new(),
        Some(choice) => tool_choice(&choice)?.to_string(),
    };
    let stream = field::<bool>(&mut object, "stream")?.unwrap_or(false) && !counting;
    for name in IGNORED {
        object.remove(name);
    }
    let extra_json = engine_options(object, "")?;
    Ok(ValidMessages {
        request: ChatRequest {
            model,
            messages,
            sampling: Some(sampling),
            tools,
            tool_choice_json,
            stream,
            extra_json,
            n: 1,
            ..Default::default()
        },
        stream,
    })
}

/// One conversation turn: a user or assistant message, its blocks spread into messages.
fn turn(index: usize, message: &Value, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let path = format!("messages[{index}]");
    let role = match message.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(ApiError::invalid(
                format!("{path}.role"),
                format!("`{path}.role` must be `user` or `assistant`"),
            ));
        }
    };
    let blocks = match message.get("content") {
        Some(Value::String(text)) => {
            out.push(Message {
                role: role.to_owned(),
                content: text.clone(),
                ..Default::default()
            });
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(ApiError::invalid(
                format!("{path}.content"),
                format!("`{path}.content` must be a string or an array of content blocks"),
            ));
        }
    };
    let mut said = Message {
        role: role.to_owned(),
        ..Default::default()
    };
    for (block_index, block) in blocks.iter().enumerate() {
        let at = format!("{path}.content[{block_index}]");
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => said.content.push_str(&string_at(block, "text", &at)?),
            ("user", Some("image")) => said.images.push(image(block, &at)?),
            ("assistant", Some("tool_use")) => said.tool_calls.push(ToolCall {
                id: string_at(block, "id", &at)?,
                r#type: "function".to_owned(),
                name: string_at(block, "name", &at)?,
                arguments_json: block.get("input").cloned().unwrap_or(json!({})).to_string(),
            }),
            ("user", Some("tool_result")) => out.push(Message {
                role: "tool".to_owned(),
                tool_call_id: string_at(block, "tool_use_id", &at)?,
                content: match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(content) => text_of(&format!("{at}.content"), content)?,
                },
                ..Default::default()
            }),
            (_, kind) => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!(
                        "`{at}.type` `{}` is not supported in a `{role}` message",
                        kind.unwrap_or("")
                    ),
                ));
            }
        }
    }
    if !said.content.is_empty() || !said.images.is_empty() || !said.tool_calls.is_empty() {
        out.push(said);
    }
    Ok(())
}

/// Text given as a string or as text blocks (`system`, a tool result's `content`).
fn text_of(path: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                let at = format!("{path}[{index}]");
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => string_at(block, "text", &at),
                    _ => Err(ApiError::invalid(
                        format!("{at}.type"),
                        format!("`{at}.type` must be `text` here"),
                    )),
                }
            })
            .collect(),
        _ => Err(ApiError::invalid(
            path,
            format!("`{path}` must be a string or an array of text blocks"),
        )),
    }
}

/// An `image` block: a base64 source (a `url` source would make the gateway fetch it).
fn image(block: &Value, at: &str) -> Result<Image, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let path = format!("{at}.source");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = string_at(source, "media_type", &path)?;
            let data = string_at(source, "data", &path)?;
            super::image::from_url(
                &format!("{path}.data"),
                &format!("data:{media_type};base64,{data}"),
            )
        }
        _ => Err(ApiError::invalid(
            format!("{path}.type"),
            format!(
                "`{path}.type` must be `base64`: remote images are not fetched; send the image inline"
            ),
        )),
    }
}

fn tool_of(index: usize, tool: &Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{index}]");
    let schema = match tool.get("input_schema") {
        Some(schema @ Value::Object(_)) => schema.to_string(),
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.input_schema"),
                format!("`{at}.input_schema` must be a JSON Schema object"),
            ));
        }
    };
    function_tool(tool, &at, schema)
}

/// Anthropic's `tool_choice` in OpenAI's form.
fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(json!("auto")),
        Some("any") => Ok(json!("required")),
        Some("none") => Ok(json!("none")),
        Some("tool") => Ok(json!({
            "type": "function",
            "function": {"name": string_at(choice, "name", "tool_choice")?},
        })),
        _ => Err(ApiError::invalid(
            "tool_choice.type",
            "`tool_choice.type` must be `auto`, `any`, `tool` or `none`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(body: &str) -> Option<String> {
        match parse(body.as_bytes(), false) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_conversation_with_tools_becomes_the_schedulers_chat() {
        let body = r#"{"model":"m","max_tokens":64,"system":[{"type":"text","text":"be brief"}],
            "stop_sequences":["END"],"temperature":0.5,
            "tools":[{"name":"weather","description":"d","input_schema":{"type":"object"}}],
            "tool_choice":{"type":"tool","name":"weather"},
            "messages":[{"role":"user","content":"weather in Paris?"},
              {"role":"assistant","content":[{"type":"text","text":"checking"},
                {"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},
                {"type":"text","text":"thanks"}]}]}"#;
        let ValidMessages { request, stream } = parse(body.as_bytes(), false).unwrap();
        assert!(!stream);
        let roles: Vec<&str> = request.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(request.messages[0].content, "be brief");
        assert_eq!(
            request.messages[2].tool_calls[0].arguments_json,
            r#"{"city":"Paris"}"#
        );
        assert_eq!(request.messages[3].tool_call_id, "toolu_1");
        assert_eq!(request.messages[3].content, "sunny");
        let sampling = request.sampling.unwrap();
        assert_eq!(
            (sampling.max_tokens, sampling.stop),
            (Some(64), vec!["END".to_owned()])
        );
        assert_eq!(request.tools[0].parameters_json, r#"{"type":"object"}"#);
        assert_eq!(
            request.tool_choice_json,
            r#"{"function":{"name":"weather"},"type":"function"}"#
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            param(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#)
                .as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param(r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}"#).as_deref(),
            Some("messages[0].content[0].source.type")
        );
        assert_eq!(
            param(r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b"}]}]}"#).as_deref(),
            Some("messages[0].content[0].type")
        );
        assert_eq!(
            param(r#"{"model":"m","max_tokens":1,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}"#).as_deref(),
            Some("temperature")
        );
        assert!(
            parse(
                br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                true
            )
            .is_ok()
        );
    }
}
