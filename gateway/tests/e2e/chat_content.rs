//! Content, usage, shapes and headers of streamed and non-streamed completions.

use llm_sim::completion_text;
use serde_json::json;

use crate::support::{SseData, Stack, quick_sim, sse_data, streamed_text};

#[tokio::test]
async fn non_stream_returns_the_simulated_text_usage_and_explaining_headers() {
    let stack = Stack::start(quick_sim()).await;
    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "team-a")
        .header("x-priority", "batch")
        .json(&json!({
            "model": "llama3.2",
            "seed": 42,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-llmgw-tenant"], "team-a");
    assert_eq!(headers["x-llmgw-priority"], "batch");
    assert_eq!(headers["x-llmgw-queue-ms"], "0");
    let backend = headers["x-llmgw-backend"].to_str().unwrap();
    assert!(backend.starts_with("ollama-"), "{backend}");
    assert!(
        !backend.contains("127.0.0.1"),
        "no internal address: {backend}"
    );
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        completion_text("be brief\nsay hello", 42, 8)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12})
    );
}

#[tokio::test]
async fn stream_sends_role_then_tokens_then_finish_then_done() {
    let stack = Stack::start(quick_sim()).await;
    let response = stack
        .chat(json!({"model": "llama3.2", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "count"}]}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_data(&response.text().await.unwrap());
    // role chunk, 5 token chunks, finish chunk, [DONE]
    assert_eq!(events.len(), 8, "{events:?}");
    let SseData::Json(first) = &events[0] else {
        panic!()
    };
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(
        first.get("usage").is_none(),
        "no usage key without include_usage"
    );
    assert_eq!(streamed_text(&events), completion_text("count", 0, 5));
    let SseData::Json(finish) = &events[6] else {
        panic!()
    };
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(events[7], SseData::Done);
    let ids: std::collections::HashSet<_> = events
        .iter()
        .filter_map(|e| {
            if let SseData::Json(c) = e {
                Some(c["id"].clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ids.len(), 1, "every chunk carries the same id");
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk_with_empty_choices() {
    let stack = Stack::start(quick_sim()).await;
    let response = stack
        .chat(json!({
            "model": "llama3.2", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "two words"}],
        }))
        .await;
    let events = sse_data(&response.text().await.unwrap());
    let n = events.len();
    assert_eq!(events[n - 1], SseData::Done);
    let SseData::Json(usage) = &events[n - 2] else {
        panic!()
    };
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
    );
    for event in &events[..n - 2] {
        let SseData::Json(chunk) = event else {
            panic!()
        };
        assert!(chunk["usage"].is_null() && chunk.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(streamed_text(&events), completion_text("two words", 0, 8));
}

#[tokio::test]
async fn models_lists_the_backend_models_in_openai_shape() {
    let stack = Stack::start(quick_sim()).await;
    let body: serde_json::Value = stack
        .http
        .get(stack.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama3.2:latest", "smollm2:135m"]);
    assert_eq!(body["data"][0]["object"], "model");
    let health = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");
}
