//! Messages larger than tonic's default 4 MiB cross the gateway → scheduler hop: a prompt the
//! gateway accepts (`GATEWAY_MAX_BODY_BYTES`) is never refused by the hop behind it.

use crate::support::{Stack, chat_body, quick_sim};

#[tokio::test]
async fn a_prompt_over_four_mebibytes_is_served_when_the_body_limit_allows_it() {
    let stack = Stack::start_with(Some(quick_sim()), |_| {}, |g| g.max_body_bytes = 8 << 20).await;
    let prompt = "word ".repeat(1_100_000); // 5.5 MB
    let response = stack.chat(chat_body("llama3.2", &prompt)).await;
    let status = response.status();
    if status != 200 {
        panic!("{status}: {}", response.text().await.unwrap());
    }
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 1_100_000);
}
