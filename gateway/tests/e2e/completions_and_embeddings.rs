//! `/v1/completions` and `/v1/embeddings` through the whole stack, over both backend kinds
//! (Ollama `/api/generate` and `/api/embed`, OpenAI `/v1/completions` and `/v1/embeddings`):
//! the answers are exactly what the engine computed, streamed and not; governance, admission
//! and errors apply as for chat.

use base64::Engine as _;
use llm_sim::completion_text;
use llm_sim::embeddings::embedding;
use serde_json::{Value, json};

use crate::support::{Stack, quick_sim, sse_objects, two_kinds};

async fn post(stack: &Stack, path: &str, body: Value) -> reqwest::Response {
    stack
        .http
        .post(stack.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn text_completions_continue_the_prompt_on_both_backend_kinds() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let tokens = quick_sim().output_tokens;
    let expected = completion_text("Once upon a time", 0, tokens);
    for model in ["via-ollama", "via-openai"] {
        let body = json!({"model": model, "prompt": "Once upon a time"});
        let response = post(&stack, "/v1/completions", body).await;
        assert_eq!(response.status(), 200, "{model}");
        assert!(
            response.headers()["x-llmgw-backend"]
                .to_str()
                .unwrap()
                .contains('-')
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["object"], "text_completion", "{answer}");
        assert!(answer["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(answer["choices"][0]["text"], expected, "{model}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
        assert_eq!(answer["usage"]["prompt_tokens"], 4);
        assert_eq!(answer["usage"]["completion_tokens"], tokens);

        let body = json!({"model": model, "prompt": "Once upon a time", "stream": true,
                          "max_tokens": 3, "stream_options": {"include_usage": true}});
        let response = post(&stack, "/v1/completions", body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let chunks = sse_objects(&text);
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(
            streamed,
            completion_text("Once upon a time", 0, 3),
            "{model}"
        );
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("length")]);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 3);
    }
}

#[tokio::test]
async fn embeddings_are_the_engines_vectors_on_both_backend_kinds() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    for model in ["via-ollama", "via-openai"] {
        let body = json!({"model": model, "input": ["the cat", "a dog barks"]});
        let response = post(&stack, "/v1/embeddings", body).await;
        assert_eq!(response.status(), 200, "{model}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["object"], "list");
        assert_eq!(answer["model"], model);
        for (index, text) in ["the cat", "a dog barks"].iter().enumerate() {
            let vector: Vec<f32> =
                serde_json::from_value(answer["data"][index]["embedding"].clone()).unwrap();
            assert_eq!(vector, embedding(text, None), "{model} input {index}");
            assert_eq!(answer["data"][index]["index"], index);
        }
        assert_eq!(answer["usage"]["prompt_tokens"], 5);
        assert_eq!(answer["usage"]["total_tokens"], 5);

        // One string, shortened, as base64 (what the OpenAI SDK asks for by default).
        let body = json!({"model": model, "input": "the cat", "dimensions": 4, "encoding_format": "base64"});
        let answer: Value = post(&stack, "/v1/embeddings", body)
            .await
            .json()
            .await
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(answer["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let vector: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(vector, embedding("the cat", Some(4)), "{model}");
    }
}

#[tokio::test]
async fn bad_input_and_unknown_models_are_refused_like_chat() {
    let stack = Stack::start(quick_sim()).await;
    let cases = [
        (
            "/v1/embeddings",
            json!({"model": "llama3.2"}),
            400,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "llama3.2", "input": [""]}),
            400,
            Some("input[0]"),
        ),
        ("/v1/embeddings", json!({"input": "x"}), 400, Some("model")),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": ["a", "b"]}),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "a", "echo": true}),
            400,
            Some("echo"),
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "a", "temperature": 9}),
            400,
            Some("temperature"),
        ),
    ];
    for (path, body, status, param) in cases {
        let response = post(&stack, path, body.clone()).await;
        assert_eq!(response.status(), status, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["error"]["param"].as_str(),
            param,
            "{path} {body}: {error}"
        );
    }
    assert_eq!(
        stack.sim().stats().requests,
        0,
        "nothing reached the backend"
    );
    // The backend's own 404 for a model it lacks, as for chat.
    let response = post(
        &stack,
        "/v1/embeddings",
        json!({"model": "nope", "input": "x"}),
    )
    .await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found", "{error}");
}

#[tokio::test]
async fn upstream_failures_map_to_the_same_statuses_as_chat() {
    let stack = Stack::start(quick_sim()).await;
    let embed = json!({"model": "llama3.2", "input": "x"});
    let complete = json!({"model": "llama3.2", "prompt": "x"});
    // The engine overloaded: 503 with its own Retry-After (llm-sim sends 7).
    stack.sim().set_fault(llm_sim::Fault::Status(503));
    for (path, body) in [("/v1/embeddings", &embed), ("/v1/completions", &complete)] {
        let response = post(&stack, path, body.clone()).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(
            response.headers()["x-llmgw-reason"],
            "backend_overloaded",
            "{path}"
        );
        assert_eq!(response.headers()["retry-after"], "7", "{path}");
    }
    // Garbage instead of the protocol: 502.
    stack.sim().set_fault(llm_sim::Fault::Garbage);
    let response = post(&stack, "/v1/completions", complete.clone()).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-llmgw-reason"], "backend_bad_response");
}
