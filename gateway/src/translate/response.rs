//! Scheduler events → OpenAI responses: SSE chunks for streams, one `chat.completion` object
//! otherwise. Both paths see the same events in the same order: deltas, finish, usage.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{Delta, ToolCallDelta};

use super::shape::{SSE_DONE, StreamShape, sse_comment, sse_data};
use crate::error::ApiError;
use crate::openai::response::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, ChunkDelta,
    FunctionCall, ToolCall, ToolCallChunk, Usage,
};

/// Identity shared by every chunk of one response.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    /// A fresh `chatcmpl-…` id stamped now.
    pub fn new(model: String) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            id: format!("chatcmpl-{:024x}", fastrand::u128(..) >> 32),
            created,
            model,
        }
    }
}

/// Turns events into SSE frames (`data: {…}\n\n`).
#[derive(Debug)]
pub struct SseTranslator {
    meta: ResponseMeta,
    include_usage: bool,
    finished: bool,
}

impl SseTranslator {
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        Self {
            meta,
            include_usage,
            finished: false,
        }
    }

    /// The opening chunk announcing the assistant role, as OpenAI sends it.
    pub fn role_frame(&self) -> Bytes {
        let delta = ChunkDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            tool_calls: Vec::new(),
        };
        self.chunk_frame(delta, None)
    }

    /// The frame for one event, if it produces one.
    pub fn frame(&mut self, event: Event) -> Option<Bytes> {
        match event {
            Event::Queued(_) | Event::Started(_) | Event::Embeddings(_) => None,
            Event::Delta(delta) => Some(self.chunk_frame(chunk_delta(delta), None)),
            Event::Finish(finish) => {
                self.finished = true;
                Some(self.chunk_frame(ChunkDelta::default(), Some(finish.reason)))
            }
            Event::Usage(usage) if self.include_usage => {
                let chunk = ChatCompletionChunk {
                    id: &self.meta.id,
                    object: "chat.completion.chunk",
                    created: self.meta.created,
                    model: &self.meta.model,
                    choices: Vec::new(),
                    usage: Some(Some(Usage::new(
                        usage.prompt_tokens,
                        usage.completion_tokens,
                    ))),
                };
                Some(sse_data(&chunk))
            }
            Event::Usage(_) => None,
        }
    }

    fn chunk_frame(&self, delta: ChunkDelta, finish_reason: Option<String>) -> Bytes {
        let chunk = ChatCompletionChunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: self.include_usage.then_some(None),
        };
        sse_data(&chunk)
    }
}

/// An error event: the OpenAI envelope as an SSE data frame (the SDKs raise it).
pub fn error_frame(error: &ApiError) -> Bytes {
    sse_data(&error.envelope())
}

impl StreamShape for SseTranslator {
    const CONTENT_TYPE: &'static str = "text/event-stream";
    fn opening(&self) -> Option<Bytes> {
        Some(self.role_frame())
    }
    fn frame(&mut self, event: Event) -> Option<Bytes> {
        SseTranslator::frame(self, event)
    }
    fn finished(&self) -> bool {
        self.finished
    }
    fn done(&self) -> Option<Bytes> {
        Some(Bytes::from_static(SSE_DONE))
    }
    fn error(&self, error: &ApiError) -> Bytes {
        error_frame(error)
    }
    fn comment(&self, text: &str) -> Option<Bytes> {
        Some(sse_comment(text))
    }
}

fn chunk_delta(delta: Delta) -> ChunkDelta {
    ChunkDelta {
        role: None,
        content: (!delta.content.is_empty() || delta.tool_calls.is_empty())
            .then_some(delta.content),
        tool_calls: delta
            .tool_calls
            .into_iter()
            .map(|call| ToolCallChunk {
                index: call.index,
                id: call.id,
                kind: call.r#type,
                function: FunctionCall {
                    name: call.name,
                    arguments: call.arguments,
                },
            })
            .collect(),
    }
}

