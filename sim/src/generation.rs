//! One simulated generation: slot already held, tokens paced, faults applied. Both wire
//! protocols consume the same [`Step`] stream and only differ in framing.

use std::time::Duration;

use futures::Stream;

use crate::config::{Fault, SimConfig};
use crate::slots::SlotGuard;
use crate::structured::{JsonFormat, json_answer, pieces};
use crate::text::{completion_tokens, prompt_tokens};
use crate::tool_calls::ToolCall;

/// What one chat request asks of the simulator, protocol-neutral.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Canonical model tag.
    pub model: String,
    /// All message contents joined by newlines: the text seeds the output.
    pub prompt: String,
    pub seed: u64,
    /// Tokens to produce.
    pub tokens: usize,
    /// Whether the output was cut by `max_tokens` (finish reason `length`).
    pub truncated: bool,
    pub prompt_tokens: usize,
    /// Leading prompt words found in the engine's prompt cache: no prefill for them.
    pub cached_tokens: usize,
    /// Asked for JSON: the answer's pieces, in place of the vocabulary text.
    pub json: Option<Vec<String>>,
    /// Asked to use a tool: the call made in place of text (its arguments' pieces are the
    /// tokens, paced like text, not framed as content).
    pub tool_call: Option<ToolCall>,
    /// The request's `max_tokens`, if any.
    limit: Option<usize>,
}

impl Plan {
    /// Plans a generation for `prompt` with an optional `max_tokens` limit.
    pub fn new(
        config: &SimConfig,
        model: String,
        prompt: String,
        seed: Option<i64>,
        max_tokens: Option<i64>,
    ) -> Self {
        let limit = max_tokens.map(|m| m.max(0) as usize);
        let tokens = limit.map_or(config.output_tokens, |m| m.min(config.output_tokens));
        Self {
            model,
            prompt_tokens: prompt_tokens(&prompt),
            cached_tokens: 0,
            seed: seed.unwrap_or(0) as u64,
            tokens,
            truncated: limit.is_some_and(|m| m < config.output_tokens),
            prompt,
            json: None,
            tool_call: None,
            limit,
        }
    }

    /// Answers with `call` instead of text (never cut by `max_tokens`: a model emits a call
    /// whole or not at all).
    pub fn with_tool_call(mut self, call: Option<ToolCall>) -> Self {
        if let Some(call) = call {
            let pieces = pieces(&call.arguments_text());
            self.tokens = pieces.len();
            self.truncated = false;
            self.json = Some(pieces);
            self.tool_call = Some(call);
        }
        self
    }

    /// Answers with JSON for `format` instead (its length is the JSON's, cut by `max_tokens`).
    pub fn with_format(mut self, format: Option<JsonFormat>) -> Self {
        if let Some(format) = format {
            let pieces = pieces(&json_answer(&self.prompt, self.seed, &format));
            self.tokens = self.limit.map_or(pieces.len(), |m| m.min(pieces.len()));
            self.truncated = self.tokens < pieces.len();
            self.json = Some(pieces);
        }
        self
    }

    /// The text it will generate (choice 0).
    pub fn completion(&self) -> String {
        match &self.json {
            Some(pieces) => pieces.iter().take(self.tokens).cloned().collect(),
            None => completion_tokens(&self.prompt, self.seed, self.tokens).concat(),
        }
    }

    /// `stop` or `length` (Ollama's words; a tool call is `stop` there).
    pub fn finish_reason(&self) -> &'static str {
        if self.truncated { "length" } else { "stop" }
    }

    /// OpenAI's finish reason of choice `choice`: `tool_calls` for the call (choice 0), else
    /// [`Self::finish_reason`].
    pub fn finish_reason_of(&self, choice: u32) -> &'static str {
        if self.tool_call.is_some() && choice == 0 {
            "tool_calls"
        } else {
            self.finish_reason()
        }
    }
}

/// One step of a generation as the protocol layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next token's text.
    Token(String),
    /// The generation finished normally; the slot is already marked complete.
    Done,
    /// Fault: cut the connection now.
    Drop,
    /// Fault: write bytes that break the framing.
    Garbage,
}

/// Paces the plan's tokens and applies `fault`; holds `slot` until the stream ends or is
/// dropped (a client that leaves frees the slot at once).
pub fn run(
    plan: Plan,
    config: &SimConfig,
    fault: Fault,
    mut slot: SlotGuard,
) -> impl Stream<Item = Step> + Send + 'static {
    let ttft = config.time_to_first_token(plan.prompt_tokens - plan.cached_tokens);
    let decode = config.decode_pace();
    async_stream::stream! {
        pause(ttft).await;
        if fault == Fault::Garbage {
            yield Step::Garbage;
            return;
        }
        let tokens = match &plan.json {
            Some(pieces) => pieces.iter().take(plan.tokens).cloned().collect(),
            None => completion_tokens(&plan.prompt, plan.seed, plan.tokens),
        };
        for (index, token) in tokens.into_iter().enumerate() {
            match fault {
                Fault::DropAfter(n) if index == n => {
                    // Let the server flush the tokens already written before the cut, as a
                    // real engine that dies between two tokens would have.
                    pause(decode.at(slot.batch()).max(Duration::from_millis(1))).await;
                    yield Step::Drop;
                    return;
                }
                Fault::StallAfter(n) if index == n => futures::future::pending::<()>().await,
                _ => {}
            }
            if index > 0 {
                pause(decode.at(slot.batch())).await;
            }
            yield Step::Token(token);
        }
        if let Fault::StallAfter(n) = fault && n >= plan.tokens {
            futures::future::pending::<()>().await;
        }
        slot.complete();
        drop(slot);
        yield Step::Done;
    }
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// The prompt text of a chat: every message's text content, joined by newlines. Accepts both
/// plain string content and OpenAI's array of `{"type":"text","text":…}` parts.
pub fn prompt_from_messages(messages: &[serde_json::Value]) -> String {
    let text_of = |content: &serde_json::Value| match content {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    messages
        .iter()
        .map(|message| message.get("content").map(text_of).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}
