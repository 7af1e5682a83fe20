//! Structured outputs (`response_format`): `json_object` and `json_schema` reach each backend
//! kind in its own spelling — Ollama's `format`, OpenAI's `response_format`, and the
//! `json_object` + `schema` form of llama-cpp-python — and the answer is the JSON the engine
//! made for that schema, streamed and not. A malformed `response_format` is a 400 naming the
//! field.

use llm_sim::structured::{JsonFormat, json_answer};
use llm_sim::{SimConfig, completion_text};
use serde_json::{Value, json};

use crate::support::{Stack, chat_body, quick_sim, sse_data, streamed_text};

/// One sim per spelling, one public model for each.
fn three_spellings(urls: &[String]) -> String {
    format!(
        r#"
        [[pool]]
        name = "ollama"
        [[pool.endpoint]]
        url = "{}"
        kind = "ollama"
        slots = 4

        [[pool]]
        name = "openai"
        [[pool.endpoint]]
        url = "{}"
        kind = "openai"
        slots = 4

        [[pool]]
        name = "llamacpp"
        [[pool.endpoint]]
        url = "{}"
        kind = "openai"
        slots = 4
        schema_format = "json_object_schema"

        [[model]]
        name = "via-ollama"
        [[model.version]]
        name = "v"
        pool = "ollama"
        upstream = "llama3.2"

        [[model]]
        name = "via-openai"
        [[model.version]]
        name = "v"
        pool = "openai"
        upstream = "llama3.2"

        [[model]]
        name = "via-llamacpp"
        [[model.version]]
        name = "v"
        pool = "llamacpp"
        upstream = "llama3.2"
        "#,
        urls[0], urls[1], urls[2]
    )
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

async fn answer(stack: &Stack, model: &str, format: Value, stream: bool) -> String {
    let mut body = chat_body(model, "describe someone");
    body["response_format"] = format;
    body["stream"] = json!(stream);
    let response = stack.chat(body).await;
    assert_eq!(response.status(), 200, "{model}");
    if stream {
        streamed_text(&sse_data(&response.text().await.unwrap()))
    } else {
        let body: Value = response.json().await.unwrap();
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[tokio::test]
async fn a_schema_reaches_every_backend_kind_and_the_answer_is_its_json() {
    let sims = vec![quick_sim(), quick_sim(), quick_sim()];
    let stack = Stack::fleet(sims, three_spellings, |_| {}).await;
    let schema_format = json!({
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": person_schema(), "strict": true}
    });
    let expected = json_answer("describe someone", 0, &JsonFormat::Schema(person_schema()));
    for model in ["via-ollama", "via-openai", "via-llamacpp"] {
        for stream in [false, true] {
            let text = answer(&stack, model, schema_format.clone(), stream).await;
            assert_eq!(text, expected, "{model} stream={stream}");
            let person: Value = serde_json::from_str(&text).unwrap();
            assert!(
                person["name"].is_string() && person["age"].is_u64() && person["tags"].is_array()
            );
        }
        let any = answer(&stack, model, json!({"type": "json_object"}), false).await;
        assert_eq!(
            any,
            json_answer("describe someone", 0, &JsonFormat::Any),
            "{model}"
        );
        // `text` is the default: free text, as without a format.
        let text = answer(&stack, model, json!({"type": "text"}), false).await;
        assert_eq!(
            text,
            completion_text("describe someone", 0, quick_sim().output_tokens)
        );
    }
}

#[tokio::test]
async fn a_malformed_response_format_is_refused_naming_the_field() {
    let stack = Stack::start(SimConfig::default()).await;
    let cases = [
        (json!({"type": "xml"}), "response_format.type"),
        (json!("json"), "response_format"),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}),
            "response_format.json_schema.strict",
        ),
    ];
    for (format, param) in cases {
        let mut body = chat_body("llama3.2", "hi");
        body["response_format"] = format.clone();
        let response = stack.chat(body).await;
        assert_eq!(response.status(), 400, "{format}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{format}: {error}");
    }
    assert_eq!(
        stack.sim().stats().requests,
        0,
        "nothing reached the backend"
    );
}
