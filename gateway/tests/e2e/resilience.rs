//! Several endpoints in one pool: failover when one is down, the breaker opening and closing,
//! slower endpoints getting less traffic, and retries that stop at the first byte.

use std::time::Duration;

use llm_sim::{Fault, SimConfig, completion_text};
use serde_json::json;

use crate::support::{
    SseData, Stack, chat_body, closed_port, eventually, fallback_fleet, quick_sim, sse_data,
    streamed_text,
};

fn pool_of(urls: &[String], breaker: &str) -> String {
    let endpoints: String = urls
        .iter()
        .map(|url| format!("[[pool.endpoint]]\nurl = \"{url}\"\nkind = \"ollama\"\nslots = 4\n"))
        .collect();
    format!(
        "[[pool]]\nname = \"gpus\"\n{breaker}\n{endpoints}\n[[model]]\nname = \"m\"\n[[model.version]]\nname = \"v1\"\npool = \"gpus\"\nupstream = \"llama3.2\"\n"
    )
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_and_every_request_succeeds() {
    let dead = format!("http://{}", closed_port().await);
    let stack = Stack::fleet(
        vec![quick_sim()],
        |urls| pool_of(&[dead.clone(), urls[0].clone()], ""),
        |_| {},
    )
    .await;
    for _ in 0..10 {
        let response = stack.chat(chat_body("m", "failover")).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(stack.sims[0].stats().completed, 10);
    let pool = stack.pool("gpus");
    assert!(
        !pool.endpoints[0].available(),
        "the dead endpoint is out of the pool"
    );
    assert_eq!(pool.capacity(), 4);
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_closes_after_a_good_trial() {
    let flaky = SimConfig {
        fault: Fault::Status(500),
        ..quick_sim()
    };
    let breaker = "[pool.breaker]\nfailures = 2\nopen_ms = 300";
    let stack = Stack::fleet(
        vec![flaky, quick_sim()],
        |urls| pool_of(urls, breaker),
        |_| {},
    )
    .await;
    let pool = stack.pool("gpus");
    for _ in 0..4 {
        assert_eq!(
            stack.chat(chat_body("m", "x")).await.status(),
            200,
            "retried on the healthy endpoint"
        );
    }
    assert_eq!(pool.endpoints[0].breaker.state_name(), "open");
    assert_eq!(
        stack.sims[0].stats().requests,
        2,
        "no more traffic once open"
    );

    stack.sims[0].set_fault(Fault::None);
    eventually("breaker half-open", Duration::from_secs(3), || {
        pool.endpoints[0].breaker.state_name() == "half_open"
    })
    .await;
    // Both idle: the recovered endpoint (index 0) gets the trial.
    assert_eq!(stack.chat(chat_body("m", "trial")).await.status(), 200);
    assert_eq!(pool.endpoints[0].breaker.state_name(), "closed");
    assert_eq!(stack.sims[0].stats().completed, 1);
}

#[tokio::test]
async fn a_slow_endpoint_gets_less_traffic() {
    let fast = SimConfig {
        ttft_ms: 5,
        tpot_ms: 2,
        output_tokens: 8,
        ..SimConfig::default()
    };
    let slow = SimConfig {
        ttft_ms: 150,
        tpot_ms: 20,
        output_tokens: 8,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![slow, fast], |urls| pool_of(urls, ""), |_| {}).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        workers.push(tokio::spawn(async move {
            for _ in 0..10 {
                let response = http
                    .post(&url)
                    .json(&chat_body("m", "spread"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (slow, fast) = (
        stack.sims[0].stats().requests,
        stack.sims[1].stats().requests,
    );
    assert_eq!(slow + fast, 40);
    assert!(fast >= 2 * slow, "fast {fast} vs slow {slow}");
}

#[tokio::test]
async fn retries_happen_before_the_first_token_and_never_after() {
    let failing = SimConfig {
        fault: Fault::Status(503),
        ..quick_sim()
    };
    let stack = Stack::fleet(vec![failing, quick_sim()], |urls| pool_of(urls, ""), |_| {}).await;
    let response = stack.chat(chat_body("m", "retry me")).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        completion_text("retry me", 0, 8)
    );
    assert_eq!(
        (
            stack.sims[0].stats().requests,
            stack.sims[1].stats().requests
        ),
        (1, 1)
    );

    // Now the first endpoint fails after two tokens: the stream ends with an error, and the
    // second endpoint never sees the request (no duplicated or spliced output).
    stack.sims[0].set_fault(Fault::DropAfter(2));
    let pool = stack.pool("gpus");
    pool.endpoints[0].breaker.on_success();
    let before = stack.sims[1].stats().requests;
    let mut body = chat_body("m", "no splice");
    body["stream"] = json!(true);
    let response = stack.chat(body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(streamed_text(&events), completion_text("no splice", 0, 2));
    let SseData::Json(last) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(last["error"]["code"], "backend_interrupted");
    assert_eq!(
        stack.sims[1].stats().requests,
        before,
        "no retry after the first token"
    );
}

#[tokio::test]
async fn a_request_the_backend_rejects_is_not_retried_anywhere() {
    // 400 and 422 mean "this request is malformed": every endpoint would say the same, so
    // exactly one endpoint sees it and the client gets the rejection, not a retry storm.
    for code in [400, 422] {
        let rejecting = || SimConfig {
            fault: Fault::Status(code),
            ..quick_sim()
        };
        let stack = Stack::fleet(
            vec![rejecting(), rejecting()],
            |urls| pool_of(urls, ""),
            |_| {},
        )
        .await;
        let response = stack.chat(chat_body("m", "malformed for the engine")).await;
        assert_eq!(response.status(), 400, "HTTP {code} from the engine");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "backend_rejected");
        let seen = stack.sims[0].stats().requests + stack.sims[1].stats().requests;
        assert_eq!(seen, 1, "HTTP {code}: one endpoint saw it, no retry");
        let pool = stack.pool("gpus");
        assert!(
            pool.endpoints.iter().all(|e| e.available()),
            "a rejected request is not the endpoint's fault: no breaker opens"
        );
    }
}

#[tokio::test]
async fn a_model_whose_pool_fails_falls_back_to_another_model_in_another_pool() {
    let broken = SimConfig {
        fault: Fault::Status(503),
        ..quick_sim()
    };
    let stack = Stack::fleet(vec![broken, quick_sim()], fallback_fleet, |_| {}).await;
    let response = stack.chat(chat_body("main", "fall back")).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        completion_text("fall back", 0, 8)
    );
    assert_eq!(
        (
            stack.sims[0].stats().requests,
            stack.sims[1].stats().requests
        ),
        (1, 1)
    );
    assert_eq!(
        stack.pool("primary").admission.running(),
        0,
        "the primary slot was given back"
    );
    assert_eq!(stack.pool("spare").admission.running(), 0);
}

#[tokio::test]
async fn a_fallback_whose_pool_cannot_serve_is_refused_at_once_not_after_its_queue_timeout() {
    let failing = SimConfig {
        fault: Fault::Status(500),
        ..quick_sim()
    };
    let down = format!("http://{}", closed_port().await);
    let config = move |urls: &[String]| {
        format!(
            r#"
            [[pool]]
            name = "p1"
            [[pool.endpoint]]
            url = "{}"
            kind = "ollama"
            slots = 2

            [[pool]]
            name = "p2"
            queue_timeout_ms = 8000
            [[pool.endpoint]]
            url = "{down}"
            kind = "ollama"
            slots = 2

            [[model]]
            name = "a"
            fallbacks = ["b"]
            [[model.version]]
            name = "v"
            pool = "p1"
            upstream = "llama3.2"

            [[model]]
            name = "b"
            [[model.version]]
            name = "v"
            pool = "p2"
            upstream = "llama3.2"
            "#,
            urls[0]
        )
    };
    let stack = Stack::fleet(vec![failing], config, |_| {}).await;
    let p2 = stack.pool("p2");
    eventually(
        "p2's only endpoint probed down",
        Duration::from_secs(5),
        || p2.capacity() == 0,
    )
    .await;
    // Asking for `b` directly is refused at once; asking for `a` must be refused the same way.
    for model in ["b", "a"] {
        let began = std::time::Instant::now();
        let response = stack.chat(chat_body(model, "fall back")).await;
        let elapsed = began.elapsed();
        assert_eq!(response.status(), 503, "{model}");
        assert_eq!(response.headers()["x-llmgw-reason"], "no_healthy_backend");
        assert!(response.headers().contains_key("retry-after"));
        assert!(
            elapsed < Duration::from_secs(4),
            "{model}: refused after {elapsed:?}, not at once (p2's queue timeout is 8 s)"
        );
    }
    assert_eq!(stack.sims[0].stats().requests, 1, "a was tried once");
    assert_eq!(stack.pool("p1").admission.running(), 0);
    assert_eq!(p2.admission.waiting(), 0);
}
