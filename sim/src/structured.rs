//! Structured output: asked for JSON (Ollama `format`, OpenAI `response_format`), the simulator
//! answers with a JSON document — any object, or one that satisfies the given JSON Schema —
//! that is a pure function of (prompt, seed, schema), streamed in small pieces like tokens.

use serde_json::{Map, Value, json};

use crate::text::completion_tokens;

/// The JSON asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonFormat {
    /// Any JSON object (`"json"`, `json_object`).
    Any,
    /// An instance of this schema (`$ref`s into `$defs`/`definitions` are followed).
    Schema(Value),
}

impl JsonFormat {
    /// Ollama's `format`: `"json"` or a schema object.
    pub fn from_ollama(format: &Value) -> Option<Self> {
        match format {
            Value::String(kind) if kind == "json" => Some(Self::Any),
            Value::Object(_) => Some(Self::Schema(format.clone())),
            _ => None,
        }
    }

    /// OpenAI's `response_format`: `json_object` (with llama.cpp's optional `schema`) or
    /// `json_schema` with `json_schema.schema`.
    pub fn from_openai(format: &Value) -> Option<Self> {
        match format.get("type").and_then(Value::as_str)? {
            "json_object" => Some(
                format
                    .get("schema")
                    .map_or(Self::Any, |schema| Self::Schema(schema.clone())),
            ),
            "json_schema" => Some(Self::Schema(
                format.get("json_schema")?.get("schema")?.clone(),
            )),
            _ => None,
        }
    }
}

/// The answer's text: a JSON document for `format`, seeded by `prompt` and `seed`.
pub fn json_answer(prompt: &str, seed: u64, format: &JsonFormat) -> String {
    let mut words = Words {
        words: completion_tokens(prompt, seed, 64),
        next: 0,
    };
    let value = match format {
        JsonFormat::Any => json!({ "answer": words.phrase(6) }),
        JsonFormat::Schema(schema) => instance(schema, schema, &mut words, 0),
    };
    value.to_string()
}

/// `text` cut into token-sized pieces (4 characters), so it streams like tokens.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

struct Words {
    words: Vec<String>,
    next: usize,
}

impl Words {
    fn word(&mut self) -> String {
        let word = self.words[self.next % self.words.len()].trim().to_owned();
        self.next += 1;
        word
    }

    fn phrase(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| self.word())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn number(&mut self) -> u64 {
        let word = self.word();
        word.bytes().map(u64::from).sum::<u64>() % 100
    }
}

/// Nested schemas deeper than this become `null` (a self-referencing schema must end).
const MAX_DEPTH: usize = 8;

fn instance(schema: &Value, root: &Value, words: &mut Words, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        return resolve(root, target).map_or(Value::Null, |target| {
            instance(target, root, words, depth + 1)
        });
    }
    if let Some(first) = schema.get("const") {
        return first.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|s| s.first())
        {
            return instance(first, root, words, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds.iter().find_map(Value::as_str).unwrap_or("object"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), instance(property, root, words, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            let count = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 4);
            Value::Array(
                (0..count)
                    .map(|_| instance(&item, root, words, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(words.number()),
        "number" => json!(words.number() as f64 + 0.5),
        "boolean" => json!(words.number().is_multiple_of(2)),
        "null" => Value::Null,
        _ => json!(words.phrase(2)),
    }
}

/// A local `$ref` (`#/$defs/Name`, `#/definitions/Name`).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix("#/")?;
    path.split('/').try_fold(root, |node, part| node.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_gets_an_instance_with_every_property_and_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "pet": {"$ref": "#/$defs/Pet"},
                "mood": {"enum": ["calm", "busy"]}
            },
            "$defs": {"Pet": {"type": "object", "properties": {"legs": {"type": "integer"}}}}
        });
        let text = json_answer("hi", 1, &JsonFormat::Schema(schema.clone()));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["name"].is_string());
        assert!(value["age"].is_u64());
        assert!(value["tags"][0].is_string());
        assert!(value["pet"]["legs"].is_u64());
        assert_eq!(value["mood"], "calm");
        assert_eq!(text, json_answer("hi", 1, &JsonFormat::Schema(schema)));
        assert_eq!(pieces(&text).concat(), text);
    }

    #[test]
    fn both_spellings_are_understood() {
        assert_eq!(
            JsonFormat::from_ollama(&json!("json")),
            Some(JsonFormat::Any)
        );
        assert_eq!(
            JsonFormat::from_openai(&json!({"type": "json_object"})),
            Some(JsonFormat::Any)
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            JsonFormat::from_openai(
                &json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            ),
            Some(JsonFormat::Schema(schema.clone()))
        );
        assert_eq!(
            JsonFormat::from_openai(&json!({"type": "json_object", "schema": schema})),
            Some(JsonFormat::Schema(schema))
        );
        assert_eq!(JsonFormat::from_openai(&json!({"type": "text"})), None);
        let any: Value = serde_json::from_str(&json_answer("q", 0, &JsonFormat::Any)).unwrap();
        assert!(any["answer"].is_string());
    }
}
