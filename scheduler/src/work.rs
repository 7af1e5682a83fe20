//! [`Work`]: what one call asks a backend to do — a chat, a text completion or embeddings. The
//! pipeline (validation, admission, routing, attempts, relay) is the same for all three; only
//! the backend request and the events it yields differ.

use llmgw_proto::v1::{ChatRequest, CompletionRequest, EmbedRequest, SamplingParams};
use prost::Message as _;

use crate::admission::Cost;

/// Completion tokens assumed for a request that sets no `max_tokens`, until its real usage
/// corrects the estimate.
pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 256;
/// Template tokens counted per chat message (role markers, separators).
const PER_MESSAGE: usize = 8;

/// One call's request, by RPC.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Chat(ChatRequest),
    Completion(CompletionRequest),
    Embedding(EmbedRequest),
}

/// The fields every kind of request has, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    pub model: &'a str,
    pub tenant: &'a str,
    pub priority: i32,
    pub deadline_ms: u64,
    pub extra_json: &'a str,
    pub request_id: &'a str,
    /// Model globs the caller may be served by; empty = any.
    pub allowed_models: &'a [String],
}

impl Work {
    pub fn common(&self) -> Common<'_> {
        match self {
            Self::Chat(r) => Common {
                model: &r.model,
                tenant: &r.tenant,
                priority: r.priority,
                deadline_ms: r.deadline_ms,
                extra_json: &r.extra_json,
                request_id: &r.request_id,
                allowed_models: &r.allowed_models,
            },
            Self::Completion(r) => Common {
                model: &r.model,
                tenant: &r.tenant,
                priority: r.priority,
                deadline_ms: r.deadline_ms,
                extra_json: &r.extra_json,
                request_id: &r.request_id,
                allowed_models: &r.allowed_models,
            },
            Self::Embedding(r) => Common {
                model: &r.model,
                tenant: &r.tenant,
                priority: r.priority,
                deadline_ms: r.deadline_ms,
                extra_json: &r.extra_json,
                request_id: &r.request_id,
                allowed_models: &r.allowed_models,
            },
        }
    }

    pub fn model(&self) -> &str {
        self.common().model
    }

    /// Whether the caller may be served by the public model `name`.
    pub fn allows_model(&self, name: &str) -> bool {
        let allowed = self.common().allowed_models;
        allowed.is_empty()
            || allowed
                .iter()
                .any(|glob| llmgw_proto::glob_matches(glob, name))
    }

    /// Whether the caller asked for a stream (embeddings never stream).
    pub fn stream(&self) -> bool {
        match self {
            Self::Chat(r) => r.stream,
            Self::Completion(r) => r.stream,
            Self::Embedding(_) => false,
        }
    }

    pub fn sampling(&self) -> Option<&SamplingParams> {
        match self {
            Self::Chat(r) => r.sampling.as_ref(),
            Self::Completion(r) => r.sampling.as_ref(),
            Self::Embedding(_) => None,
        }
    }

    /// The request as sent to one backend: the upstream model name, always streamed (so
    /// first-token and idle timeouts and cancellation work the same for every call).
    pub fn for_backend(&self, upstream: &str) -> Self {
        let mut call = self.clone();
        match &mut call {
            Self::Chat(r) => {
                r.model = upstream.to_owned();
                r.stream = true;
            }
            Self::Completion(r) => {
                r.model = upstream.to_owned();
                r.stream = true;
            }
            Self::Embedding(r) => r.model = upstream.to_owned(),
        }
        call
    }

    /// The tokens it carries: the caller's prompt estimate (else ~4 bytes a token, plus 8 a
    /// message for the chat template and `IMAGE_PROMPT_TOKENS` an image), and its `max_tokens` (else
    /// [`DEFAULT_COMPLETION_ESTIMATE`], which admission replaces by the pool's average
    /// completion once it knows one); embeddings generate nothing.
    pub fn cost(&self) -> Cost {
        let (sent, bytes, completion) = match self {
            Self::Chat(r) => (
                r.prompt_tokens_estimate,
                r.messages
                    .iter()
                    .map(|m| {
                        m.content.len().div_ceil(4)
                            + PER_MESSAGE
                            + m.images.len() * llmgw_proto::IMAGE_PROMPT_TOKENS as usize
                    })
                    .sum::<usize>(),
                Some(r.sampling.as_ref().and_then(|s| s.max_tokens)),
            ),
            Self::Completion(r) => (
                r.prompt_tokens_estimate,
                r.prompt.len().div_ceil(4) + r.suffix.len().div_ceil(4),
                Some(r.sampling.as_ref().and_then(|s| s.max_tokens)),
            ),
            Self::Embedding(r) => (
                r.prompt_tokens_estimate,
                r.input.iter().map(|input| input.len().div_ceil(4)).sum(),
                None,
            ),
        };
        let prompt_tokens = if sent > 0 {
            sent
        } else {
            u32::try_from(bytes.max(1)).unwrap_or(u32::MAX)
        };
        Cost {
            prompt_tokens,
            completion_tokens: completion.map_or(0, |cap| {
                cap.unwrap_or(DEFAULT_COMPLETION_ESTIMATE).min(1 << 20)
            }),
        }
    }

    /// Whether the completion tokens of [`Work::cost`] are the caller's own cap.
    pub fn completion_capped(&self) -> bool {
        match self {
            Self::Embedding(_) => true,
            Self::Chat(_) | Self::Completion(_) => {
                self.sampling().and_then(|s| s.max_tokens).is_some()
            }
        }
    }

    /// The caller's first-token objective, if it sent one.
    pub fn slo_ttft(&self) -> Option<std::time::Duration> {
        let ms = match self {
            Self::Chat(r) => r.slo_ttft_ms,
            Self::Completion(r) => r.slo_ttft_ms,
            Self::Embedding(r) => r.slo_ttft_ms,
        };
        (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
    }

    /// The caller's time-per-output-token objective, if it sent one (embeddings produce no
    /// tokens, so have none).
    pub fn slo_tpot(&self) -> Option<std::time::Duration> {
        let ms = match self {
            Self::Chat(r) => r.slo_tpot_ms,
            Self::Completion(r) => r.slo_tpot_ms,
            Self::Embedding(_) => 0,
        };
        (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
    }

    /// Its size on the wire, which bounds the queue's memory.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Chat(r) => r.encoded_len(),
            Self::Completion(r) => r.encoded_len(),
            Self::Embedding(r) => r.encoded_len(),
        }
    }

    /// The OpenTelemetry GenAI operation name.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Chat(_) => "chat",
            Self::Completion(_) => "text_completion",
            Self::Embedding(_) => "embeddings",
        }
    }

    /// The RPC, for span names and logs.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Chat(_) => "Chat",
            Self::Completion(_) => "Complete",
            Self::Embedding(_) => "Embed",
        }
    }
}
