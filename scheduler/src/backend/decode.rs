//! The one read loop every backend protocol shares: body chunks → frames (NDJSON lines, SSE
//! events, or a whole bounded body) → protocol chunks → events. Each protocol supplies only
//! how a frame becomes events and what an ended body means.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use llmgw_proto::v1::chat_event::Event;

use super::{BackendError, EventStream, error_chain};
use crate::framing::sse::{SseDecoder, SseEvent};
use crate::framing::{LineDecoder, LineTooLong};

/// Splits a body into frames, each bounded so a backend cannot grow the scheduler's memory.
pub(crate) trait Framer: Send + 'static {
    type Frame: Send;
    /// Frames completed by `chunk`.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Self::Frame>, LineTooLong>;
    /// The frame left open when the body ended, if it counts.
    fn finish(&mut self) -> Option<Self::Frame>;
}

/// Turns one protocol's frames into events.
pub(crate) trait ChunkDecoder: Send + 'static {
    type Frame;
    /// Events for one frame; an error ends the stream.
    fn on_frame(&mut self, frame: Self::Frame) -> Result<Vec<Event>, BackendError>;
    /// Whether the generation finished (nothing more is read).
    fn done(&self) -> bool;
    /// The body ended: the held-back events, or the interruption if it had not finished.
    fn at_end(&mut self) -> Result<Vec<Event>, BackendError>;
}

impl Framer for LineDecoder {
    type Frame = Bytes;
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, LineTooLong> {
        LineDecoder::push(self, chunk)
    }
    fn finish(&mut self) -> Option<Bytes> {
        LineDecoder::finish(self)
    }
}

impl Framer for SseDecoder {
    type Frame = SseEvent;
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        SseDecoder::push(self, chunk)
    }
    fn finish(&mut self) -> Option<SseEvent> {
        // An event still open at the end is discarded, as the SSE spec says.
        None
    }
}

/// A non-streamed answer: the whole body is one frame, read up to a bound.
#[derive(Debug)]
pub(crate) struct WholeBody {
    body: BytesMut,
    max: usize,
}

impl WholeBody {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            body: BytesMut::new(),
            max,
        }
    }
}

impl Framer for WholeBody {
    type Frame = Bytes;
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, LineTooLong> {
        if self.body.len() + chunk.len() > self.max {
            return Err(LineTooLong(self.max));
        }
        self.body.extend_from_slice(chunk);
        Ok(Vec::new())
    }
    fn finish(&mut self) -> Option<Bytes> {
        Some(std::mem::take(&mut self.body).freeze())
    }
}

/// Reads `body` through `framer` and `decoder` into events. A body that breaks is an
/// interruption, an overlong frame a bad response; reading stops once the decoder is done.
pub(crate) fn decode<S, E, F, D>(body: S, mut framer: F, mut decoder: D) -> EventStream
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
    F: Framer,
    D: ChunkDecoder<Frame = F::Frame>,
{
    Box::pin(async_stream::stream! {
        let mut body = std::pin::pin!(body);
        loop {
            let (frames, ended) = match body.next().await {
                Some(Ok(chunk)) => match framer.push(&chunk) {
                    Ok(frames) => (frames, false),
                    Err(err) => {
                        yield Err(BackendError::BadResponse(err.to_string()));
                        return;
                    }
                },
                Some(Err(err)) => {
                    yield Err(BackendError::Interrupted(error_chain(&err)));
                    return;
                }
                None => (framer.finish().into_iter().collect(), true),
            };
            for frame in frames {
                match decoder.on_frame(frame) {
                    Ok(events) => for event in events { yield Ok(event) },
                    Err(err) => {
                        yield Err(err);
                        return;
                    }
                }
                if decoder.done() {
                    return;
                }
            }
            if ended {
                break;
            }
        }
        match decoder.at_end() {
            Ok(events) => for event in events { yield Ok(event) },
            Err(err) => yield Err(err),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_body_is_bounded() {
        let mut whole = WholeBody::new(4);
        assert!(whole.push(b"abc").unwrap().is_empty());
        assert_eq!(whole.push(b"de").unwrap_err(), LineTooLong(4));
        let mut whole = WholeBody::new(4);
        whole.push(b"ab").unwrap();
        whole.push(b"cd").unwrap();
        assert_eq!(whole.finish(), Some(Bytes::from_static(b"abcd")));
    }
}
