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
    /// Choices whose role chunk went out (choice 0's is the stream's opening).
    announced: Vec<u32>,
}

impl SseTranslator {
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        Self {
            meta,
            include_usage,
            finished: false,
            announced: vec![0],
        }
    }

    /// The opening chunk announcing the assistant role, as OpenAI sends it.
    pub fn role_frame(&self) -> Bytes {
        self.role_frame_of(0)
    }

    fn role_frame_of(&self, choice: u32) -> Bytes {
        let delta = ChunkDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            tool_calls: Vec::new(),
        };
        self.chunk_frame(choice, delta, None, None)
    }

    /// The frame for one event, if it produces one; a choice's first piece (with `n` > 1)
    /// comes after its own role chunk.
    pub fn frame(&mut self, event: Event) -> Option<Bytes> {
        match event {
            Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Embeddings(_) => {
                None
            }
            Event::Delta(delta) => {
                let choice = delta.choice;
                let logprobs = parse_logprobs(&delta.logprobs_json);
                let chunk = self.chunk_frame(choice, chunk_delta(delta), None, logprobs);
                if self.announced.contains(&choice) {
                    return Some(chunk);
                }
                self.announced.push(choice);
                Some([self.role_frame_of(choice), chunk].concat().into())
            }
            Event::Finish(finish) => {
                self.finished = true;
                let delta = ChunkDelta::default();
                Some(self.chunk_frame(finish.choice, delta, Some(finish.reason), None))
            }
            Event::Usage(usage) if self.include_usage => {
                let chunk = ChatCompletionChunk {
                    id: &self.meta.id,
                    object: "chat.completion.chunk",
                    created: self.meta.created,
                    model: &self.meta.model,
                    choices: Vec::new(),
                    usage: Some(Some(Usage::reported(&usage))),
                };
                Some(sse_data(&chunk))
            }
            Event::Usage(_) => None,
        }
    }

    fn chunk_frame(
        &self,
        index: u32,
        delta: ChunkDelta,
        finish_reason: Option<String>,
        logprobs: Option<serde_json::Value>,
    ) -> Bytes {
        let chunk = ChatCompletionChunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices: vec![ChunkChoice {
                index,
                delta,
                finish_reason,
                logprobs,
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
    fn opening(&mut self) -> Option<Bytes> {
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

/// The engine's log probabilities, as they came (`None`: not asked for).
fn parse_logprobs(json: &str) -> Option<serde_json::Value> {
    (!json.is_empty())
        .then(|| serde_json::from_str(json).ok())
        .flatten()
}

/// The per-token entries of the engine's log probabilities (the carried
/// `{"content": [...]}`'s array); `None` when there are none.
pub fn logprob_entries(json: &str) -> Option<serde_json::Value> {
    match parse_logprobs(json)? {
        serde_json::Value::Object(mut carried) => carried.remove("content"),
        _ => None,
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

/// Collects events into one `chat.completion` (one choice per `n`).
#[derive(Debug)]
pub struct Aggregate {
    meta: ResponseMeta,
    choices: Vec<Whole>,
    usage: Option<Usage>,
}

impl Aggregate {
    pub fn new(meta: ResponseMeta) -> Self {
        Self {
            meta,
            choices: Vec::new(),
            usage: None,
        }
    }

    fn choice(&mut self, index: u32) -> &mut Whole {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(Whole {
                    index,
                    ..Whole::default()
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }

    /// Adds one event.
    pub fn push(&mut self, event: Event) {
        match event {
            Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Embeddings(_) => {}
            Event::Delta(delta) => {
                let choice = self.choice(delta.choice);
                choice.content.push_str(&delta.content);
                for piece in delta.tool_calls {
                    llmgw_proto::merge_tool_call(&mut choice.tool_calls, piece);
                }
                if let Some(serde_json::Value::Array(tokens)) =
                    logprob_entries(&delta.logprobs_json)
                {
                    choice.logprobs.get_or_insert_with(Vec::new).extend(tokens);
                }
            }
            Event::Finish(finish) => self.choice(finish.choice).finish_reason = finish.reason,
            Event::Usage(usage) => self.usage = Some(Usage::reported(&usage)),
        }
    }

    /// Every choice in order, with the usage; an error if the backend never finished.
    fn finished_choices(mut self) -> Result<(Vec<Whole>, Usage), ApiError> {
        if self.choices.is_empty() {
            self.choices.push(Whole::default());
        }
        if self.choices.iter().any(|c| c.finish_reason.is_empty()) {
            return Err(ApiError::backend_interrupted());
        }
        self.choices.sort_by_key(|c| c.index);
        Ok((self.choices, self.usage.unwrap_or(Usage::new(0, 0))))
    }

    /// The completed response, or an error if the backend never finished.
    pub fn finish(self) -> Result<ChatCompletion, ApiError> {
        let meta = self.meta.clone();
        let (choices, usage) = self.finished_choices()?;
        let choices = choices
            .into_iter()
            .map(|whole| {
                let content = (!whole.content.is_empty() || whole.tool_calls.is_empty())
                    .then_some(whole.content);
                Choice {
                    index: whole.index,
                    message: AssistantMessage {
                        role: "assistant",
                        content,
                        tool_calls: whole.tool_calls.into_iter().map(whole_tool_call).collect(),
                    },
                    finish_reason: whole.finish_reason,
                    logprobs: whole
                        .logprobs
                        .map(|tokens| serde_json::json!({ "content": tokens })),
                }
            })
            .collect();
        Ok(ChatCompletion {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            choices,
            usage,
        })
    }

    /// The first choice's parts and the usage, in no API's shape (the routes with one choice),
    /// or an error if the backend never finished.
    pub fn whole(self) -> Result<(Whole, Usage), ApiError> {
        let (choices, usage) = self.finished_choices()?;
        let first = choices.into_iter().next().unwrap_or_default();
        Ok((first, usage))
    }
}

/// One choice's parts (empty `finish_reason`: not finished).
#[derive(Debug, Default)]
pub struct Whole {
    pub index: u32,
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: String,
    /// The `content` items of the log probabilities, when asked for.
    pub logprobs: Option<Vec<serde_json::Value>>,
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
                ..Default::default()
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
                ..Default::default()
            }))
            .unwrap(),
        );
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        let usage = json(
            &sse.frame(Event::Usage(ProtoUsage {
                prompt_tokens: 3,
                completion_tokens: 2,
                prompt_counted: false,
                cached_tokens: 0,
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
                ..Default::default()
            }))
            .unwrap(),
        );
        assert!(!delta.as_object().unwrap().contains_key("usage"));
        assert!(
            sse.frame(Event::Usage(ProtoUsage {
                prompt_tokens: 1,
                completion_tokens: 1,
                prompt_counted: false,
                cached_tokens: 0,
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
            ..Default::default()
        }));
        aggregate.push(Event::Delta(Delta {
            content: String::new(),
            tool_calls: vec![piece("", "", "1}")],
            ..Default::default()
        }));
        aggregate.push(Event::Finish(Finish {
            reason: "tool_calls".into(),
            ..Default::default()
        }));
        let done = aggregate.finish().unwrap();
        let message = &done.choices[0].message;
        assert_eq!(message.content, None);
        assert_eq!(message.tool_calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(message.tool_calls[0].id, "call_1");
        assert!(Aggregate::new(meta()).finish().is_err());
    }
}
