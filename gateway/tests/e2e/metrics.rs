//! `/metrics` counters and histograms move by exactly what a known sequence of requests —
//! successes, a stream, bad input, an unknown model, a refusal and a backend failure — should
//! produce, on the gateway and on the scheduler.

use std::time::Duration;

use llm_sim::{Fault, SimConfig};
use serde_json::json;

use crate::support::{Stack, chat_body, eventually};

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

fn value_of(text: &str, prefix: &str, contains: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix) && l.contains(contains))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` sample with `{contains}` in:\n{text}"))
}

#[tokio::test]
async fn a_known_sequence_moves_every_counter_by_exactly_its_share() {
    let sim = SimConfig {
        slots: 2,
        ttft_ms: 2,
        tpot_ms: 20,
        output_tokens: 500,
        ..SimConfig::default()
    };
    let stack = Stack::start_with(
        Some(sim),
        |s| {
            s.max_concurrency = 1;
            s.max_queue = 0;
        },
        |_| {},
    )
    .await;
    let short = |stream: bool| {
        let mut body = chat_body("llama3.2", "count me");
        body["max_tokens"] = json!(3);
        body["stream"] = json!(stream);
        body["stream_options"] = json!({"include_usage": true});
        body
    };
    let send = |body: serde_json::Value| {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        crate::support::answered_status(http, url, "t1", body)
    };
    assert_eq!(send(short(false)).await, 200);
    assert_eq!(send(short(false)).await, 200);
    assert_eq!(send(short(true)).await, 200);
    assert_eq!(
        send(json!({"model": "llama3.2", "messages": []})).await,
        400
    );
    assert_eq!(send(chat_body("no-such-model", "x")).await, 404);

    // One long stream holds the only slot; with no queue, the next request is refused.
    let mut holder_body = chat_body("llama3.2", "hold");
    holder_body["stream"] = json!(true);
    let holder = stack.chat(holder_body).await;
    assert_eq!(holder.status(), 200);
    assert_eq!(send(short(false)).await, 429);
    drop(holder);
    eventually("slot free", Duration::from_secs(2), || {
        stack.admission().running() == 0
    })
    .await;

    stack.sim().set_fault(Fault::Status(500));
    assert_eq!(send(short(false)).await, 502);

    let gateway = stack.http.get(stack.url("/metrics")).send().await.unwrap();
    assert_eq!(
        gateway.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let gateway = gateway.text().await.unwrap();
    let route = "route=\"/v1/chat/completions\"";
    assert_line(
        &gateway,
        &format!("llmgw_http_requests_total{{{route},model=\"llama3.2\",status=\"200\"}} 4"),
    );
    assert_line(
        &gateway,
        &format!("llmgw_http_requests_total{{{route},model=\"-\",status=\"400\"}} 1"),
    );
    assert_line(
        &gateway,
        &format!("llmgw_http_requests_total{{{route},model=\"-\",status=\"404\"}} 1"),
    );
    assert_line(
        &gateway,
        &format!("llmgw_http_requests_total{{{route},model=\"-\",status=\"429\"}} 1"),
    );
    assert_line(
        &gateway,
        &format!("llmgw_http_requests_total{{{route},model=\"-\",status=\"502\"}} 1"),
    );
    // Three short requests finished (the holder left mid-stream): 3 × (1 prompt word pair, 3 tokens).
    assert_line(
        &gateway,
        "llmgw_tokens_total{model=\"llama3.2\",tenant=\"t1\",token_type=\"output\"} 9",
    );
    assert_line(
        &gateway,
        "llmgw_tokens_total{model=\"llama3.2\",tenant=\"t1\",token_type=\"input\"} 6",
    );
    assert_eq!(
        value_of(
            &gateway,
            "gen_ai_server_time_to_first_token_seconds_count",
            "llama3.2"
        ),
        2.0,
        "two streams got a first token"
    );
    assert_eq!(
        value_of(
            &gateway,
            "gen_ai_server_time_per_output_token_seconds_count",
            "llama3.2"
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &gateway,
            "gen_ai_server_request_duration_seconds_count",
            "model=\"llama3.2\",status=\"200\""
        ),
        3.0,
        "two answers and one finished stream"
    );
    assert_eq!(
        value_of(
            &gateway,
            "gen_ai_client_token_usage_count",
            "token_type=\"output\""
        ),
        3.0
    );

    let current = stack.topologies.current();
    let scheduler = stack.topologies.metrics().render(current.pools.values());
    // Passthrough mode: the unknown model is admitted too and refused by the backend (404).
    let pool = "pool=\"default\",priority=\"interactive\"";
    assert_line(
        &scheduler,
        &format!("llmgw_admission_total{{{pool},outcome=\"admitted\"}} 6"),
    );
    assert_line(
        &scheduler,
        &format!("llmgw_admission_total{{{pool},outcome=\"queue_full\"}} 1"),
    );
    assert_eq!(
        value_of(
            &scheduler,
            "llmgw_backend_errors_total",
            "reason=\"backend_error\""
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &scheduler,
            "gen_ai_server_time_to_first_token_seconds_count",
            "model=\"llama3.2\""
        ),
        4.0
    );
    assert_eq!(
        value_of(&scheduler, "llmgw_queue_wait_seconds_count", pool),
        6.0
    );
    assert_line(&scheduler, &format!("llmgw_queue_depth{{{pool}}} 0"));
    assert_line(&scheduler, "llmgw_in_flight{pool=\"default\"} 0");
    assert_line(&scheduler, "llmgw_pool_slots{pool=\"default\"} 1");
    assert_eq!(
        value_of(&scheduler, "llmgw_breaker_state", "pool=\"default\""),
        0.0
    );
    assert_eq!(
        value_of(&scheduler, "llmgw_endpoint_up", "pool=\"default\""),
        1.0
    );
}
