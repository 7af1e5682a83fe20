//! Scheduler events → Anthropic's Messages answers: one `message` object, or its SSE event
//! sequence — `message_start`, `ping`, per content block `content_block_start` /
//! `content_block_delta` (`text_delta`, `input_json_delta`) / `content_block_stop`, then
//! `message_delta` (stop reason and usage) and `message_stop`; a failure after the head is an
//! `error` event. Tool calls go out as `tool_use` blocks when the generation finishes (their
//! pieces are merged first, as for Ollama).

use bytes::Bytes;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{Delta, ToolCallDelta};
use serde_json::{Value, json};

use super::response::Whole;
use super::shape::{StreamShape, sse_comment};
use crate::error::ApiError;

/// A fresh `msg_…` id.
pub fn message_id() -> String {
    format!("msg_{:024x}", fastrand::u128(..) >> 32)
}

/// Anthropic's stop reason for the scheduler's finish reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ => "end_turn",
    }
}

/// A `tool_use` block for a merged call (its arguments parsed; `{}` when the model wrote none).
fn tool_use(call: &ToolCallDelta) -> Value {
    let input = serde_json::from_str::<Value>(&call.arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

/// The whole answer.
pub fn whole(id: &str, model: &str, answer: &Whole, (input, output): (u32, u32)) -> Value {
    let text =
        (!answer.content.is_empty()).then(|| json!({"type": "text", "text": answer.content}));
    let content: Vec<Value> = text
        .into_iter()
        .chain(answer.tool_calls.iter().map(tool_use))
        .collect();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(&answer.finish_reason),
        "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output},
    })
}

/// The streamed answer's events.
#[derive(Debug)]
pub struct MessagesStream {
    id: String,
    model: String,
    /// The index of the text block while it is open.
    text_block: Option<usize>,
    next_block: usize,
    tool_calls: Vec<ToolCallDelta>,
    stop_reason: Option<&'static str>,
    closed: bool,
}

impl MessagesStream {
    pub fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            text_block: None,
            next_block: 0,
            tool_calls: Vec::new(),
            stop_reason: None,
            closed: false,
        }
    }

    fn end(&mut self, usage: Value) -> Bytes {
        self.closed = true;
        let mut frames = event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        );
        frames.extend(event("message_stop", &json!({"type": "message_stop"})));
        Bytes::from(frames)
    }
}

/// One SSE event: its name and its data.
fn event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

impl StreamShape for MessagesStream {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn opening(&mut self) -> Option<Bytes> {
        let mut frames = event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
        frames.extend(event("ping", &json!({"type": "ping"})));
        Some(Bytes::from(frames))
    }

    fn frame(&mut self, event_in: Event) -> Option<Bytes> {
        match event_in {
            Event::Delta(Delta {
                content,
                tool_calls,
                ..
            }) => {
                for piece in tool_calls {
                    llmgw_proto::merge_tool_call(&mut self.tool_calls, piece);
                }
                if content.is_empty() {
                    return None;
                }
                let mut frames = Vec::new();
                let index = match self.text_block {
                    Some(index) => index,
                    None => {
                        let index = self.next_block;
                        self.next_block += 1;
                        self.text_block = Some(index);
                        frames.extend(event(
                            "content_block_start",
                            &json!({"type": "content_block_start", "index": index,
                                "content_block": {"type": "text", "text": ""}}),
                        ));
                        index
                    }
                };
                frames.extend(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": content}}),
                ));
                Some(Bytes::from(frames))
            }
            Event::Finish(finish) => {
                self.stop_reason = Some(stop_reason(&finish.reason));
                let mut frames = Vec::new();
                if let Some(index) = self.text_block.take() {
                    frames.extend(event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": index}),
                    ));
                }
                for call in std::mem::take(&mut self.tool_calls) {
                    let index = self.next_block;
                    self.next_block += 1;
                    let mut start = tool_use(&call);
                    let input = std::mem::replace(&mut start["input"], json!({}));
                    frames.extend(event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": start}),
                    ));
                    frames.extend(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                    ));
                    frames.extend(event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": index}),
                    ));
                }
                (!frames.is_empty()).then(|| Bytes::from(frames))
            }
            Event::Usage(usage) => Some(self.end(json!({
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            }))),
            Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Embeddings(_) => {
                None
            }
        }
    }

    fn finished(&self) -> bool {
        self.stop_reason.is_some()
    }

    fn done(&self) -> Option<Bytes> {
        // The closing events went out with the usage; a scheduler that sent none still ends
        // the message.
        (!self.closed).then(|| {
            let mut closing = Self::new(self.id.clone(), self.model.clone());
            closing.stop_reason = self.stop_reason;
            closing.end(json!({"output_tokens": 0}))
        })
    }

    fn error(&self, error: &ApiError) -> Bytes {
        Bytes::from(event(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": error.envelope().error.message}}),
        ))
    }

    fn comment(&self, text: &str) -> Option<Bytes> {
        Some(sse_comment(text))
    }
}

#[cfg(test)]
mod tests {
    use llmgw_proto::v1::{Finish, Usage};

    use super::*;

    fn names(bytes: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(|line| line.strip_prefix("event: ").map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_streamed_answer_is_anthropics_event_sequence() {
        let mut stream = MessagesStream::new("msg_1".into(), "m".into());
        let mut all = stream.opening().unwrap().to_vec();
        for piece in ["Hel", "lo"] {
            all.extend(
                stream
                    .frame(Event::Delta(Delta {
                        content: piece.into(),
                        ..Default::default()
                    }))
                    .unwrap(),
            );
        }
        assert!(
            stream
                .frame(Event::Delta(Delta {
                    tool_calls: vec![ToolCallDelta {
                        index: 0,
                        id: "toolu_1".into(),
                        r#type: "function".into(),
                        name: "f".into(),
                        arguments: r#"{"a":1}"#.into(),
                    }],
                    ..Default::default()
                }))
                .is_none()
        );
        all.extend(
            stream
                .frame(Event::Finish(Finish {
                    reason: "tool_calls".into(),
                    choice: 0,
                }))
                .unwrap(),
        );
        all.extend(
            stream
                .frame(Event::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    ..Default::default()
                }))
                .unwrap(),
        );
        assert!(stream.done().is_none());
        assert_eq!(
            names(&all),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");
        assert!(text.contains(r#""partial_json":"{\"a\":1}""#), "{text}");
    }
}
