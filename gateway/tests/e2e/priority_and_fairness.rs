//! Admission policy through the whole stack: classes go best first, a light tenant is not
//! stuck behind a flooding one, and a full queue gives way to a higher class.

use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::json;

use crate::support::{Stack, chat_body, eventually};

const WAIT: Duration = Duration::from_secs(5);

/// One slot, and a first request that holds it until its client lets go.
async fn one_slot_held(tune: impl FnOnce(&mut scheduler::Config)) -> (Stack, reqwest::Response) {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 500,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(
        Some(sim),
        |s| {
            s.max_concurrency = 1;
            tune(s);
        },
        |_| {},
    )
    .await;
    let mut body = chat_body("llama3.2", "hold");
    body["stream"] = json!(true);
    let holder = stack.chat(body).await;
    assert_eq!(holder.status(), 200);
    (stack, holder)
}

/// Sends a short non-streamed request as `tenant` with `priority` in the background; resolves
/// to (status, queue ms).
fn send(stack: &Stack, tenant: &str, priority: &str) -> tokio::task::JoinHandle<(u16, u64)> {
    let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
    let (tenant, priority) = (tenant.to_owned(), priority.to_owned());
    tokio::spawn(async move {
        let mut body = chat_body("llama3.2", "short");
        body["max_tokens"] = json!(2);
        let response = http
            .post(url)
            .header("x-tenant-id", tenant)
            .header("x-priority", priority)
            .json(&body)
            .send()
            .await
            .unwrap();
        let queue_ms = response
            .headers()
            .get("x-llmgw-queue-ms")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        (response.status().as_u16(), queue_ms)
    })
}

#[tokio::test]
async fn waiting_classes_are_served_critical_then_interactive_then_batch() {
    let (stack, holder) = one_slot_held(|_| {}).await;
    let batch = send(&stack, "t", "batch");
    eventually("batch queued", WAIT, || stack.admission().waiting() == 1).await;
    let interactive = send(&stack, "t", "interactive");
    eventually("interactive queued", WAIT, || {
        stack.admission().waiting() == 2
    })
    .await;
    let critical = send(&stack, "t", "critical");
    eventually("critical queued", WAIT, || stack.admission().waiting() == 3).await;
    drop(holder);
    let (critical, interactive, batch) = (
        critical.await.unwrap(),
        interactive.await.unwrap(),
        batch.await.unwrap(),
    );
    assert_eq!((critical.0, interactive.0, batch.0), (200, 200, 200));
    // Each waited for the one before it although it arrived later.
    assert!(
        critical.1 < interactive.1 && interactive.1 < batch.1,
        "queue ms: {critical:?} {interactive:?} {batch:?}"
    );
}

#[tokio::test]
async fn a_light_tenant_goes_ahead_of_a_flooding_tenants_backlog() {
    let (stack, holder) = one_slot_held(|_| {}).await;
    let mut flood = Vec::new();
    for queued in 1..=6 {
        flood.push(send(&stack, "flood", "interactive"));
        eventually("flood queued", WAIT, || {
            stack.admission().waiting() == queued
        })
        .await;
    }
    let light = send(&stack, "light", "interactive");
    eventually("light queued", WAIT, || stack.admission().waiting() == 7).await;
    drop(holder);
    let light = light.await.unwrap();
    let mut flood_waits = Vec::new();
    for request in flood {
        flood_waits.push(request.await.unwrap().1);
    }
    flood_waits.sort_unstable();
    assert_eq!(light.0, 200);
    // The light tenant arrived last but is served first or second, not seventh.
    assert!(
        light.1 <= flood_waits[1],
        "light waited {} ms, flood {flood_waits:?}",
        light.1
    );
}

#[tokio::test]
async fn a_full_queue_gives_way_to_a_higher_class() {
    let (stack, holder) = one_slot_held(|s| s.max_queue = 1).await;
    let batch = {
        let request = stack
            .http
            .post(stack.url("/v1/chat/completions"))
            .header("x-priority", "batch")
            .json(&chat_body("llama3.2", "first batch"));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (reason, retry_after) = (header("x-llmgw-reason"), header("retry-after"));
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, reason, retry_after, body["error"]["code"].clone())
        })
    };
    eventually("batch queued", WAIT, || stack.admission().waiting() == 1).await;

    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-priority", "batch")
        .json(&chat_body("llama3.2", "also batch"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "same class does not displace");
    assert_eq!(response.headers()["x-llmgw-reason"], "queue_full");

    let critical = send(&stack, "t", "critical");
    let (status, reason, retry_after, code) = batch.await.unwrap();
    assert_eq!(status, 429);
    assert_eq!(
        reason.as_deref(),
        Some("displaced"),
        "the batch waiter was displaced"
    );
    assert_eq!(code, "displaced");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1),
        "a displaced client is told when to come back"
    );
    eventually("critical queued", WAIT, || stack.admission().waiting() == 1).await;
    drop(holder);
    assert_eq!(critical.await.unwrap().0, 200);
}
