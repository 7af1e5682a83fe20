//! Work, not requests, through the whole stack (sims whose prefill takes time per prompt
//! word): one tenant's long prompts leave the pool to everyone and open no breaker, backlogged
//! tenants get equal tokens whatever their prompt lengths, and an objective that cannot be met
//! is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use llm_sim::SimConfig;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{Stack, chat_body, eventually};

/// A prompt of `words` words.
fn words(words: usize) -> String {
    "lorem ".repeat(words).trim_end().to_owned()
}

/// Two engines whose prefill takes 1 ms per prompt word.
fn prefilling_sims() -> Vec<SimConfig> {
    let sim = SimConfig {
        slots: 4,
        ttft_ms: 5,
        prefill_us_per_token: 1000,
        tpot_ms: 2,
        output_tokens: 4,
        ..SimConfig::default()
    };
    vec![sim.clone(), sim]
}

/// One pool of both engines, `ttft_ms = 1000`, breakers of 3 failures held open for 30 s.
fn long_prompt_pool(extra: &str) -> impl FnOnce(&[String]) -> String {
    let extra = extra.to_owned();
    move |urls: &[String]| {
        format!(
            r#"
            [timeouts]
            ttft_ms = 1000
            [[pool]]
            name = "gpu"
            breaker = {{ failures = 3, open_ms = 30000 }}
            {extra}
            [[pool.endpoint]]
            url = "{}"
            kind = "ollama"
            slots = 2
            [[pool.endpoint]]
            url = "{}"
            kind = "ollama"
            slots = 2
            [[model]]
            name = "llama3.2"
            [[model.version]]
            name = "v"
            pool = "gpu"
            upstream = "llama3.2"
            "#,
            urls[0], urls[1]
        )
    }
}

/// Four 2,000-word prompts from one tenant while another chats: the other tenant's answers,
/// the long prompts' statuses and codes, and whether any breaker opened.
async fn long_prompts_beside_a_chat(stack: &Stack) -> (usize, usize, Vec<(u16, String)>) {
    let mut documents = Vec::new();
    for _ in 0..4 {
        let (stack_http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        let body = chat_body("llama3.2", &words(2000));
        documents.push(tokio::spawn(async move {
            let response = stack_http
                .post(url)
                .header("x-tenant-id", "documents")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            (status, code)
        }));
    }
    // The chat tenant keeps talking while the documents are read, and after.
    let (mut served, mut sent) = (0, 0);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let mut body = chat_body("llama3.2", "how are you");
        body["max_tokens"] = json!(2);
        sent += 1;
        if stack.chat_as("chat", body).await.status() == 200 {
            served += 1;
        }
    }
    let mut outcomes = Vec::new();
    for document in documents {
        outcomes.push(document.await.unwrap());
    }
    (served, sent, outcomes)
}

fn breakers(stack: &Stack) -> Vec<&'static str> {
    stack
        .pool("gpu")
        .endpoints
        .iter()
        .map(|endpoint| endpoint.breaker.state_name())
        .collect()
}

#[tokio::test]
async fn one_tenants_long_prompts_leave_the_pool_to_everyone_and_open_no_breaker() {
    let stack = Stack::fleet(prefilling_sims(), long_prompt_pool(""), |_| {}).await;
    let (served, sent, documents) = long_prompts_beside_a_chat(&stack).await;
    assert!(
        served * 100 >= sent * 95,
        "the chat tenant was served {served} of {sent}"
    );
    for (status, code) in &documents {
        // Too heavy for a 1 s first-token budget: a clear 504, tried on one engine only.
        assert_eq!((*status, code.as_str()), (504, "prompt_too_heavy"));
    }
    assert_eq!(breakers(&stack), ["closed", "closed"]);
    let started: u64 = stack.sims.iter().map(|sim| sim.stats().started).sum();
    assert!(
        started <= sent as u64 + 4,
        "each long prompt went to one engine only ({started} generations for {sent} + 4 requests)"
    );
}

#[tokio::test]
async fn a_configured_prefill_rate_gives_long_prompts_the_time_they_need() {
    let stack = Stack::fleet(
        prefilling_sims(),
        long_prompt_pool("prefill_ms_per_1k_tokens = 1500"),
        |_| {},
    )
    .await;
    let (served, sent, documents) = long_prompts_beside_a_chat(&stack).await;
    assert!(served * 100 >= sent * 95, "served {served} of {sent}");
    assert!(
        documents.iter().all(|(status, _)| *status == 200),
        "{documents:?}"
    );
    assert_eq!(breakers(&stack), ["closed", "closed"]);
}

