//! `n` > 1, `logprobs` and `top_logprobs` reach OpenAI-compatible engines and come back in
//! OpenAI's shapes (choices by index, log probabilities per token), streamed and not. Ollama
//! (0.12.11+) returns log probabilities too, in the same shape; a model served by Ollama
//! refuses `n` > 1 before queueing, naming the field.

use llm_sim::completion_text;
use serde_json::{Value, json};

use crate::support::{Stack, quick_sim, sse_objects, two_kinds};

fn body(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "stream": stream, "seed": 4, "n": 2, "logprobs": true, "top_logprobs": 2,
        "messages": [{"role": "user", "content": "pick a colour"}],
    })
}

#[tokio::test]
async fn several_choices_with_log_probabilities_from_an_openai_engine() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let tokens = quick_sim().output_tokens;
    let text = |choice: u64| completion_text("pick a colour", 4 + choice, tokens);

    let response = stack.chat(body("via-openai", false)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{answer}");
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        assert_eq!(choice["message"]["content"], text(index as u64));
        assert_eq!(choice["finish_reason"], "stop");
        let logprobs = choice["logprobs"]["content"].as_array().unwrap();
        assert_eq!(logprobs.len(), tokens, "one entry per token");
        assert_eq!(logprobs[0]["top_logprobs"].as_array().unwrap().len(), 2);
        let joined: String = logprobs
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text(index as u64));
    }

    let response = stack.chat(body("via-openai", true)).await;
    assert_eq!(response.status(), 200);
    let chunks = sse_objects(&response.text().await.unwrap());
    for choice in 0..2u64 {
        let mine: Vec<&Value> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap())
            .filter(|c| c["index"] == choice)
            .collect();
        assert_eq!(
            mine[0]["delta"]["role"], "assistant",
            "each choice opens with its role"
        );
        let streamed: String = mine
            .iter()
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(streamed, text(choice));
        let with_logprobs = mine
            .iter()
            .filter(|c| c["logprobs"]["content"].is_array())
            .count();
        assert_eq!(with_logprobs, tokens);
        assert_eq!(mine.last().unwrap()["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn log_probabilities_from_an_ollama_engine() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let tokens = quick_sim().output_tokens;
    let text = completion_text("pick a colour", 4, tokens);
    let ask = |stream: bool| {
        let mut body = body("via-ollama", stream);
        body.as_object_mut().unwrap().remove("n");
        body
    };
    // The engine's own numbers for the answer's tokens, entry by entry.
    let expected = |entries: &[Value]| {
        for (index, entry) in entries.iter().enumerate() {
            let token = entry["token"].as_str().unwrap();
            assert_eq!(*entry, llm_sim::logprobs::entry(token, index, 2), "{index}");
        }
        let joined: String = entries
            .iter()
            .map(|e| e["token"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text);
    };

    let response = stack.chat(ask(false)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], text.as_str());
    let entries = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(entries.len(), tokens, "{answer}");
    expected(entries);

    let response = stack.chat(ask(true)).await;
    assert_eq!(response.status(), 200);
    let chunks = sse_objects(&response.text().await.unwrap());
    let entries: Vec<Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap())
        .filter_map(|c| c["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(entries.len(), tokens);
    expected(&entries);
}

#[tokio::test]
async fn an_ollama_served_model_refuses_several_choices_naming_the_field() {
    let stack = Stack::fleet(vec![quick_sim(), quick_sim()], two_kinds, |_| {}).await;
    let response = stack
        .chat(
            json!({"model": "via-ollama", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "n", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Ollama"),
        "{error}"
    );
    assert_eq!(
        stack.sims[0].stats().requests,
        0,
        "refused before reaching the engine"
    );
}
