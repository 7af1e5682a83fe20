//! Config-driven routing through the whole stack: public names and aliases, versions, an
//! OpenAI-compatible backend next to an Ollama one, `/v1/models`, and hot reload under load.

use std::time::Duration;

use llm_sim::{SimConfig, completion_text};
use serde_json::json;

use crate::support::{SseData, Stack, chat_body, eventually, quick_sim, sse_data};

/// Pool `ollama` on the first sim (native API), pool `openai` on the second (OpenAI API).
fn mixed_fleet(urls: &[String]) -> String {
    format!(
        r#"
        [[pool]]
        name = "ollama"
        [[pool.endpoint]]
        url = "{}"
        kind = "ollama"
        slots = 4

        [[pool]]
        name = "openai"
        [[pool.endpoint]]
        url = "{}/v1"
        kind = "openai"
        slots = 4

        [[model]]
        name = "chat"
        aliases = ["assistant"]
        [[model.version]]
        name = "stable"
        pool = "ollama"
        upstream = "llama3.2"
        [[model.version]]
        name = "next"
        pool = "openai"
        upstream = "smollm2:135m"

        [[route]]
        tenant = "early-adopters"
        model = "chat"
        version = "next"
        "#,
        urls[0], urls[1]
    )
}

async fn content(stack: &Stack, model: &str, tenant: &str, stream: bool) -> (u16, String) {
    let mut body = chat_body(model, "route me");
    body["stream"] = json!(stream);
    let response = stack
        .http
        .post(stack.url("/v1/chat/completions"))
        .header("x-tenant-id", tenant)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if !stream || status != 200 {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        return (
            status,
            value["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let events = sse_data(&text);
    assert_eq!(events.last(), Some(&SseData::Done));
    (status, crate::support::streamed_text(&events))
}

#[tokio::test]
async fn models_versions_pins_and_both_backend_kinds() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], mixed_fleet, |_| {}).await;
    let expected = completion_text("route me", 0, 8);
    for stream in [false, true] {
        assert_eq!(
            content(&stack, "chat", "anyone", stream).await,
            (200, expected.clone())
        );
        assert_eq!(
            content(&stack, "assistant", "anyone", stream).await,
            (200, expected.clone()),
            "alias"
        );
        assert_eq!(
            content(&stack, "chat@next", "anyone", stream).await,
            (200, expected.clone()),
            "explicit version"
        );
        assert_eq!(
            content(&stack, "chat", "early-adopters", stream).await,
            (200, expected.clone()),
            "pinned tenant"
        );
    }
    let (ollama, openai) = (stack.sims[0].stats(), stack.sims[1].stats());
    assert_eq!(
        (ollama.requests, openai.requests),
        (4, 4),
        "stable on the Ollama sim, next on the OpenAI one"
    );

    let response = stack.chat(chat_body("llama3.2", "hi")).await;
    assert_eq!(
        response.status(),
        404,
        "upstream names are not public names"
    );
    let models: serde_json::Value = stack
        .http
        .get(stack.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "chat");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn hot_reload_under_load_loses_nothing_and_bad_files_are_refused() {
    let slow = SimConfig {
        ttft_ms: 5,
        tpot_ms: 10,
        output_tokens: 20,
        slots: 8,
        ..SimConfig::default()
    };
    let stack = Stack::fleet(vec![slow.clone(), slow], mixed_fleet, |_| {}).await;
    let path = stack.config_path.clone().unwrap();
    let original = std::fs::read_to_string(&path).unwrap();

    let mut load = Vec::new();
    for i in 0..24 {
        let (http, url) = (stack.http.clone(), stack.url("/v1/chat/completions"));
        load.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            let mut body = chat_body("chat", "under load");
            body["stream"] = json!(true);
            let response = http.post(url).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }));
    }
    // Mid-way — with generations provably running on the backends — move the stable version
    // to the OpenAI pool.
    let running = || stack.sims.iter().map(|sim| sim.stats().active).sum::<u64>();
    eventually("generations in flight", Duration::from_secs(5), || {
        running() >= 3
    })
    .await;
    let moved = original.replacen(
        "pool = \"ollama\"\n        upstream",
        "pool = \"openai\"\n        upstream",
        1,
    );
    assert_ne!(moved, original);
    std::fs::write(&path, &moved).unwrap();
    stack.topologies.reload().unwrap();
    for request in load {
        let (status, text) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            sse_data(&text).last(),
            Some(&SseData::Done),
            "every stream completes across the reload"
        );
    }
    let before = stack.sims[1].stats().requests;
    assert_eq!(content(&stack, "chat", "anyone", false).await.0, 200);
    assert_eq!(
        stack.sims[1].stats().requests,
        before + 1,
        "new requests follow the new routes"
    );

    std::fs::write(&path, "this is = not [valid").unwrap();
    let refused = stack.topologies.reload().unwrap_err();
    assert!(
        refused.contains("TOML") || refused.contains("expected"),
        "{refused}"
    );
    assert_eq!(
        content(&stack, "chat", "anyone", false).await.0,
        200,
        "the running config stays"
    );
}

#[tokio::test]
async fn an_edited_config_file_is_picked_up_without_a_signal() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], mixed_fleet, |_| {}).await;
    let path = stack.config_path.clone().unwrap();
    let edited = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"chat\"",
        "name = \"chat\"\n        fallbacks = []\n        default_version = \"next\"",
        1,
    );
    std::fs::write(&path, edited).unwrap();
    // The watcher checks the file every second; no SIGHUP, no reload() call.
    let topologies = std::sync::Arc::clone(&stack.topologies);
    crate::support::eventually("edited file applied", Duration::from_secs(5), || {
        topologies
            .current()
            .routes
            .resolve("chat", "anyone", 0)
            .map(|r| r.version == "next")
            .unwrap_or(false)
    })
    .await;
    assert_eq!(content(&stack, "chat", "anyone", false).await.0, 200);
    assert_eq!(
        stack.sims[1].stats().requests,
        1,
        "the default version now lives on the OpenAI pool"
    );
}
