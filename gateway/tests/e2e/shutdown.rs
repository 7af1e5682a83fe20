//! Graceful shutdown: once asked to stop, the services accept no new requests, but a stream in
//! flight runs to its end.

use llm_sim::{SimConfig, completion_text};
use serde_json::json;

use crate::support::{SseData, Stack, chat_body, sse_data, streamed_text};

#[tokio::test]
async fn an_in_flight_stream_finishes_and_new_requests_are_not_accepted() {
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 20,
        ..SimConfig::default()
    };
    let stack = Stack::start(sim).await;
    let mut body = chat_body("llama3.2", "finish me");
    body["stream"] = json!(true);
    let mut response = stack.chat(body).await;
    assert_eq!(response.status(), 200);
    let mut text = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    stack.begin_shutdown();
    text.push_str(&response.text().await.unwrap());
    let events = sse_data(&text);
    assert_eq!(
        events.last(),
        Some(&SseData::Done),
        "the stream completed during the drain"
    );
    assert_eq!(streamed_text(&events), completion_text("finish me", 0, 20));

    let fresh = reqwest::Client::new();
    let refused = fresh
        .post(stack.url("/v1/chat/completions"))
        .json(&chat_body("llama3.2", "late"))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed: {refused:?}");
}
