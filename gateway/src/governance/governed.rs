//! [`Governed`]: what admission reads of a request of any kind (chat, completion, embeddings)
//! and the one thing it writes — a tenant's completion cap — so every route is governed by the
//! same code: model allow-list, engine options, caps, and the reservation against limits.

use llmgw_proto::v1::{ChatRequest, CompletionRequest, EmbedRequest, SamplingParams};

use super::estimate::chat_texts;
use crate::caller::Caller;

pub trait Governed {
    /// Writes who is asking (the caller's tenant, class and request id) and the request's
    /// deadline into the request: never what the client sent.
    fn stamp(&mut self, caller: &Caller, deadline_ms: u64);
    fn model(&self) -> &str;
    /// Engine options as a JSON object (empty: none).
    fn extra_json(&self) -> &str;
    /// The sampling parameters a completion cap is written into; `None` when the request
    /// generates nothing (embeddings).
    fn sampling_mut(&mut self) -> Option<&mut SamplingParams>;
    /// The most output tokens asked for, if the caller said.
    fn max_output(&self) -> Option<u32>;
    /// The texts the engine tokenizes, and how many chat messages wrap them.
    fn prompt_texts(&self) -> (Vec<&str>, usize);
    /// Tells the scheduler the prompt's tokens, as a tokenizer counted them.
    fn estimate_prompt(&mut self, tokens: u32);
    /// Images in the prompt (each counts `IMAGE_PROMPT_TOKENS`).
    fn prompt_images(&self) -> u32 {
        0
    }
}

impl Governed for ChatRequest {
    fn stamp(&mut self, caller: &Caller, deadline_ms: u64) {
        self.tenant = caller.tenant.clone();
        self.priority = caller.priority as i32;
        self.request_id = caller.request_id.clone();
        self.deadline_ms = deadline_ms;
        self.allowed_models = caller.allowed_models();
        self.slo_ttft_ms = caller.slo_ttft_ms;
        self.slo_tpot_ms = caller.slo_tpot_ms;
    }
    fn estimate_prompt(&mut self, tokens: u32) {
        self.prompt_tokens_estimate = tokens;
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn extra_json(&self) -> &str {
        &self.extra_json
    }
    fn sampling_mut(&mut self) -> Option<&mut SamplingParams> {
        Some(self.sampling.get_or_insert_with(SamplingParams::default))
    }
    /// Every choice may produce the cap: `n` of them reserve `n` times as much.
    fn max_output(&self) -> Option<u32> {
        let per_choice = self.sampling.as_ref().and_then(|s| s.max_tokens)?;
        Some(per_choice.saturating_mul(self.n.max(1)))
    }
    fn prompt_texts(&self) -> (Vec<&str>, usize) {
        (chat_texts(self), self.messages.len())
    }
    fn prompt_images(&self) -> u32 {
        let images: usize = self.messages.iter().map(|m| m.images.len()).sum();
        u32::try_from(images).unwrap_or(u32::MAX)
    }
}

impl Governed for CompletionRequest {
    fn stamp(&mut self, caller: &Caller, deadline_ms: u64) {
        self.tenant = caller.tenant.clone();
        self.priority = caller.priority as i32;
        self.request_id = caller.request_id.clone();
        self.deadline_ms = deadline_ms;
        self.allowed_models = caller.allowed_models();
        self.slo_ttft_ms = caller.slo_ttft_ms;
        self.slo_tpot_ms = caller.slo_tpot_ms;
    }
    fn estimate_prompt(&mut self, tokens: u32) {
        self.prompt_tokens_estimate = tokens;
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn extra_json(&self) -> &str {
        &self.extra_json
    }
    fn sampling_mut(&mut self) -> Option<&mut SamplingParams> {
        Some(self.sampling.get_or_insert_with(SamplingParams::default))
    }
    fn max_output(&self) -> Option<u32> {
        self.sampling.as_ref().and_then(|s| s.max_tokens)
    }
    fn prompt_texts(&self) -> (Vec<&str>, usize) {
        (vec![self.prompt.as_str(), self.suffix.as_str()], 0)
    }
}

impl Governed for EmbedRequest {
    fn stamp(&mut self, caller: &Caller, deadline_ms: u64) {
        self.tenant = caller.tenant.clone();
        self.priority = caller.priority as i32;
        self.request_id = caller.request_id.clone();
        self.deadline_ms = deadline_ms;
        self.allowed_models = caller.allowed_models();
        self.slo_ttft_ms = caller.slo_ttft_ms;
    }
    fn estimate_prompt(&mut self, tokens: u32) {
        self.prompt_tokens_estimate = tokens;
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn extra_json(&self) -> &str {
        &self.extra_json
    }
    fn sampling_mut(&mut self) -> Option<&mut SamplingParams> {
        None
    }
    fn max_output(&self) -> Option<u32> {
        Some(0)
    }
    fn prompt_texts(&self) -> (Vec<&str>, usize) {
        (self.input.iter().map(String::as_str).collect(), 0)
    }
}
