//! Structured-output requests: the input (a JSON value) is put as `response_format` into an
//! otherwise valid `/v1/chat/completions` body, and as `format` into an otherwise valid Ollama
//! `/api/chat` body, and both parsers are checked against the rules they document:
//! - OpenAI: absent/`null` or `{"type":"text"}` is no format; `{"type":"json_object"}` is JSON
//!   mode; `{"type":"json_schema","json_schema":{"schema":{..}}}` (with `name` a string and
//!   `strict` a boolean or null, both optional) is a schema whose `schema_json` is that schema;
//!   anything else is a 400 naming a `response_format…` field.
//! - Ollama: `"json"` is JSON mode, an object is the schema itself, anything else a 400 on
//!   `format`.
//!
//! A schema always reaches the scheduler as JSON text equal to the schema the client sent.
#![no_main]

use gateway::error::ApiError;
use gateway::translate::{ollama_request, request};
use libfuzzer_sys::fuzz_target;
use llmgw_proto::v1::ResponseFormat;
use llmgw_proto::v1::response_format::Kind as FormatKind;
use serde_json::{Value, json};

/// The format the documented rules give, or `Err(())` for a refusal.
type Expected = Result<Option<(FormatKind, String, Value, bool)>, ()>;

fuzz_target!(|input: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(input) else {
        return;
    };

    let body = json!({
        "model": "m",
        "messages": [{ "role": "user", "content": "hi" }],
        "response_format": value,
    });
    let body = serde_json::to_vec(&body).expect("a Value serializes");
    // One level deeper than the input: past serde_json's nesting limit the body is not JSON.
    if serde_json::from_slice::<Value>(&body).is_ok() {
        let parsed = request::parse(&body).map(|valid| valid.request.response_format);
        check(parsed, openai_rule(&value), "response_format");
    }

    let body = json!({
        "model": "m",
        "messages": [{ "role": "user", "content": "hi" }],
        "format": value,
    });
    let body = serde_json::to_vec(&body).expect("a Value serializes");
    if serde_json::from_slice::<Value>(&body).is_ok() {
        let parsed = ollama_request::chat(&body).map(|chat| chat.request.response_format);
        check(parsed, ollama_rule(&value), "format");
    }
});

fn openai_rule(value: &Value) -> Expected {
    let format = match value {
        Value::Null => return Ok(None),
        Value::Object(format) => format,
        _ => return Err(()),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some((
            FormatKind::JsonObject,
            String::new(),
            Value::Null,
            false,
        ))),
        Some("json_schema") => {
            let Some(Value::Object(spec)) = format.get("json_schema") else {
                return Err(());
            };
            let Some(schema @ Value::Object(_)) = spec.get("schema") else {
                return Err(());
            };
            let name = match spec.get("name") {
                None => String::new(),
                Some(Value::String(name)) => name.clone(),
                Some(_) => return Err(()),
            };
            let strict = match spec.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(strict)) => *strict,
                Some(_) => return Err(()),
            };
            Ok(Some((FormatKind::JsonSchema, name, schema.clone(), strict)))
        }
        _ => Err(()),
    }
}

fn ollama_rule(value: &Value) -> Expected {
    match value {
        Value::Null => Ok(None),
        Value::String(kind) if kind == "json" => Ok(Some((
            FormatKind::JsonObject,
            String::new(),
            Value::Null,
            false,
        ))),
        schema @ Value::Object(_) => Ok(Some((
            FormatKind::JsonSchema,
            String::new(),
            schema.clone(),
            false,
        ))),
        _ => Err(()),
    }
}

fn check(parsed: Result<Option<ResponseFormat>, ApiError>, expected: Expected, field: &str) {
    match (parsed, expected) {
        (Ok(None), Ok(None)) => {}
        (Ok(Some(format)), Ok(Some((kind, name, schema, strict)))) => {
            assert_eq!(format.kind(), kind);
            assert_eq!(format.name, name);
            assert_eq!(format.strict, strict);
            if kind == FormatKind::JsonSchema {
                let sent: Value = serde_json::from_str(&format.schema_json)
                    .unwrap_or_else(|err| panic!("schema_json is not JSON ({err})"));
                assert!(
                    same(&sent, &schema),
                    "the schema changed: {sent} != {schema}"
                );
            } else {
                assert!(format.schema_json.is_empty());
            }
        }
        (Err(ApiError::InvalidRequest { param, .. }), Err(())) => {
            let param = param.expect("a refused format names its field");
            assert!(param.starts_with(field), "{param} does not name `{field}`");
        }
        (parsed, expected) => panic!("parsed {parsed:?}, the rules say {expected:?}"),
    }
}

/// Equal JSON, floats within a few units in the last place: serde_json's default float parsing
/// is best-effort (no `float_roundtrip`), so a float read twice may move by an ulp.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-14,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}