/// Collects events into one `chat.completion`.
#[derive(Debug)]
pub struct Aggregate {
    meta: ResponseMeta,
    content: String,
    tool_calls: Vec<ToolCallDelta>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl Aggregate {
    pub fn new(meta: ResponseMeta) -> Self {
        Self {
            meta,
            content: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Adds one event.
    pub fn push(&mut self, event: Event) {
        match event {
            Event::Queued(_) | Event::Started(_) | Event::Embeddings(_) => {}
            Event::Delta(delta) => {
                self.content.push_str(&delta.content);
                for piece in delta.tool_calls {
                    llmgw_proto::merge_tool_call(&mut self.tool_calls, piece);
                }
            }
            Event::Finish(finish) => self.finish_reason = Some(finish.reason),
            Event::Usage(usage) => {
                self.usage = Some(Usage::new(usage.prompt_tokens, usage.completion_tokens))
            }
        }
    }

    /// The completed response, or an error if the backend never finished.
    pub fn finish(self) -> Result<ChatCompletion, ApiError> {
        let meta = self.meta.clone();
        let whole = self.whole()?;
        let content =
            (!whole.content.is_empty() || whole.tool_calls.is_empty()).then_some(whole.content);
        Ok(ChatCompletion {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    tool_calls: whole.tool_calls.into_iter().map(whole_tool_call).collect(),
                },
                finish_reason: whole.finish_reason,
                logprobs: None,
            }],
            usage: whole.usage,
        })
    }

    /// The answer's parts, in no API's shape, or an error if the backend never finished.
    pub fn whole(self) -> Result<Whole, ApiError> {
        let Some(finish_reason) = self.finish_reason else {
            return Err(ApiError::backend_interrupted());
        };
        Ok(Whole {
            content: self.content,
            tool_calls: self.tool_calls,
            finish_reason,
            usage: self.usage.unwrap_or(Usage::new(0, 0)),
        })
    }
}

/// A finished answer's parts.
#[derive(Debug)]
pub struct Whole {
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: String,
    pub usage: Usage,
}

/// A merged call in OpenAI's shape.
fn whole_tool_call(call: ToolCallDelta) -> ToolCall {
    ToolCall {
        id: call.id,
        kind: if call.r#type.is_empty() {
            "function".to_owned()
        } else {
            call.r#type
        },
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{Finish, Usage as ProtoUsage};

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        }
    }

    fn json(frame: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(frame).unwrap();
        serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap()
    }

    #[test]
    fn stream_frames_match_openai_shapes_with_include_usage() {
        let mut sse = SseTranslator::new(meta(), true);
        let role = json(&sse.role_frame());
        assert_eq!(
            role["choices"][0]["delta"],
            serde_json::json!({"role":"assistant","content":""})
        );
        assert!(role["usage"].is_null() && role.as_object().unwrap().contains_key("usage"));
        let delta = json(
            &sse.frame(Event::Delta(Delta {
                content: "Hi".into(),
                tool_calls: vec![],
            }))
            .unwrap(),
        );
        assert_eq!(delta["object"], "chat.completion.chunk");
        assert_eq!(
            delta["choices"][0]["delta"],
            serde_json::json!({"content":"Hi"})
        );
        let finish = json(
            &sse.frame(Event::Finish(Finish {
                reason: "stop".into(),
            }))
            .unwrap(),
        );
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        let usage = json(
            &sse.frame(Event::Usage(ProtoUsage {
                prompt_tokens: 3,
                completion_tokens: 2,
            }))
            .unwrap(),
        );
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(
            usage["usage"],
            serde_json::json!({"prompt_tokens":3,"completion_tokens":2,"total_tokens":5})
        );
        assert!(sse.finished());
    }

    #[test]
    fn without_include_usage_there_is_no_usage_key_and_no_usage_chunk() {
        let mut sse = SseTranslator::new(meta(), false);
        let delta = json(
            &sse.frame(Event::Delta(Delta {
                content: "x".into(),
                tool_calls: vec![],
            }))
            .unwrap(),
        );
        assert!(!delta.as_object().unwrap().contains_key("usage"));
        assert!(
            sse.frame(Event::Usage(ProtoUsage {
                prompt_tokens: 1,
                completion_tokens: 1
            }))
            .is_none()
        );
    }

    #[test]
    fn aggregate_merges_tool_call_pieces_and_requires_a_finish() {
        let mut aggregate = Aggregate::new(meta());
        let piece = |id: &str, name: &str, args: &str| ToolCallDelta {
            index: 0,
            id: id.into(),
            r#type: "function".into(),
            name: name.into(),
            arguments: args.into(),
        };
        aggregate.push(Event::Delta(Delta {
            content: String::new(),
            tool_calls: vec![piece("call_1", "f", "{\"a\":")],
        }));
        aggregate.push(Event::Delta(Delta {
            content: String::new(),
            tool_calls: vec![piece("", "", "1}")],
        }));
        aggregate.push(Event::Finish(Finish {
            reason: "tool_calls".into(),
        }));
        let done = aggregate.finish().unwrap();
        let message = &done.choices[0].message;
        assert_eq!(message.content, None);
        assert_eq!(message.tool_calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(message.tool_calls[0].id, "call_1");
        assert!(Aggregate::new(meta()).finish().is_err());
    }
}
