//! Bad input gets a 4xx with an OpenAI error envelope naming the field; nothing reaches the
//! backend.

use serde_json::{Value, json};

use crate::support::{Stack, quick_sim};

async fn post_raw(stack: &Stack, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn assert_error(
    status: u16,
    body: &Value,
    want_status: u16,
    want_param: Option<&str>,
    message_contains: &str,
) {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["param"].as_str(), want_param, "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(message_contains),
        "`{message}` should contain `{message_contains}`"
    );
}

#[tokio::test]
async fn each_kind_of_bad_input_is_refused_with_the_field_named() {
    let stack = Stack::start(quick_sim()).await;
    let user = json!([{"role": "user", "content": "hi"}]);

    let (status, body) = post_raw(&stack, "{\"model\": ").await;
    assert_error(status, &body, 400, None, "not valid JSON");

    let (status, body) = post_raw(&stack, json!({"model": 7, "messages": user}).to_string()).await;
    assert_error(
        status,
        &body,
        400,
        Some("model"),
        "invalid type: integer `7`",
    );

    let (status, body) = post_raw(
        &stack,
        json!({"model": "llama3.2", "messages": []}).to_string(),
    )
    .await;
    assert_error(status, &body, 400, Some("messages"), "at least one message");

    let (status, body) = post_raw(
        &stack,
        json!({"model": "llama3.2", "messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_error(status, &body, 400, Some("messages[0].role"), "got `wizard`");

    let (status, body) = post_raw(
        &stack,
        json!({"model": "llama3.2", "messages": user, "max_tokens": -5}).to_string(),
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        Some("max_tokens"),
        "must be a positive integer, got -5",
    );

    let (status, body) = post_raw(
        &stack,
        json!({"model": "llama3.2", "messages": user, "temperature": "warm"}).to_string(),
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        Some("temperature"),
        "invalid type: string",
    );

    let (status, body) = post_raw(
        &stack,
        json!({"model": "llama3.2", "messages": user, "stream": "yes"}).to_string(),
    )
    .await;
    assert_error(status, &body, 400, Some("stream"), "expected a boolean");

    assert_eq!(
        stack.sim().stats().requests,
        0,
        "no bad request may reach the backend"
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_bad_headers_are_400() {
    let stack = Stack::start_with(
        Some(quick_sim()),
        |_| {},
        |gateway| gateway.max_body_bytes = 1024,
    )
    .await;
    let big =
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, body) = post_raw(&stack, big.to_string()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes")
    );

    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-priority", "asap")
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-priority");

    let response = stack
        .http
        .get(stack.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(stack.sim().stats().requests, 0);
}
