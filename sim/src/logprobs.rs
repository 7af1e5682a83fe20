//! Deterministic log probabilities for the simulator's tokens, one entry per token in the shape
//! both OpenAI (`logprobs.content[]`) and Ollama (`logprobs[]`) use: token `index` has
//! −0.1 × (index + 1), and its `alternatives` (`alt0`, `alt1`, …) each 1 lower than the last.

use serde_json::{Value, json};

/// The entry for `token`, the `index`-th of the answer.
pub fn entry(token: &str, index: usize, alternatives: u32) -> Value {
    let logprob = -0.1 * (index as f64 + 1.0);
    let top: Vec<Value> = (0..alternatives)
        .map(|rank| {
            json!({ "token": format!("alt{rank}"), "logprob": logprob - 1.0 - f64::from(rank), "bytes": null })
        })
        .collect();
    json!({ "token": token, "logprob": logprob, "bytes": token.as_bytes(), "top_logprobs": top })
}
