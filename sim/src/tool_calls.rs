//! Tool calls, produced the way a tool-using model decides: offered `tools` and asked by the
//! last user message to use one — its text names the function, e.g. "Use get_weather for
//! Paris" — the simulator answers with one call to it instead of text. The arguments are an
//! instance of the function's `parameters` schema ([`crate::structured`]), a pure function of
//! (prompt, seed), so tests can assert them. After a tool result it answers in text again.

use serde_json::{Map, Value};

use crate::generation::prompt_from_messages;
use crate::structured::{JsonFormat, json_answer};

fn name_of(function: &Value) -> Option<&str> {
    function.get("name").and_then(Value::as_str)
}

/// The one call the simulated model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments as JSON text (OpenAI sends them as a string).
    pub fn arguments_text(&self) -> String {
        self.arguments.to_string()
    }
}

/// The call `messages` ask for among `tools` (both APIs spell a tool
/// `{"type": "function", "function": {"name", "parameters"}}`), if any. OpenAI's
/// `tool_choice` is honoured: `"none"` never calls, a named function is always called,
/// `"required"` calls the named one or else the first.
pub fn chosen(
    tools: &[Value],
    tool_choice: Option<&Value>,
    messages: &[Value],
    prompt: &str,
    seed: u64,
) -> Option<ToolCall> {
    let functions = || tools.iter().filter_map(|tool| tool.get("function"));
    let forced = tool_choice
        .and_then(|choice| choice.get("function"))
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str);
    let required = tool_choice.and_then(Value::as_str) == Some("required");
    if tool_choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last = messages.last()?;
    let asked = if last.get("role").and_then(Value::as_str) == Some("user") {
        prompt_from_messages(std::slice::from_ref(last))
    } else if forced.is_some() || required {
        String::new()
    } else {
        return None;
    };
    let named = |name: &str| {
        asked
            .split(|c: char| !(c.is_alphanumeric() || "_-.".contains(c)))
            .any(|word| word == name)
    };
    let function = match forced {
        Some(forced) => functions().find(|f| name_of(f) == Some(forced)),
        None => functions()
            .find(|f| name_of(f).is_some_and(named))
            .or_else(|| functions().next().filter(|_| required)),
    }?;
    let name = function.get("name")?.as_str()?.to_owned();
    let arguments = match function.get("parameters") {
        Some(schema @ Value::Object(_)) if schema.get("type").is_some() => {
            let text = json_answer(prompt, seed, &JsonFormat::Schema(schema.clone()));
            serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(Map::new()))
        }
        _ => Value::Object(Map::new()),
    };
    Some(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
        ]
    }

    #[test]
    fn a_user_naming_a_tool_gets_a_call_with_schema_shaped_arguments() {
        let messages = vec![json!({"role": "user", "content": "Use get_weather for Paris"})];
        let call = chosen(&tools(), None, &messages, "Use get_weather for Paris", 0).unwrap();
        assert_eq!(call.name, "get_weather");
        assert!(call.arguments["city"].is_string(), "{}", call.arguments);
        assert_eq!(
            chosen(&tools(), None, &messages, "Use get_weather for Paris", 0),
            Some(call),
            "deterministic"
        );
    }

    #[test]
    fn no_call_without_the_name_or_after_a_tool_result() {
        let plain = vec![json!({"role": "user", "content": "What is the weather?"})];
        assert_eq!(chosen(&tools(), None, &plain, "", 0), None);
        let answered = vec![
            json!({"role": "user", "content": "Use get_weather"}),
            json!({"role": "tool", "content": "sunny"}),
        ];
        assert_eq!(chosen(&tools(), None, &answered, "", 0), None);
        assert_eq!(chosen(&[], None, &plain, "", 0), None);
    }

    #[test]
    fn tool_choice_is_honoured() {
        let asked = vec![json!({"role": "user", "content": "Use get_weather"})];
        let plain = vec![json!({"role": "user", "content": "Hello"})];
        let none = json!("none");
        assert_eq!(chosen(&tools(), Some(&none), &asked, "", 0), None);
        let forced = json!({"type": "function", "function": {"name": "get_weather"}});
        assert!(chosen(&tools(), Some(&forced), &plain, "", 0).is_some());
        let required = json!("required");
        assert!(chosen(&tools(), Some(&required), &plain, "", 0).is_some());
        let dotted = vec![json!({"type": "function", "function": {"name": "weather.now"}})];
        let asked = vec![json!({"role": "user", "content": "Call weather.now please"})];
        assert_eq!(
            chosen(&dotted, None, &asked, "", 0).unwrap().name,
            "weather.now"
        );
    }
}
