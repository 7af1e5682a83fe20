//! Scheduler events → OpenAI's Responses answers: one `response` object, or its typed event
//! stream — `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, for text `response.content_part.added` /
//! `response.output_text.delta` / `response.output_text.done` / `response.content_part.done`,
//! for a function call `response.function_call_arguments.delta` / `.done`, then
//! `response.output_item.done`, and `response.completed` with the whole response and usage.
//! Each event carries its `sequence_number`. A failure after the head is an `error` event.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{Delta, Message, ToolCall, ToolCallDelta};
use serde_json::{Map, Value, json};

use super::response::Whole;
use super::shape::{StreamShape, sse_comment};
use crate::error::ApiError;
use crate::responses_store::{ResponseStore, Stored};

fn hex_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", fastrand::u128(..))
}

/// What every form of one response repeats: its id, time, model and the request's settings.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub previous_response_id: Option<String>,
    pub instructions: Option<String>,
    pub store: bool,
    pub echo: Map<String, Value>,
}

impl ResponseHead {
    pub fn new(
        model: String,
        previous_response_id: Option<String>,
        instructions: Option<String>,
        store: bool,
        echo: Map<String, Value>,
    ) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            id: hex_id("resp"),
            created_at,
            model,
            previous_response_id,
            instructions,
            store,
            echo,
        }
    }

    /// The response object with `status`, `output` and, once known, `usage`.
    pub fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<(u32, u32)>,
        finish: &str,
    ) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "previous_response_id": self.previous_response_id,
            "instructions": self.instructions,
            "store": self.store,
            "parallel_tool_calls": true,
            "metadata": {},
            "error": null,
            "incomplete_details": (status == "incomplete" && finish == "length")
                .then(|| json!({"reason": "max_output_tokens"})),
            "usage": usage.map(|(input, output)| json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + output,
            })),
        });
        if let Some(fields) = object.as_object_mut() {
            fields.extend(self.echo.clone());
        }
        object
    }
}

/// The response's status for the scheduler's finish reason: `incomplete` when the output cap
/// cut it.
pub fn status_of(finish: &str) -> &'static str {
    if finish == "length" {
        "incomplete"
    } else {
        "completed"
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(call: &ToolCallDelta, status: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": hex_id("fc"), "call_id": call.id, "name": call.name,
        "arguments": arguments, "status": status})
}

/// The output items of a gathered answer: its text as a message, then its function calls.
pub fn output_items(answer: &Whole) -> Vec<Value> {
    let text = (!answer.content.is_empty())
        .then(|| message_item(&hex_id("msg"), &answer.content, "completed"));
    text.into_iter()
        .chain(
            answer
                .tool_calls
                .iter()
                .map(|call| call_item(call, "completed", &call.arguments)),
        )
        .collect()
}

