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

#[tokio::test]
async fn a_keep_alive_clients_next_request_after_a_drained_stream_is_answered_with_close() {
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 10,
        ..SimConfig::default()
    };
    let stack = Stack::start(sim).await;
    // One pooled connection: the next request goes on the stream's connection.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .unwrap();
    let mut body = chat_body("llama3.2", "finish me");
    body["stream"] = json!(true);
    let mut response = client
        .post(stack.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("connection").is_none());
    let mut text = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    stack.begin_shutdown();
    text.push_str(&response.text().await.unwrap());
    assert_eq!(sse_data(&text).last(), Some(&SseData::Done));

    // Written right as the stream ended, on its keep-alive connection: answered (by the
    // gateway; the scheduler behind it may be shutting down too), and told to close.
    let next = client
        .post(stack.url("/v1/chat/completions"))
        .json(&chat_body("llama3.2", "next"))
        .send()
        .await
        .expect("the next request on the drained connection gets an answer");
    assert!(
        [200, 503].contains(&next.status().as_u16()),
        "{}",
        next.status()
    );
    assert_eq!(
        next.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let _ = next.bytes().await;
    // That connection is closed now and the listener too: nothing more is accepted.
    let after = client
        .post(stack.url("/v1/chat/completions"))
        .json(&chat_body("llama3.2", "late"))
        .send()
        .await;
    assert!(
        after.is_err(),
        "no new connection while draining: {after:?}"
    );
}
