//! Cancellation by drop, in every phase: a client that leaves while queued, before the first
//! token, or mid-stream (and non-stream while generating) frees its slot at once, and the
//! backend stops generating.

use std::time::Duration;

use llm_sim::{SimConfig, completion_text};
use serde_json::json;

use crate::support::{Stack, chat_body, eventually};

/// One slot everywhere, and generations that would run for ~10 s if nobody cancelled them.
fn long_generation() -> SimConfig {
    SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 500,
        ..SimConfig::default()
    }
}

fn stream_body(prompt: &str) -> serde_json::Value {
    let mut body = chat_body("llama3.2", prompt);
    body["stream"] = json!(true);
    body
}

/// Far below the ~10 s a generation runs if not cancelled, with room for a loaded CI box.
const FREED_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn leaving_while_queued_never_takes_a_slot_and_the_next_request_runs() {
    let stack = Stack::start_with(Some(long_generation()), |s| s.max_concurrency = 1, |_| {}).await;
    let running = stack.chat(stream_body("first")).await;
    assert_eq!(running.status(), 200);

    let queued = {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        tokio::spawn(async move { http.post(url).json(&stream_body("second")).send().await })
    };
    eventually(
        "second request queued in the scheduler",
        FREED_WITHIN,
        || stack.admission().waiting() == 1,
    )
    .await;
    queued.abort();
    let left = eventually("queue empty after the client left", FREED_WITHIN, || {
        stack.admission().waiting() == 0
    })
    .await;
    println!("queued entry removed {left:?} after the client left");

    drop(running);
    let freed = eventually(
        "slot free after the streaming client left",
        FREED_WITHIN,
        || {
            let stats = stack.sim().stats();
            stats.active == 0 && stack.admission().running() == 0
        },
    )
    .await;
    println!("slot free {freed:?} after the client left mid-stream");

    let mut next = chat_body("llama3.2", "third");
    next["max_tokens"] = json!(2);
    let response = stack.chat(next).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        completion_text("third", 0, 2)
    );
    let stats = stack.sim().stats();
    assert_eq!(
        (
            stats.requests,
            stats.started,
            stats.cancelled,
            stats.completed
        ),
        (2, 2, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn leaving_before_the_first_token_stops_the_backend() {
    let sim = SimConfig {
        ttft_ms: 10_000,
        ..long_generation()
    };
    let stack = Stack::start(sim).await;
    let waiting = {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        tokio::spawn(async move {
            http.post(url)
                .json(&stream_body("slow prefill"))
                .send()
                .await
        })
    };
    eventually("backend generating", FREED_WITHIN, || {
        stack.sim().stats().active == 1
    })
    .await;
    waiting.abort();
    let freed = eventually("backend slot free", FREED_WITHIN, || {
        stack.sim().stats().active == 0
    })
    .await;
    println!("slot free {freed:?} after the client left before the first token");
    assert_eq!(stack.sim().stats().cancelled, 1);
    eventually("scheduler slot free", FREED_WITHIN, || {
        stack.admission().running() == 0
    })
    .await;
}

#[tokio::test]
async fn leaving_mid_stream_stops_the_backend() {
    let stack = Stack::start(long_generation()).await;
    let mut response = stack.chat(stream_body("talk")).await;
    assert_eq!(response.status(), 200);
    let mut received = 0;
    while received < 3 {
        let chunk = response.chunk().await.unwrap().expect("stream still open");
        received += chunk.windows(6).filter(|w| w == b"data: ").count();
    }
    drop(response);
    let freed = eventually("backend slot free", FREED_WITHIN, || {
        stack.sim().stats().active == 0
    })
    .await;
    println!("slot free {freed:?} after the client left mid-stream");
    let stats = stack.sim().stats();
    assert_eq!((stats.cancelled, stats.completed), (1, 0));
    eventually("scheduler slot free", FREED_WITHIN, || {
        stack.admission().running() == 0
    })
    .await;
}

#[tokio::test]
async fn leaving_a_non_stream_request_stops_the_backend() {
    let stack = Stack::start(long_generation()).await;
    let pending = {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        tokio::spawn(async move {
            http.post(url)
                .json(&chat_body("llama3.2", "essay"))
                .send()
                .await
        })
    };
    eventually("backend generating", FREED_WITHIN, || {
        stack.sim().stats().active == 1
    })
    .await;
    pending.abort();
    eventually("backend slot free", FREED_WITHIN, || {
        stack.sim().stats().active == 0
    })
    .await;
    assert_eq!(stack.sim().stats().cancelled, 1);
    eventually("scheduler slot free", FREED_WITHIN, || {
        stack.admission().running() == 0
    })
    .await;
}
