//! The slot permit lives as long as the generation: a slow stream keeps its slot to the last
//! token, and the next request gets it right after.

use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::json;

use crate::support::{SseData, Stack, chat_body, eventually, sse_data};

#[tokio::test]
async fn a_slow_stream_holds_its_slot_to_the_end_then_the_waiter_runs() {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 40,
        output_tokens: 12,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(Some(sim), |s| s.max_concurrency = 1, |_| {}).await;
    let mut body = chat_body("llama3.2", "slow");
    body["stream"] = json!(true);
    let mut first = stack.chat(body.clone()).await;
    assert_eq!(first.status(), 200);

    let second = {
        let (http, url, body) = (
            stack.http.clone(),
            stack.url("/v1/chat/completions"),
            body.clone(),
        );
        tokio::spawn(async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            let queue_ms: u64 = response.headers()["x-llmgw-queue-ms"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (queue_ms, response.text().await.unwrap())
        })
    };
    eventually("second request waiting", Duration::from_secs(2), || {
        stack.admission().waiting() == 1
    })
    .await;

    let mut text = String::new();
    while let Some(chunk) = first.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if text.ends_with("data: [DONE]\n\n") {
            break;
        }
        // The last token, the finish and the slot release happen together; before them the
        // slot must still be held.
        let tokens_seen = text.matches("\"content\":\"").count();
        if tokens_seen < 11 {
            let stats = stack.sim().stats();
            assert_eq!(
                (stats.active, stats.started),
                (1, 1),
                "the waiter must not start while the first streams"
            );
            assert_eq!(stack.admission().waiting(), 1);
        }
    }
    assert_eq!(sse_data(&text).last(), Some(&SseData::Done));

    let (queue_ms, second_text) = second.await.unwrap();
    assert!(
        queue_ms >= 100,
        "the second request waited for the first (~480 ms), got {queue_ms} ms"
    );
    assert_eq!(sse_data(&second_text).last(), Some(&SseData::Done));
    let stats = stack.sim().stats();
    assert_eq!((stats.started, stats.completed, stats.cancelled), (2, 2, 0));
}
