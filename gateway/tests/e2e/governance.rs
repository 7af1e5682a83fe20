//! Governance through the whole stack: API keys decide the tenant, refusals are OpenAI-shaped
//! and name their rule, the completion cap goes upstream, limits answer 429 with
//! `Retry-After` and rate-limit headers, tokens are settled to what was used on every exit
//! path, a revoked key stops working without a restart, and a Redis outage follows `on_error`.

use std::time::Duration;

use llm_sim::{Fault, SimConfig};
use serde_json::{Value, json};

use crate::redis_server::RedisServer;
use crate::support::{Stack, chat_body, eventually_async, key_hash, quick_sim, temp_config_path};

const KEY: &str = "sk-team-a-0123456789";
const OTHER_KEY: &str = "sk-team-b-9876543210";

/// Two tenants with keys; `team_a` is spliced into team-a's table, `store` after `[store]`.
fn config(team_a: &str, store: &str) -> String {
    format!(
        r#"
        [store]
        {store}
        [[tenant]]
        name = "team-a"
        max_priority = "interactive"
        allowed_options = ["top_k"]
        {team_a}
        [[tenant]]
        name = "team-b"
        models = ["smollm2*"]
        [[key]]
        tenant = "team-a"
        name = "a-key"
        sha256 = "{}"
        [[key]]
        tenant = "team-b"
        sha256 = "{}"
        "#,
        key_hash(KEY),
        key_hash(OTHER_KEY)
    )
}

/// A stack whose gateway reads `text` as GATEWAY_CONFIG; the file's path is returned so a
/// test can rewrite it.
async fn governed(text: &str, sim: SimConfig) -> (Stack, std::path::PathBuf) {
    let path = temp_config_path();
    std::fs::write(&path, text).unwrap();
    let file = path.display().to_string();
    let stack = Stack::start_with(Some(sim), |_| {}, move |g| g.config_file = Some(file)).await;
    (stack, path)
}

