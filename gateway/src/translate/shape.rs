//! [`StreamShape`]: how one API spells a streamed answer — its frames for events, what opens
//! and ends the stream, how an error after the head is told, and whether it can carry comments
//! (SSE keep-alives while a request waits). The stream body (`routes/stream.rs`) is written
//! once against it.

use bytes::Bytes;
use futures::future::BoxFuture;
use llmgw_proto::v1::chat_event::Event;

use crate::error::ApiError;

pub trait StreamShape: Send + 'static {
    /// The body's media type.
    const CONTENT_TYPE: &'static str;
    /// Whether it has frames clients ignore ([`Self::comment`]), to keep a waiting stream
    /// alive.
    const COMMENTS: bool = true;
    /// Sent just before the first content frame (chat's role chunk), if the shape has one.
    fn opening(&mut self) -> Option<Bytes> {
        None
    }
    /// The frame for one event, if it produces one.
    fn frame(&mut self, event: Event) -> Option<Bytes>;
    /// Work the frame just made must see finished before it is sent (the Responses API's
    /// closing event waits for its stored response to land), if any.
    fn before_sending(&mut self) -> Option<BoxFuture<'static, ()>> {
        None
    }
    /// Whether a finish event was seen (a stream ending before it is an interruption).
    fn finished(&self) -> bool;
    /// The end marker after a finished stream (SSE's `data: [DONE]`).
    fn done(&self) -> Option<Bytes>;
    /// The frame that tells a client the answer failed after its head was sent.
    fn error(&self, error: &ApiError) -> Bytes;
    /// `text` as a frame clients ignore (an SSE comment), if the shape has such frames.
    fn comment(&self, text: &str) -> Option<Bytes>;
}

/// The SSE end marker OpenAI streams close with.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// An SSE comment: ignored by clients, seen as traffic by proxies.
pub fn sse_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// `value` as one SSE data frame.
pub fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut frame = b"data: ".to_vec();
    // Serializing our own plain structs cannot fail; an empty object keeps the frame valid.
    if serde_json::to_writer(&mut frame, value).is_err() {
        frame.extend_from_slice(b"{}");
    }
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}
