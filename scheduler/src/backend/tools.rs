//! Tool definitions and tool-call arguments as both wire protocols spell them (the same JSON
//! shape), so a tool offered through one backend kind reaches another unchanged.

use llmgw_proto::v1::Tool;
use serde_json::{Map, Value};

/// `tools` as `[{"type": "function", "function": {name, description, parameters}}]`.
pub(crate) fn tools_json(tools: Vec<Tool>) -> Vec<Value> {
    tools
        .into_iter()
        .map(|tool| {
            serde_json::json!({
                "type": if tool.r#type.is_empty() { "function".to_owned() } else { tool.r#type },
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": json_or_string(&tool.parameters_json),
                },
            })
        })
        .collect()
}

/// JSON text as a value: empty is `{}`, text that is not JSON stays a string (the engine
/// then says what it thinks of it; the gateway has validated what clients send).
pub(crate) fn json_or_string(text: &str) -> Value {
    if text.is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_keep_their_schema_and_default_to_function() {
        let tools = tools_json(vec![Tool {
            name: "f".into(),
            parameters_json: r#"{"type":"object"}"#.into(),
            ..Default::default()
        }]);
        assert_eq!(tools[0]["type"], "function");
        assert_eq!(tools[0]["function"]["parameters"]["type"], "object");
        assert_eq!(json_or_string(""), serde_json::json!({}));
        assert_eq!(json_or_string("x y"), Value::String("x y".into()));
    }
}