async fn post(stack: &Stack, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn limits(stack: &Stack, key: &str) -> Value {
    let response = stack
        .http
        .get(stack.url("/v1/limits"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn refusal(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["x-llmgw-reason"], code);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code);
    body
}

#[tokio::test]
async fn the_key_decides_the_tenant_and_every_refusal_names_its_rule() {
    let (stack, path) = governed(&config("", ""), quick_sim()).await;
    let body = chat_body("llama3.2", "hi");

    let missing = refusal(
        post(&stack, None, body.clone()).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert_eq!(missing["error"]["type"], "authentication_error");
    refusal(
        post(&stack, Some("sk-wrong"), body.clone()).await,
        401,
        "invalid_api_key",
    )
    .await;

    // The key decides: a claimed tenant id is ignored.
    let served = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-api-key", KEY)
        .header("x-tenant-id", "team-b")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-llmgw-tenant"], "team-a");

    let denied = refusal(
        post(&stack, Some(OTHER_KEY), body.clone()).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert_eq!(denied["error"]["param"], "model");
    assert_eq!(denied["error"]["type"], "permission_error");
    assert_eq!(
        post(&stack, Some(OTHER_KEY), chat_body("smollm2:135m", "hi"))
            .await
            .status(),
        200
    );

    let too_urgent = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-priority", "critical")
        .json(&body)
        .send()
        .await
        .unwrap();
    refusal(too_urgent, 403, "priority_not_allowed").await;
    let lower = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-priority", "batch")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lower.headers()["x-llmgw-priority"],
        "batch",
        "lowering is allowed"
    );

    // An engine option the tenant's `allowed_options` does not list: 403; one no engine may
    // be sent at all: 400.
    let mut with_option = body.clone();
    with_option["min_p"] = json!(0.1);
    let refused = refusal(
        post(&stack, Some(KEY), with_option).await,
        403,
        "option_not_allowed",
    )
    .await;
    assert_eq!(refused["error"]["param"], "min_p");
    let mut with_option = body.clone();
    with_option["num_ctx"] = json!(8192);
    let refused = refusal(
        post(&stack, Some(KEY), with_option).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(refused["error"]["param"], "num_ctx");
    let mut allowed = body.clone();
    allowed["top_k"] = json!(4);
    assert_eq!(post(&stack, Some(KEY), allowed).await.status(), 200);

    // Probes and metrics need no key; the API does.
    let health = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let models = stack
        .http
        .get(stack.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    let models = stack
        .http
        .get(stack.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_configured_tokenizer_sizes_the_reservation() {
    let tokenizer = temp_config_path().with_extension("json");
    // Word level: "hello" and "world" are known, anything else one `[UNK]` per word.
    std::fs::write(
        &tokenizer,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
        "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
        "decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},
        "unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    let text = format!(
        "{}\n[[tokenizer]]\nmodels = [\"llama*\"]\nfile = \"{}\"\n",
        config("tpm = 1000\nmax_tokens = 5", ""),
        tokenizer.display()
    );
    let (stack, path) = governed(&text, quick_sim()).await;
    let tokens_left = |response: &reqwest::Response| -> u64 {
        response.headers()["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Counted: "user" 1 + "hello big world" 3, + 8 per message + 8, + the cap of 5 = 25.
    let counted = post(&stack, Some(KEY), chat_body("llama3.2", "hello big world")).await;
    assert_eq!(counted.status(), 200);
    let left = tokens_left(&counted);
    assert!((975..=976).contains(&left), "{left}");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(tokenizer);
}

#[tokio::test]
async fn the_completion_cap_goes_upstream_and_rpm_refuses_with_retry_after() {
    let (stack, path) = governed(
        &config("rpm = 2\nmax_tokens = 3\ntpm = 100000", ""),
        quick_sim(),
    )
    .await;
    let mut body = chat_body("llama3.2", "cap me");
    body["max_tokens"] = json!(50);
    let served = post(&stack, Some(KEY), body.clone()).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(served.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(served.headers()["x-ratelimit-limit-tokens"], "100000");
    assert!(
        served.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("\"rpm\";q=2;w=60")
    );
    let answer: Value = served.json().await.unwrap();
    assert_eq!(
        answer["usage"]["completion_tokens"], 3,
        "the tenant's cap, not 50"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "length");

    assert_eq!(post(&stack, Some(KEY), body.clone()).await.status(), 200);
    let limited = post(&stack, Some(KEY), body.clone()).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers()["x-ratelimit-remaining-requests"], "0");
    let body = refusal(limited, 429, "rate_limited").await;
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("`rpm`"));
    let metrics = stack
        .http
        .get(stack.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"llmgw_ratelimit_total{tenant="team-a",limit="all",outcome="granted"} 2"#,
        r#"llmgw_ratelimit_total{tenant="team-a",limit="rpm",outcome="refused"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    let _ = std::fs::remove_file(path);
}

/// Waits until every reservation of team-a is settled, and returns tokens used today.
async fn settled_use(stack: &Stack, budget: u64) -> u64 {
    let (http, url) = (stack.http.clone(), stack.url("/v1/limits"));
    eventually_async("every reservation settled", Duration::from_secs(5), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let limits: Value = http
                .get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            limits["limits"]["remaining"]["concurrent"] == json!(4)
        }
    })
    .await;
    let limits = limits(stack, KEY).await;
    budget
        - limits["limits"]["remaining"]["tokens_today"]
            .as_u64()
            .unwrap()
}

#[tokio::test]
async fn tokens_are_settled_to_what_was_used_on_every_exit_path() {
    let budget = 1_000_000;
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 10,
        output_tokens: 200,
        ..SimConfig::default()
    };
    let (stack, path) = governed(
        &config(
            &format!("max_concurrent = 4\ntokens_per_day = {budget}\nmax_tokens = 200"),
            "",
        ),
        sim,
    )
    .await;

    // Finished: charged exactly the reported usage.
    let mut short = chat_body("llama3.2", "count");
    short["max_tokens"] = json!(4);
    let answer: Value = post(&stack, Some(KEY), short).await.json().await.unwrap();
    let total = answer["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(settled_use(&stack, budget).await, total);

    // Refused by the scheduler, or the backend failed before the first token: refunded.
    let unknown = post(&stack, Some(KEY), chat_body("no-such-model", "x")).await;
    assert_eq!(unknown.status(), 404);
    stack.sim().set_fault(Fault::Status(500));
    let failed = post(&stack, Some(KEY), chat_body("llama3.2", "x")).await;
    assert_eq!(failed.status(), 502);
    stack.sim().set_fault(Fault::None);
    assert_eq!(settled_use(&stack, budget).await, total, "nothing charged");

    // A client that leaves mid-stream is charged the prompt estimate and what it was sent.
    let mut long = chat_body("llama3.2", "count");
    long["stream"] = json!(true);
    let mut response = post(&stack, Some(KEY), long).await;
    assert_eq!(response.status(), 200);
    let mut seen = 0;
    while seen < 5 {
        let chunk = response.chunk().await.unwrap().unwrap();
        seen += String::from_utf8_lossy(&chunk)
            .matches("\"content\":")
            .count();
    }
    drop(response);
    let estimate = 5 + 4 + 8 + 8; // "count" + "user", one message, the reply's opening
    let charged = settled_use(&stack, budget).await - total;
    assert!(
        charged >= estimate + 4 && charged < estimate + 60,
        "charged {charged}: the prompt estimate plus the chunks delivered, not the 200-token cap"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_client_that_leaves_before_its_first_token_is_charged_its_prompt() {
    let budget = 1_000_000;
    // 1,000 prompt words take the engine 2 s before the first token.
    let sim = SimConfig {
        ttft_ms: 5,
        prefill_us_per_token: 2000,
        tpot_ms: 1,
        output_tokens: 4,
        ..SimConfig::default()
    };
    let (stack, path) = governed(
        &config(
            &format!("max_concurrent = 4\ntokens_per_day = {budget}"),
            "",
        ),
        sim,
    )
    .await;
    let prompt = "lorem ".repeat(1000);
    let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
    let body = chat_body("llama3.2", prompt.trim_end());
    let client = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .map(|r| r.status())
    });
    crate::support::eventually(
        "the engine works on the prompt",
        Duration::from_secs(5),
        || stack.sim().stats().active == 1,
    )
    .await;
    client.abort();
    let charged = settled_use(&stack, budget).await;
    // The gateway's estimate of the prompt: its 5,999 bytes, "user", and template markers.
    let estimate = 5999 + 4 + 8 + 8;
    assert_eq!(
        charged, estimate,
        "the prompt the engine was working on is charged"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_revoked_key_stops_working_without_a_restart_while_in_flight_requests_finish() {
    let sim = SimConfig {
        ttft_ms: 5,
        tpot_ms: 20,
        output_tokens: 100,
        ..SimConfig::default()
    };
    let (stack, path) = governed(&config("", ""), sim).await;
    let mut long = chat_body("llama3.2", "long");
    long["stream"] = json!(true);
    let in_flight = post(&stack, Some(KEY), long).await;
    assert_eq!(in_flight.status(), 200);
    let without_a = config("", "").replacen(
        &format!("sha256 = \"{}\"", key_hash(KEY)),
        &format!("sha256 = \"{}\"", key_hash("sk-replacement")),
        1,
    );
    std::fs::write(&path, without_a).unwrap();
    let (http, url) = (stack.http.clone(), stack.url("/v1/models"));
    eventually_async("the revoked key is refused", Duration::from_secs(5), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .status()
                == 401
        }
    })
    .await;
    let body = in_flight.text().await.unwrap();
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "the in-flight stream finished"
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_redis_outage_follows_on_error_and_limits_return_with_redis() {
    let mut redis = RedisServer::start().await;
    let store = |on_error: &str| {
        format!(
            "redis_url = \"{}\"\non_error = \"{on_error}\"\ntimeout_ms = 200",
            redis.url()
        )
    };
    let (deny, deny_path) = governed(&config("rpm = 1000", &store("deny")), quick_sim()).await;
    let (allow, allow_path) = governed(&config("rpm = 1000", &store("allow")), quick_sim()).await;
    let body = chat_body("llama3.2", "hi");
    assert_eq!(post(&deny, Some(KEY), body.clone()).await.status(), 200);
    assert_eq!(post(&allow, Some(KEY), body.clone()).await.status(), 200);

    redis.kill();
    let began = std::time::Instant::now();
    let refused = post(&deny, Some(KEY), body.clone()).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "decided fast, no hang"
    );
    assert!(refused.headers().contains_key("retry-after"));
    refusal(refused, 503, "limits_unavailable").await;
    assert_eq!(post(&allow, Some(KEY), body.clone()).await.status(), 200);

    redis.restart().await;
    let (http, url) = (deny.http.clone(), deny.url("/v1/chat/completions"));
    eventually_async("limits work again", Duration::from_secs(10), || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            http.post(url)
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    })
    .await;
    let _ = std::fs::remove_file(deny_path);
    let _ = std::fs::remove_file(allow_path);
}

/// A store that answers after the gateway gave up still runs the reservations it was sent;
/// they are cancelled by id once it answers again, so the tenant's concurrency and budgets are
/// exactly what the served work used (before: each held a `max_concurrent` place and its
/// tokens until the reservation's 15-minute TTL).
#[tokio::test]
async fn a_stalled_store_leaves_no_reservation_behind() {
    let redis = RedisServer::start().await;
    let store = format!(
        "redis_url = \"{}\"\non_error = \"deny\"\ntimeout_ms = 200",
        redis.url()
    );
    let tenant = "max_concurrent = 2\ntokens_per_day = 1000000";
    let (stack, path) = governed(&config(tenant, &store), quick_sim()).await;
    let body = chat_body("llama3.2", "hi");
    assert_eq!(post(&stack, Some(KEY), body.clone()).await.status(), 200);
    let before = limits(&stack, KEY).await["limits"]["remaining"].clone();
    assert_eq!(before["concurrent"], 2);

    redis.pause();
    for _ in 0..6 {
        refusal(
            post(&stack, Some(KEY), body.clone()).await,
            503,
            "limits_unavailable",
        )
        .await;
    }
    redis.resume();

    // The six late reservations ran when Redis woke; their cancellations follow.
    let (http, url) = (stack.http.clone(), stack.url("/v1/limits"));
    eventually_async(
        "every late reservation cancelled",
        Duration::from_secs(20),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let Ok(answer) = http.get(url).bearer_auth(KEY).send().await else {
                    return false;
                };
                let Ok(view) = answer.json::<Value>().await else {
                    return false;
                };
                view["limits"]["remaining"]["concurrent"] == 2
            }
        },
    )
    .await;
    let after = limits(&stack, KEY).await["limits"]["remaining"].clone();
    assert_eq!(
        after["tokens_today"], before["tokens_today"],
        "nothing charged for refused work"
    );
    // Both places are free: two requests at once are both served.
    let (first, second) = tokio::join!(
        post(&stack, Some(KEY), body.clone()),
        post(&stack, Some(KEY), body.clone())
    );
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let _ = std::fs::remove_file(path);
}

/// A finished request is settled before its answer's last byte: a client that sends its next
/// request once it read the answer never finds its own finished request holding its only
/// place (before, settlement ran on a task of its own, after the answer went out).
#[tokio::test]
async fn a_sequential_client_never_waits_for_its_own_finished_request() {
    let redis = RedisServer::start().await;
    let store = format!("redis_url = \"{}\"", redis.url());
    let (stack, path) = governed(&config("max_concurrent = 1", &store), quick_sim()).await;
    for round in 0..20 {
        let mut body = chat_body("llama3.2", "next");
        body["stream"] = json!(round % 2 == 0);
        let answer = post(&stack, Some(KEY), body).await;
        assert_eq!(answer.status(), 200, "round {round}");
        answer.bytes().await.unwrap();
    }
    let _ = std::fs::remove_file(path);
}

/// Every route that reaches an engine is governed by the same rules: the key decides the
/// tenant, its `rpm` counts requests of every kind together, the model allow-list holds, and
/// the refusals carry their reason (Ollama's routes in Ollama's error shape).
#[tokio::test]
async fn every_route_is_governed_alike() {
    let (stack, _path) = governed(&config("rpm = 5\ntpm = 100000", ""), quick_sim()).await;
    let send = |path: &'static str, key: Option<&'static str>, body: Value| {
        let mut request = stack.http.post(stack.url(path)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let chat = json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    let routes: [(&str, Value); 5] = [
        (
            "/v1/embeddings",
            json!({"model": "llama3.2", "input": "hi"}),
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "hi"}),
        ),
        ("/api/chat", chat.clone()),
        ("/api/embed", json!({"model": "llama3.2", "input": "hi"})),
        // Ollama's "load the model" (no prompt) is answered by the gateway, but only after
        // the key, the model allow-list and the limits.
        ("/api/generate", json!({"model": "llama3.2"})),
    ];
    // No key: 401 on every route.
    for (path, body) in &routes {
        let response = send(path, None, body.clone()).await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            response.headers()["x-llmgw-reason"],
            "invalid_api_key",
            "{path}"
        );
    }
    // A tenant whose models exclude llama3.2 is refused on every route.
    for (path, body) in &routes {
        let response = send(path, Some(OTHER_KEY), body.clone()).await.unwrap();
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(
            response.headers()["x-llmgw-reason"],
            "model_not_allowed",
            "{path}"
        );
    }
    // team-a's rpm = 5 counts the five routes' requests together; the sixth is refused.
    for (path, body) in &routes {
        let response = send(path, Some(KEY), body.clone()).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["x-llmgw-tenant"], "team-a", "{path}");
    }
    let refused = send("/api/chat", Some(KEY), chat).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-llmgw-reason"], "rate_limited");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("`rpm`"),
        "Ollama's error shape: {body}"
    );
}
