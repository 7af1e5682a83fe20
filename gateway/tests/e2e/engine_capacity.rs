//! The engine's real capacity and its cache, through the whole stack, with llm-sim speaking
//! llama.cpp's `/props` and `/metrics` and keeping a prompt cache: `auto` learns the engine's
//! slots, an overstated `slots` no longer lets work pile up inside the engine (a critical
//! request overtakes a batch backlog), a saturated engine holds our work in our queue, and
//! prefix affinity sends conversations back to the engine that holds their prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::{Value, json};

use crate::support::{Stack, chat_body, eventually};

const WAIT: Duration = Duration::from_secs(5);

/// One OpenAI-kind pool `gpu` over `urls`, each endpoint with `slots`, and `extra` pool keys.
fn engines(slots: &str, extra: &str) -> impl FnOnce(&[String]) -> String {
    let (slots, extra) = (slots.to_owned(), extra.to_owned());
    move |urls: &[String]| {
        let endpoints: String = urls
            .iter()
            .map(|url| {
                format!("[[pool.endpoint]]\nurl = \"{url}\"\nkind = \"openai\"\nslots = {slots}\n")
            })
            .collect();
        format!(
            "[[pool]]\nname = \"gpu\"\n{extra}\n{endpoints}\n\
             [[model]]\nname = \"llama3.2\"\n[[model.version]]\nname = \"v\"\npool = \"gpu\"\nupstream = \"llama3.2\"\n"
        )
    }
}

fn quick_polls(scheduler: &mut scheduler::Config) {
    scheduler.load_poll_ms = 50;
}

#[tokio::test]
async fn auto_learns_the_engines_slots_and_a_number_is_only_a_ceiling() {
    let sim = SimConfig {
        slots: 3,
        ..crate::support::quick_sim()
    };
    let stack = Stack::fleet(vec![sim.clone()], engines("\"auto\"", ""), quick_polls).await;
    let endpoint = Arc::clone(&stack.pool("gpu").endpoints[0]);
    eventually("auto learns 3 slots", WAIT, || endpoint.slots() == 3).await;
    assert_eq!(endpoint.capacity.source().name(), "engine");
    assert_eq!(stack.pool("gpu").admission.slots(), 3);
    let answered = stack.chat(chat_body("llama3.2", "hello")).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(
        answered.headers()["x-llmgw-endpoint-slots"],
        "3; source=engine",
        "the answer names its endpoint's learned limit"
    );

    let overstated = Stack::fleet(vec![sim.clone()], engines("16", ""), quick_polls).await;
    let endpoint = Arc::clone(&overstated.pool("gpu").endpoints[0]);
    eventually("16 lowered to the engine's 3", WAIT, || {
        endpoint.slots() == 3
    })
    .await;
    let modest = Stack::fleet(vec![sim], engines("2", ""), quick_polls).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        modest.pool("gpu").endpoints[0].slots(),
        2,
        "a ceiling, never raised"
    );
}

/// Sends `body` as `priority` in the background; resolves to when it finished.
fn send(
    stack: &Stack,
    priority: &str,
    body: Value,
) -> tokio::task::JoinHandle<tokio::time::Instant> {
    let (http, url, priority) = (
        stack.http.clone(),
        stack.url("/v1/chat/completions"),
        priority.to_owned(),
    );
    tokio::spawn(async move {
        let response = http
            .post(url)
            .header("x-priority", priority)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        tokio::time::Instant::now()
    })
}

#[tokio::test]
async fn a_critical_request_overtakes_a_batch_backlog_although_slots_are_overstated() {
    // The engine runs 2 at once; the config says 8.
    let sim = SimConfig {
        slots: 2,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 20,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![sim], engines("8", ""), quick_polls).await;
    let endpoint = Arc::clone(&stack.pool("gpu").endpoints[0]);
    eventually("the engine's 2 slots learned", WAIT, || {
        endpoint.slots() == 2
    })
    .await;
    let batch: Vec<_> = (0..8)
        .map(|_| send(&stack, "batch", chat_body("llama3.2", "bulk work")))
        .collect();
    eventually("six batch requests wait in our queue", WAIT, || {
        stack.pool("gpu").admission.waiting() == 6
    })
    .await;
    let critical = send(&stack, "critical", chat_body("llama3.2", "urgent"));
    let critical_done = critical.await.unwrap();
    let mut batch_done = Vec::new();
    for request in batch {
        batch_done.push(request.await.unwrap());
    }
    let overtaken = batch_done
        .iter()
        .filter(|done| **done > critical_done)
        .count();
    assert!(
        overtaken >= 5,
        "the critical request finished before {overtaken} of 8 batch requests"
    );
    assert_eq!(stack.sim().stats().queued, 0);
}

