//! A streamed request that waits for a slot gets SSE comments (proxies keep the connection),
//! and no data chunk before its first real one.

use std::time::Duration;

use llm_sim::{SimConfig, completion_text};
use serde_json::json;

use crate::support::{SseData, Stack, chat_body, eventually, sse_data, streamed_text};

#[tokio::test]
async fn a_waiting_stream_gets_comments_then_its_tokens() {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 15,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(
        Some(sim),
        |s| s.max_concurrency = 1,
        |g| g.sse_keepalive_ms = 50,
    )
    .await;
    let mut body = chat_body("llama3.2", "first");
    body["stream"] = json!(true);
    let holder = stack.chat(body).await;
    assert_eq!(holder.status(), 200);

    let mut body = chat_body("llama3.2", "second");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(3);
    let mut waiting = stack.chat(body).await;
    assert_eq!(waiting.status(), 200, "committed while still queued");
    let stats = stack.sim().stats();
    assert_eq!(
        (stats.started, stats.active),
        (1, 1),
        "headers arrived before the request got a slot"
    );
    eventually("still queued", Duration::from_secs(2), || {
        stack.admission().waiting() == 1
    })
    .await;

    let mut text = String::new();
    while !text.contains(": keep-alive\n\n") {
        let chunk = waiting
            .chunk()
            .await
            .unwrap()
            .expect("stream open while queued");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        stack.sim().stats().started,
        1,
        "still waiting while the keep-alives flow"
    );
    drop(holder);
    text.push_str(&waiting.text().await.unwrap());
    let first_data = text.find("data: ").unwrap();
    let preamble = &text[..first_data];
    assert!(
        preamble.starts_with(": queued position=1\n\n"),
        "{preamble:?}"
    );
    assert!(preamble.contains(": keep-alive\n\n"), "{preamble:?}");
    let queue_ms: u64 = preamble
        .split(": started queue_ms=")
        .nth(1)
        .and_then(|rest| rest.split('\n').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no queue time comment in {preamble:?}"));
    assert!(
        queue_ms >= 50,
        "it waited at least one keep-alive interval, got {queue_ms} ms"
    );
    assert!(
        preamble.lines().all(|l| l.is_empty() || l.starts_with(':')),
        "only comments before data"
    );
    let events = sse_data(&text);
    let SseData::Json(role) = &events[0] else {
        panic!()
    };
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&events), completion_text("second", 0, 3));
    assert_eq!(events.last(), Some(&SseData::Done));
}
