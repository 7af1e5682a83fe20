//! Backends sit behind one small object-safe trait; one file per wire protocol.

pub mod ollama;
mod ollama_wire;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use llmgw_proto::v1::{ChatRequest, chat_event};
use tonic::Code;

/// A backend's generation: content deltas, then one finish and one usage event.
pub type EventStream = BoxStream<'static, Result<chat_event::Event, BackendError>>;

/// What every backend protocol provides.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A label for logs and the `started` event, e.g. `ollama@http://host:11434`.
    fn name(&self) -> &str;
    /// Starts a generation. Resolves once the backend accepted the request (response head
    /// received); dropping the returned stream closes the upstream request.
    fn chat(&self, request: ChatRequest) -> BoxFuture<'static, Result<EventStream, BackendError>>;
    /// Model names the backend serves.
    fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>>;
    /// Cheap liveness probe.
    fn probe(&self) -> BoxFuture<'static, Result<(), BackendError>>;
}

/// How a backend failed, precise enough to pick the right status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Could not connect, or the connection broke before a response head.
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend does not know the model.
    #[error("model `{0}` not found on the backend")]
    ModelNotFound(String),
    /// The backend refused the request as malformed.
    #[error("backend rejected the request: {0}")]
    Rejected(String),
    /// The backend said it is overloaded or unavailable (429/503).
    #[error("backend overloaded (HTTP {0})")]
    Overloaded(u16),
    /// The backend answered with another error status.
    #[error("backend error (HTTP {status}): {message}")]
    Status { status: u16, message: String },
    /// The backend sent bytes that are not its protocol.
    #[error("backend sent an invalid response: {0}")]
    BadResponse(String),
    /// The stream ended or broke before the generation finished.
    #[error("backend stream interrupted: {0}")]
    Interrupted(String),
}

impl BackendError {
    /// gRPC code for this failure.
    pub fn code(&self) -> Code {
        match self {
            Self::Unreachable(_) | Self::Overloaded(_) => Code::Unavailable,
            Self::ModelNotFound(_) => Code::NotFound,
            Self::Rejected(_) => Code::InvalidArgument,
            // UNKNOWN is our "bad gateway": the backend's answer was wrong, not ours.
            Self::Status { .. } | Self::BadResponse(_) | Self::Interrupted(_) => Code::Unknown,
        }
    }

    /// Stable reason word.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "backend_unavailable",
            Self::ModelNotFound(_) => "model_not_found",
            Self::Rejected(_) => "backend_rejected",
            Self::Overloaded(_) => "backend_overloaded",
            Self::Status { .. } => "backend_error",
            Self::BadResponse(_) => "backend_bad_response",
            Self::Interrupted(_) => "backend_interrupted",
        }
    }
}