/// An engine that reports nothing (Ollama; here llm-sim with `load_report: false`) running 2
/// at once under 8 closed-loop clients: `auto` starts at 1, grows while every slot is used
/// and short prompts keep their unloaded first-token time, and backs off when they wait
/// inside the engine — so the limit settles around 2, and little waits in the engine.
#[tokio::test]
async fn auto_learns_a_silent_engines_capacity_from_latency() {
    let sim = SimConfig {
        slots: 2,
        ttft_ms: 20,
        tpot_ms: 5,
        output_tokens: 8,
        load_report: false,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![sim], engines("\"auto\"", ""), quick_polls).await;
    let endpoint = Arc::clone(&stack.pool("gpu").endpoints[0]);
    assert_eq!(endpoint.slots(), 1, "auto starts at one");
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
            tokio::spawn(async move {
                for turn in 0..12 {
                    let body = chat_body("llama3.2", &format!("client {client} turn {turn}"));
                    let response = http.post(&url).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    let (mut highest, mut engine_queue) = (0, 0);
    while !clients.iter().all(|client| client.is_finished()) {
        highest = highest.max(endpoint.slots());
        engine_queue = engine_queue.max(stack.sim().stats().queued);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(endpoint.capacity.source().name(), "latency");
    eprintln!("learned limit peaked at {highest}; at most {engine_queue} waited in the engine");
    assert!(
        (2..=4).contains(&highest),
        "the learned limit peaked at {highest} on an engine that runs 2"
    );
    assert!(
        engine_queue <= 2,
        "{engine_queue} requests waited inside the engine at once"
    );
}

#[tokio::test]
async fn a_saturated_engine_holds_our_work_in_our_queue() {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 25,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![sim], engines("4", ""), quick_polls).await;
    // Another client of the same engine fills it: one running, one waiting inside it.
    let direct = format!("{}/v1/chat/completions", stack.sim().base_url());
    let mut others = Vec::new();
    for _ in 0..2 {
        let (http, url) = (stack.http.clone(), direct.clone());
        others.push(tokio::spawn(async move {
            http.post(url)
                .json(&chat_body("llama3.2", "someone else"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let endpoint = Arc::clone(&stack.pool("gpu").endpoints[0]);
    eventually("saturated", WAIT, || endpoint.capacity.saturated()).await;
    let ours = send(&stack, "interactive", chat_body("llama3.2", "mine"));
    eventually("ours waits in our queue, not the engine's", WAIT, || {
        stack.pool("gpu").admission.waiting() == 1
    })
    .await;
    assert_eq!(
        stack.sim().stats().queued,
        1,
        "only the other client's waits inside it"
    );
    let topology = stack.topologies.current();
    let metrics = stack.topologies.metrics().render(topology.pools.values());
    let saturated = metrics
        .lines()
        .find(|line| line.starts_with("llmgw_endpoint_saturated{"))
        .unwrap();
    assert!(saturated.ends_with(" 1"), "{saturated}");
    for other in others {
        assert_eq!(other.await.unwrap(), 200);
    }
    ours.await.unwrap();
    assert!(!endpoint.capacity.saturated());
}

/// Six conversations of four turns at once (each turn after a pause of 50–250 ms, as people
/// read and type) over two engines that keep four sequences each in their prompt cache: the
/// prompt tokens of the later turns the engines found cached, of all of them.
async fn cached_share(affinity: bool) -> (u64, u64) {
    let sim = SimConfig {
        slots: 4,
        ttft_ms: 5,
        tpot_ms: 2,
        output_tokens: 8,
        prefix_cache: 4,
        ..SimConfig::default()
    };
    let extra = if affinity {
        "prefix_affinity = true"
    } else {
        ""
    };
    let stack = Stack::fleet(vec![sim.clone(), sim], engines("4", extra), quick_polls).await;
    let (cached, prompt) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut conversations = Vec::new();
    for conversation in 0..6 {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        let (cached, prompt) = (Arc::clone(&cached), Arc::clone(&prompt));
        conversations.push(tokio::spawn(async move {
            // A long system prompt of its own, so each conversation is a different prefix.
            let system = format!("conversation {conversation}: {}", "context ".repeat(120));
            let mut messages = vec![json!({"role": "system", "content": system})];
            for turn in 0..4 {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(50..250))).await;
                messages.push(json!({"role": "user", "content": format!("question {turn}")}));
                let body = json!({"model": "llama3.2", "messages": messages});
                let answer: Value = http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let usage = &answer["usage"];
                if turn > 0 {
                    prompt.fetch_add(usage["prompt_tokens"].as_u64().unwrap(), Ordering::Relaxed);
                    cached.fetch_add(
                        usage["prompt_tokens_details"]["cached_tokens"]
                            .as_u64()
                            .unwrap_or(0),
                        Ordering::Relaxed,
                    );
                }
                let content = answer["choices"][0]["message"]["content"].clone();
                messages.push(json!({"role": "assistant", "content": content}));
            }
        }));
    }
    for conversation in conversations {
        conversation.await.unwrap();
    }
    if affinity {
        assert!(!stack.pool("gpu").affinity.as_ref().unwrap().is_empty());
    }
    (
        cached.load(Ordering::Relaxed),
        prompt.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn prefix_affinity_reuses_the_engines_prompt_cache() {
    let (with, total_with) = cached_share(true).await;
    let (without, total_without) = cached_share(false).await;
    assert_eq!(total_with, total_without, "the same conversations");
    eprintln!("cached prompt tokens: {with} of {total_with} with affinity, {without} without");
    assert!(
        with * 100 >= total_with * 80,
        "with affinity {with} of {total_with} prompt tokens were cached"
    );
    assert!(
        with >= without + total_with / 10,
        "affinity {with} vs none {without} cached of {total_with}"
    );
}