/// The assistant turn an answer adds to the conversation.
pub fn assistant_turn(content: &str, calls: &[ToolCallDelta]) -> Message {
    Message {
        role: "assistant".to_owned(),
        content: content.to_owned(),
        tool_calls: calls
            .iter()
            .map(|call| ToolCall {
                id: call.id.clone(),
                r#type: "function".to_owned(),
                name: call.name.clone(),
                arguments_json: call.arguments.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Where a finished response is kept (when the request asked to store it).
#[derive(Debug)]
pub struct Keep {
    pub store: Arc<ResponseStore>,
    pub tenant: String,
    /// The conversation before this response's output.
    pub conversation: Vec<Message>,
}

impl Keep {
    /// Stores `response` with the conversation extended by its output; the future ends when
    /// every gateway can read it ([`ResponseStore::written`]).
    pub fn keep(
        self,
        id: &str,
        response: &Value,
        content: &str,
        calls: &[ToolCallDelta],
    ) -> BoxFuture<'static, ()> {
        let mut conversation = self.conversation;
        conversation.push(assistant_turn(content, calls));
        self.store.put(
            id.to_owned(),
            Stored {
                tenant: self.tenant,
                conversation,
                response: response.clone(),
            },
        );
        let (store, id) = (self.store, id.to_owned());
        Box::pin(async move { store.written(&id).await })
    }
}

/// The streamed answer's events.
#[derive(Debug)]
pub struct ResponsesStream {
    head: ResponseHead,
    sequence: u64,
    message_id: Option<String>,
    text: String,
    tool_calls: Vec<ToolCallDelta>,
    output: Vec<Value>,
    finish: Option<String>,
    closed: bool,
    keep: Option<Keep>,
    /// The stored response's write, which the closing event waits for.
    landing: Option<Landing>,
}

/// A stored response's write on its way.
struct Landing(BoxFuture<'static, ()>);

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Landing")
    }
}

impl ResponsesStream {
    pub fn new(head: ResponseHead, keep: Option<Keep>) -> Self {
        Self {
            head,
            sequence: 0,
            message_id: None,
            text: String::new(),
            tool_calls: Vec::new(),
            output: Vec::new(),
            finish: None,
            closed: false,
            keep,
            landing: None,
        }
    }

    fn event(&mut self, mut data: Value) -> Vec<u8> {
        let kind = data["type"].as_str().unwrap_or("").to_owned();
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        format!("event: {kind}\ndata: {data}\n\n").into_bytes()
    }

    fn complete(&mut self, usage: Option<(u32, u32)>) -> Bytes {
        self.closed = true;
        let finish = self.finish.clone().unwrap_or_default();
        let response = self
            .head
            .object(status_of(&finish), &self.output, usage, &finish);
        if let Some(keep) = self.keep.take() {
            let calls = std::mem::take(&mut self.tool_calls);
            self.landing = Some(Landing(keep.keep(
                &self.head.id,
                &response,
                &self.text,
                &calls,
            )));
        }
        let kind = if status_of(&finish) == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        Bytes::from(self.event(json!({"type": kind, "response": response})))
    }
}

impl StreamShape for ResponsesStream {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn opening(&mut self) -> Option<Bytes> {
        let response = self.head.object("in_progress", &[], None, "");
        let mut opening =
            self.event(json!({"type": "response.created", "response": response.clone()}));
        opening.extend(self.event(json!({"type": "response.in_progress", "response": response})));
        Some(Bytes::from(opening))
    }

    fn frame(&mut self, event: Event) -> Option<Bytes> {
        match event {
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
                let item_id = match &self.message_id {
                    Some(id) => id.clone(),
                    None => {
                        let id = hex_id("msg");
                        self.message_id = Some(id.clone());
                        let mut item = message_item(&id, "", "in_progress");
                        item["content"] = json!([]);
                        frames.extend(self.event(json!({"type": "response.output_item.added",
                            "output_index": 0, "item": item})));
                        frames.extend(self.event(json!({"type": "response.content_part.added",
                            "item_id": id, "output_index": 0, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": []}})));
                        id
                    }
                };
                self.text.push_str(&content);
                frames.extend(self.event(json!({"type": "response.output_text.delta",
                    "item_id": item_id, "output_index": 0, "content_index": 0, "delta": content})));
                Some(Bytes::from(frames))
            }
            Event::Finish(finish) => {
                self.finish = Some(finish.reason);
                let mut frames = Vec::new();
                if let Some(id) = self.message_id.clone() {
                    let text = self.text.clone();
                    frames.extend(self.event(json!({"type": "response.output_text.done",
                        "item_id": id, "output_index": 0, "content_index": 0, "text": text})));
                    frames.extend(self.event(json!({"type": "response.content_part.done",
                        "item_id": id, "output_index": 0, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}})));
                    let item = message_item(&id, &text, "completed");
                    frames.extend(self.event(json!({"type": "response.output_item.done",
                        "output_index": 0, "item": item})));
                    self.output.push(item);
                }
                for call in self.tool_calls.clone() {
                    let index = self.output.len();
                    let mut item = call_item(&call, "in_progress", "");
                    let item_id = item["id"].clone();
                    frames.extend(self.event(json!({"type": "response.output_item.added",
                        "output_index": index, "item": item})));
                    frames.extend(
                        self.event(json!({"type": "response.function_call_arguments.delta",
                        "item_id": item_id, "output_index": index, "delta": call.arguments})),
                    );
                    frames.extend(
                        self.event(json!({"type": "response.function_call_arguments.done",
                        "item_id": item_id, "output_index": index, "arguments": call.arguments})),
                    );
                    item["status"] = json!("completed");
                    item["arguments"] = json!(call.arguments);
                    frames.extend(self.event(json!({"type": "response.output_item.done",
                        "output_index": index, "item": item})));
                    self.output.push(item);
                }
                (!frames.is_empty()).then(|| Bytes::from(frames))
            }
            Event::Usage(usage) => {
                Some(self.complete(Some((usage.prompt_tokens, usage.completion_tokens))))
            }
            Event::Queued(_) | Event::Started(_) | Event::Dispatched(_) | Event::Embeddings(_) => {
                None
            }
        }
    }

    fn before_sending(&mut self) -> Option<BoxFuture<'static, ()>> {
        self.landing.take().map(|Landing(write)| write)
    }

    fn finished(&self) -> bool {
        self.finish.is_some()
    }

    fn done(&self) -> Option<Bytes> {
        // The closing event went out with the usage; without usage the response still ends.
        (!self.closed).then(|| {
            let finish = self.finish.clone().unwrap_or_default();
            let response = self
                .head
                .object(status_of(&finish), &self.output, None, &finish);
            let data = json!({"type": "response.completed", "response": response,
                "sequence_number": self.sequence});
            Bytes::from(format!("event: response.completed\ndata: {data}\n\n"))
        })
    }

    fn error(&self, error: &ApiError) -> Bytes {
        let envelope = error.envelope().error;
        let data = json!({"type": "error", "code": envelope.code, "message": envelope.message,
            "param": envelope.param, "sequence_number": self.sequence});
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }

    fn comment(&self, text: &str) -> Option<Bytes> {
        Some(sse_comment(text))
    }
}
