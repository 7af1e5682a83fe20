//! `x-slo-tpot-ms` through the whole stack, against sims whose tokens slow down as their batch
//! grows (`SIM_BATCH_TPOT_MS`, as on a continuous-batching engine): the scheduler learns each
//! endpoint's time per token by batch size, refuses at once an objective the batch a request
//! would join misses, serves it when the batch is small enough, names an objective no batch
//! meets, and sends the request to a fallback whose engine meets it.

use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Stack, answered_status, chat_body, eventually};

/// 10 ms a token alone, 30 ms more for each other generation: 100 ms in a batch of four.
fn batching_sim() -> SimConfig {
    SimConfig {
        slots: 4,
        ttft_ms: 5,
        tpot_ms: 10,
        batch_tpot_ms: 30,
        output_tokens: 40,
        ..SimConfig::default()
    }
}

fn short(prompt: &str) -> Value {
    let mut body = chat_body("llama3.2", prompt);
    body["max_tokens"] = json!(8);
    body
}

async fn with_objective(stack: &Stack, model: &str, tpot_ms: &str) -> reqwest::Response {
    let mut body = chat_body(model, "how fast are your tokens");
    body["max_tokens"] = json!(8);
    stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "b")
        .header("x-slo-tpot-ms", tpot_ms)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Starts `count` long generations of tenant `a` in the background: the handles of their
/// statuses.
fn busy(stack: &Stack, count: usize, model: &str) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..count)
        .map(|_| {
            let body = chat_body(model, "a long answer please");
            let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
            tokio::spawn(async move { answered_status(http, url, "a", body).await })
        })
        .collect()
}

/// A 429 `slo_unattainable` whose `param` names the per-token objective; its Retry-After.
async fn refused_for_tpot(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-llmgw-reason"], "slo_unattainable");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "slo_unattainable");
    assert_eq!(body["error"]["param"], "x-slo-tpot-ms");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("time-per-output-token objective"),
        "{message}"
    );
    retry_after
}

#[tokio::test]
async fn a_per_token_objective_is_held_against_the_batch_the_request_would_join() {
    let stack = Stack::start_with(
        Some(batching_sim()),
        |s| {
            s.max_concurrency = 4;
            s.queue_timeout_ms = 20_000;
        },
        |_| {},
    )
    .await;
    // Learn the pace alone, then in a full batch.
    let mut alone_body = short("alone");
    alone_body["max_tokens"] = json!(16);
    assert_eq!(stack.chat_as("a", alone_body).await.status(), 200);
    let batch = busy(&stack, 4, "llama3.2");
    for request in batch {
        assert_eq!(request.await.unwrap(), 200);
    }
    let pool = stack.pool("default");
    let [endpoint] = &pool.endpoints[..] else {
        panic!("one endpoint");
    };
    let alone = endpoint.pace.decode_in_batch(1).unwrap();
    let full = endpoint.pace.decode_in_batch(4).unwrap();
    // 10 ms and 100 ms a token (a loaded machine's stalls only add to either).
    assert!(
        full > Duration::from_millis(80) && full > alone * 2,
        "learned {alone:?} alone, {full:?} in a batch of four"
    );

    // Three long generations running: a newcomer would decode in a batch of four.
    let running = busy(&stack, 3, "llama3.2");
    eventually("three running", Duration::from_secs(5), || {
        stack.sim().stats().active == 3
    })
    .await;
    let requests_before = stack.sim().stats().requests;
    let began = Instant::now();
    let retry_after = refused_for_tpot(with_objective(&stack, "llama3.2", "50").await).await;
    let took = began.elapsed();
    assert!((1..=5).contains(&retry_after), "retry-after {retry_after}");
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert_eq!(
        stack.sim().stats().requests,
        requests_before,
        "the engine never saw it"
    );
    // An objective the full batch meets is served while the batch runs.
    let relaxed = with_objective(&stack, "llama3.2", "1000").await;
    assert_eq!(relaxed.status(), 200);
    for request in running {
        assert_eq!(request.await.unwrap(), 200);
    }

    // Idle again (as the scheduler counts): the same objective is met alone.
    eventually("idle", Duration::from_secs(10), || {
        endpoint.outstanding() == 0
    })
    .await;
    let alone_now = with_objective(&stack, "llama3.2", "50").await;
    assert_eq!(alone_now.status(), 200);

    // Faster than the engine ever is, even alone: refused when idle, and told to stay away
    // for the pool's longest wait (20 s here) rather than a second.
    let retry_after = refused_for_tpot(with_objective(&stack, "llama3.2", "1").await).await;
    assert_eq!(retry_after, 20);

    // Malformed: a 400 that names the header.
    let malformed = with_objective(&stack, "llama3.2", "soon").await;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-slo-tpot-ms");
}

#[tokio::test]
async fn a_per_token_objective_the_busy_pool_misses_goes_to_a_fallback_that_meets_it() {
    let stack = Stack::fleet(
        vec![batching_sim(), batching_sim()],
        crate::support::fallback_fleet,
        |_| {},
    )
    .await;
    // The primary (two slots) learns its pace alone and with both slots busy; the spare
    // learns its pace alone.
    assert_eq!(stack.chat_as("a", short_for("main")).await.status(), 200);
    for request in busy(&stack, 2, "main") {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(stack.chat_as("a", short_for("backup")).await.status(), 200);
    let started_before: Vec<u64> = stack.sims.iter().map(|sim| sim.stats().started).collect();

    // Both primary slots busy: a newcomer would wait, then decode in a batch of two (40 ms a
    // token); the idle spare decodes alone (10 ms).
    let running = busy(&stack, 2, "main");
    eventually("the primary full", Duration::from_secs(5), || {
        stack.sims[0].stats().active == 2
    })
    .await;
    let response = with_objective(&stack, "main", "25").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgw-model"], "backup");
    for request in running {
        assert_eq!(request.await.unwrap(), 200);
    }
    let started: Vec<u64> = stack.sims.iter().map(|sim| sim.stats().started).collect();
    assert_eq!(
        [
            started[0] - started_before[0],
            started[1] - started_before[1]
        ],
        [2, 1],
        "the primary ran the busy pair only, the spare the request with the objective"
    );
}

fn short_for(model: &str) -> Value {
    let mut body = short("warm up");
    body["model"] = json!(model);
    body
}
