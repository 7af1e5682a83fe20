//! Ollama's native API at the edge, over an Ollama-kind and an OpenAI-kind backend: the same
//! text, vectors and counts the engine computed, in Ollama's NDJSON and JSON shapes; model
//! management refused; errors as Ollama's `{"error": …}`.

use llm_sim::completion_text;
use llm_sim::embeddings::embedding;
use serde_json::{Value, json};

use crate::support::{Stack, quick_sim, two_kinds};

async fn post(stack: &Stack, path: &str, body: Value) -> reqwest::Response {
    stack
        .http
        .post(stack.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn chat_generate_and_embed_in_ollamas_shapes_on_both_backend_kinds() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let tokens = quick_sim().output_tokens;
    for model in ["via-ollama", "via-openai"] {
        let messages = json!([{"role": "user", "content": "hi there"}]);
        // Ollama streams by default: NDJSON, one line per token, then the final object.
        let response = post(
            &stack,
            "/api/chat",
            json!({"model": model, "messages": messages}),
        )
        .await;
        assert_eq!(response.status(), 200, "{model}");
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let lines = lines(&response.text().await.unwrap());
        assert_eq!(lines.len(), tokens + 1, "{model}");
        let text: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        assert_eq!(text, completion_text("hi there", 0, tokens));
        let last = lines.last().unwrap();
        assert_eq!(
            (last["done"].clone(), last["done_reason"].clone()),
            (json!(true), json!("stop"))
        );
        assert_eq!(
            (
                last["prompt_eval_count"].clone(),
                last["eval_count"].clone()
            ),
            (json!(2), json!(tokens))
        );
        assert!(
            lines[..tokens]
                .iter()
                .all(|l| l["done"] == false && l["model"] == model)
        );

        let body = json!({"model": model, "messages": messages, "stream": false, "options": {"num_predict": 3}});
        let whole: Value = post(&stack, "/api/chat", body).await.json().await.unwrap();
        assert_eq!(whole["message"]["role"], "assistant");
        assert_eq!(
            whole["message"]["content"],
            completion_text("hi there", 0, 3)
        );
        assert_eq!(whole["done_reason"], "length");

        let body =
            json!({"model": model, "prompt": "Once upon a time", "stream": false, "raw": true});
        let generated: Value = post(&stack, "/api/generate", body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            generated["response"],
            completion_text("Once upon a time", 0, tokens),
            "{model}"
        );
        assert_eq!(generated["done"], true);

        let embedded: Value = post(
            &stack,
            "/api/embed",
            json!({"model": model, "input": ["the cat", "a dog"]}),
        )
        .await
        .json()
        .await
        .unwrap();
        let vectors: Vec<Vec<f32>> =
            serde_json::from_value(embedded["embeddings"].clone()).unwrap();
        assert_eq!(
            vectors,
            vec![embedding("the cat", None), embedding("a dog", None)],
            "{model}"
        );
        assert_eq!(embedded["prompt_eval_count"], 4);
    }
}

#[tokio::test]
async fn listing_version_management_and_errors_speak_ollama() {
    let stack = Stack::start(quick_sim()).await;
    let tags: Value = stack
        .http
        .get(stack.url("/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"llama3.2:latest"), "{tags}");
    let version: Value = stack
        .http
        .get(stack.url("/api/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(version["version"].as_str().unwrap().starts_with("0."));

    for path in ["/api/pull", "/api/delete", "/api/create"] {
        let response = post(&stack, path, json!({"model": "llama3.2"})).await;
        assert_eq!(response.status(), 403, "{path}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("model management"),
            "{error}"
        );
    }
    // A bad request: Ollama's error shape, the message naming the field.
    let response = post(
        &stack,
        "/api/chat",
        json!({"model": "llama3.2", "messages": [], "stream": false}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("`messages`"),
        "{error}"
    );
    // Options may not set what the scheduler decides (`n` would bypass the choice limit).
    let response = post(
        &stack,
        "/api/chat",
        json!({"model": "llama3.2", "stream": false, "options": {"n": 50},
        "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("`options.n`"),
        "{error}"
    );
    // The backend's 404 for an unknown model.
    let response = post(
        &stack,
        "/api/chat",
        json!({"model": "nope", "stream": false,
        "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    // Generate with no prompt is Ollama's "load the model": answered without a generation.
    let loaded: Value = post(&stack, "/api/generate", json!({"model": "llama3.2"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (loaded["done"].clone(), loaded["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    // Loading a model no scheduler serves is refused like a generation would be.
    let refused = post(&stack, "/api/generate", json!({"model": "nope"})).await;
    assert_eq!(refused.status(), 404);
    assert_eq!(refused.headers()["x-llmgw-reason"], "model_not_found");
    assert!(refused.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(
        stack.sim().stats().requests,
        1,
        "only the unknown model's request reached the engine"
    );
}

#[tokio::test]
async fn chat_log_probabilities_in_ollamas_shape_from_both_backend_kinds() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let tokens = quick_sim().output_tokens;
    let text = completion_text("hi there", 0, tokens);
    // The engine's own numbers, entry by entry, in Ollama's `logprobs` array.
    let check = |entries: &[Value], model: &str| {
        assert_eq!(entries.len(), tokens, "{model}");
        for (index, entry) in entries.iter().enumerate() {
            let token = entry["token"].as_str().unwrap();
            assert_eq!(*entry, llm_sim::logprobs::entry(token, index, 2), "{model}");
        }
        let joined: String = entries
            .iter()
            .map(|e| e["token"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text, "{model}");
    };
    for model in ["via-ollama", "via-openai"] {
        let ask = |stream: bool| {
            json!({"model": model, "stream": stream, "logprobs": true, "top_logprobs": 2,
                   "messages": [{"role": "user", "content": "hi there"}]})
        };
        let whole: Value = post(&stack, "/api/chat", ask(false))
            .await
            .json()
            .await
            .unwrap();
        check(whole["logprobs"].as_array().unwrap(), model);
        let response = post(&stack, "/api/chat", ask(true)).await;
        assert_eq!(response.status(), 200);
        let streamed: Vec<Value> = lines(&response.text().await.unwrap())
            .iter()
            .filter_map(|line| line["logprobs"].as_array().cloned())
            .flatten()
            .collect();
        check(&streamed, model);
    }
    // Generate carries text only: asking it for log probabilities is a 400 naming the field.
    let refused = post(
        &stack,
        "/api/generate",
        json!({"model": "via-ollama", "prompt": "x", "logprobs": true}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert!(
        refused.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("logprobs")
    );
}
