//! An embeddings answer (one JSON body, either protocol) as events: `embeddings`, then
//! `finish`, then `usage` with the prompt tokens — the order every call's events keep.

use bytes::Bytes;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{Embeddings, Finish, Usage, Vector};

use super::BackendError;
use super::decode::ChunkDecoder;

/// Reads the vectors and the reported prompt tokens out of one protocol's body.
pub(crate) type ParseBody = fn(&[u8]) -> Result<(Vec<Vec<f32>>, Option<u32>), BackendError>;

/// Decodes one whole embeddings body with `parse`.
pub(crate) struct EmbedDecoder {
    parse: ParseBody,
    /// Used when the engine reports no prompt tokens.
    prompt_words: u32,
    /// How many vectors were asked for: an engine that answers with fewer is wrong.
    inputs: usize,
    done: bool,
}

impl EmbedDecoder {
    pub(crate) fn new(parse: ParseBody, prompt_words: u32, inputs: usize) -> Self {
        Self {
            parse,
            prompt_words,
            inputs,
            done: false,
        }
    }
}

impl ChunkDecoder for EmbedDecoder {
    type Frame = Bytes;

    fn on_frame(&mut self, body: Bytes) -> Result<Vec<Event>, BackendError> {
        let (vectors, prompt_tokens) = (self.parse)(&body)?;
        if vectors.len() != self.inputs {
            return Err(BackendError::BadResponse(format!(
                "{} embeddings for {} inputs",
                vectors.len(),
                self.inputs
            )));
        }
        self.done = true;
        Ok(vec![
            Event::Embeddings(Embeddings {
                vectors: vectors
                    .into_iter()
                    .map(|values| Vector { values })
                    .collect(),
            }),
            Event::Finish(Finish {
                reason: "stop".to_owned(),
                choice: 0,
            }),
            Event::Usage(Usage {
                prompt_tokens: prompt_tokens.unwrap_or(self.prompt_words),
                completion_tokens: 0,
                prompt_counted: prompt_tokens.is_none(),
                cached_tokens: 0,
            }),
        ])
    }

    fn done(&self) -> bool {
        self.done
    }

    fn at_end(&mut self) -> Result<Vec<Event>, BackendError> {
        Err(BackendError::Interrupted(
            "the embeddings answer ended early".to_owned(),
        ))
    }
}
