//! Nothing waits unbounded: a full queue refuses at once with 429 and an honest Retry-After,
//! and an expired wait is a 503 with a reason.

use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::json;

use crate::support::{Stack, chat_body, eventually};

fn holding_sim() -> SimConfig {
    SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 500,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn full_queue_is_429_with_retry_after() {
    let stack = Stack::start_with(
        Some(holding_sim()),
        |s| {
            s.max_concurrency = 1;
            s.max_queue = 1;
        },
        |_| {},
    )
    .await;
    let mut body = chat_body("llama3.2", "hold");
    body["stream"] = json!(true);
    let holder = stack.chat(body).await;
    assert_eq!(holder.status(), 200);
    let waiter = {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        tokio::spawn(async move {
            http.post(url)
                .json(&chat_body("llama3.2", "wait"))
                .send()
                .await
        })
    };
    eventually("one request waiting", Duration::from_secs(2), || {
        stack.admission().waiting() == 1
    })
    .await;

    let refused = stack.chat(chat_body("llama3.2", "too many")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(refused.headers()["x-llmgw-reason"], "queue_full");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "queue_full");
    assert_eq!(
        stack.sim().stats().requests,
        1,
        "refused requests never reach the backend"
    );
    waiter.abort();
}

#[tokio::test]
async fn expired_wait_is_503_queue_timeout() {
    let stack = Stack::start_with(
        Some(holding_sim()),
        |s| {
            s.max_concurrency = 1;
            s.queue_timeout_ms = 200;
        },
        |_| {},
    )
    .await;
    let mut body = chat_body("llama3.2", "hold");
    body["stream"] = json!(true);
    let holder = stack.chat(body).await;
    assert_eq!(holder.status(), 200);

    let expired = stack.chat(chat_body("llama3.2", "wait")).await;
    assert_eq!(expired.status(), 503);
    assert_eq!(expired.headers()["x-llmgw-reason"], "queue_timeout");
    assert!(expired.headers().contains_key("retry-after"));
    assert_eq!(stack.admission().waiting(), 0);
    drop(holder);
}