/// Tokens (prompt + completion, as the engine reported) served to each of two tenants with
/// four closed-loop clients each, over `run`.
async fn closed_loop_tokens(stack: &Stack, prompts: [(&str, usize); 2], run: Duration) -> [u64; 2] {
    let served = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (at, (tenant, length)) in prompts.into_iter().enumerate() {
        for _ in 0..4 {
            let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
            let (served, stop, tenant) = (
                Arc::clone(&served[at]),
                Arc::clone(&stop),
                tenant.to_owned(),
            );
            let mut body = chat_body("llama3.2", &words(length));
            body["max_tokens"] = json!(4);
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let response = http
                        .post(&url)
                        .header("x-tenant-id", &tenant)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let answer: Value = response.json().await.unwrap();
                    // Counted only while the race runs: the drain after it is not a share.
                    if !stop.load(Ordering::Relaxed) {
                        let tokens = answer["usage"]["total_tokens"].as_u64().unwrap();
                        served.fetch_add(tokens, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    [
        served[0].load(Ordering::Relaxed),
        served[1].load(Ordering::Relaxed),
    ]
}

#[tokio::test]
async fn backlogged_tenants_get_equal_tokens_whatever_their_prompt_lengths() {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 1,
        prefill_us_per_token: 500,
        tpot_ms: 1,
        output_tokens: 4,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(Some(sim), |s| s.max_concurrency = 1, |_| {}).await;
    // 400-word against 8-word prompts: 50 times longer.
    let [long, short] = closed_loop_tokens(
        &stack,
        [("long", 400), ("short", 8)],
        Duration::from_secs(6),
    )
    .await;
    let ratio = long as f64 / short as f64;
    assert!(
        (1.0 / 1.5..=1.5).contains(&ratio),
        "tokens served: long {long}, short {short} (ratio {ratio:.2})"
    );
    assert!(
        long > 1_500 && short > 1_500,
        "both made progress: {long} / {short}"
    );
}

#[tokio::test]
async fn an_objective_that_cannot_be_met_is_refused_at_once() {
    let sim = SimConfig {
        slots: 1,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 50,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(Some(sim), |s| s.max_concurrency = 1, |_| {}).await;
    // Teach the pool its pace: one request of 50 tokens takes about a second.
    assert_eq!(
        stack
            .chat_as("a", chat_body("llama3.2", "warm up"))
            .await
            .status(),
        200
    );
    // One running and two waiting: about two seconds of work ahead of a newcomer.
    let mut backlog = Vec::new();
    for _ in 0..3 {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        backlog.push(tokio::spawn(async move {
            http.post(url)
                .header("x-tenant-id", "a")
                .json(&chat_body("llama3.2", "busy"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    eventually("two waiting", Duration::from_secs(5), || {
        stack.admission().waiting() == 2
    })
    .await;
    let began = Instant::now();
    let refused = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "a")
        .header("x-slo-ttft-ms", "300")
        .json(&chat_body("llama3.2", "quick question"))
        .send()
        .await
        .unwrap();
    let took = began.elapsed();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-llmgw-reason"], "slo_unattainable");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "slo_unattainable");
    assert_eq!(
        body["error"]["param"], "x-slo-ttft-ms",
        "it names the objective"
    );
    assert!(
        took < Duration::from_millis(250),
        "refused after {took:?}: it queued instead"
    );
    assert_eq!(
        stack.admission().waiting(),
        2,
        "it took no place in the queue"
    );

    // An objective the queue can meet: served, with the prediction in a header.
    let met = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "b")
        .header("x-slo-ttft-ms", "60000")
        .json(&chat_body("llama3.2", "patient question"))
        .send()
        .await
        .unwrap();
    assert_eq!(met.status(), 200);
    let predicted: u64 = met.headers()["x-llmgw-predicted-ttft-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        predicted >= 300,
        "predicted {predicted} ms behind a busy slot"
    );
    for waiting in backlog {
        assert_eq!(waiting.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn an_objective_the_busy_pool_cannot_meet_goes_to_a_fallback_that_can() {
    let sim = SimConfig {
        slots: 4,
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 50,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(
        vec![sim.clone(), sim],
        crate::support::fallback_fleet,
        |_| {},
    )
    .await;
    // The primary pool learns its pace, then fills: two running, two waiting.
    assert_eq!(
        stack
            .chat_as("a", chat_body("main", "warm up"))
            .await
            .status(),
        200
    );
    let mut busy = Vec::new();
    for _ in 0..4 {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        busy.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .header("x-tenant-id", "a")
                .json(&chat_body("main", "busy"))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    }
    eventually("two waiting in primary", Duration::from_secs(5), || {
        stack.pool("primary").admission.waiting() == 2
    })
    .await;
    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", "b")
        .header("x-slo-ttft-ms", "300")
        .json(&chat_body("main", "quick question"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-llmgw-model"], "backup");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    for request in busy {
        assert_eq!(request.await.unwrap(), 200);
    }
    let started: Vec<u64> = stack.sims.iter().map(|sim| sim.stats().started).collect();
    assert_eq!(
        started,
        [5, 1],
        "the primary ran the warm-up and the four busy requests only"
    );
}
