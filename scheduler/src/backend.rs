//! Backends sit behind one small object-safe trait; one file per wire protocol.

mod decode;
mod embed;
pub mod engine_load;
pub mod ollama;
mod ollama_wire;
pub mod openai;
mod openai_wire;
mod resend;
mod tools;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use llmgw_proto::v1::chat_event;
use tonic::Code;

use crate::work::Work;

/// A backend's answer: content deltas (or one `embeddings` event), then one finish and one
/// usage event.
pub type EventStream = BoxStream<'static, Result<chat_event::Event, BackendError>>;

/// Asked once more just before a request is written, after everything that can take time is
/// done: a scheduler paused past its lease (a standby leads now) must not start a generation
/// on resuming, so the last check sits as close to the write as it can.
pub type SendGate = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// What every backend protocol provides.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A label for logs and the `started` event, e.g. `ollama@http://host:11434`.
    fn name(&self) -> &str;
    /// Starts a chat, a text completion or an embedding call. Resolves once the backend
    /// accepted the request (response head received); dropping the returned stream closes the
    /// upstream request. `trace` holds the W3C trace-context headers to send, so engines can
    /// continue the trace. Nothing is sent (`NotSent`) if `gate` says no just before the write.
    fn call(
        &self,
        work: Work,
        trace: http::HeaderMap,
        gate: SendGate,
    ) -> BoxFuture<'static, Result<EventStream, BackendError>>;
    /// `gen_ai.provider.name` of this protocol.
    fn provider(&self) -> &'static str;
    /// Model names the backend serves.
    fn list_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>>;
    /// Cheap liveness probe: by default, listing models.
    fn probe(&self) -> BoxFuture<'static, Result<(), BackendError>> {
        let models = self.list_models();
        Box::pin(async move { models.await.map(|_| ()) })
    }
    /// The engine's own report of its batch (see [`engine_load`]); `None` when it reports
    /// nothing we read (Ollama).
    fn engine_load(
        &self,
    ) -> BoxFuture<'static, Result<Option<engine_load::EngineLoad>, BackendError>> {
        Box::pin(async { Ok(None) })
    }
    /// Models loaded in memory now (Ollama's `/api/ps`), to prefer endpoints that need no swap.
    /// Engines that serve only what they loaded answer with their model list.
    fn loaded_models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        self.list_models()
    }
}

/// How long an idle pooled connection to an engine is kept: below the 5 s after which
/// llama.cpp's server (cpp-httplib), uvicorn (vLLM, llama-cpp-python, SGLang) and Node close
/// an idle keep-alive connection, so we never send a request on a connection the engine is
/// closing at that moment ("connection closed before message completed", seen against
/// llama-server with 30 s).
pub(crate) const ENGINE_POOL_IDLE: Duration = Duration::from_secs(4);

/// The HTTP client every backend uses: no Nagle (token lines are tiny), bounded connect time.
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(ENGINE_POOL_IDLE)
        .build()
        .map_err(|err| BackendError::Unreachable(format!("cannot build HTTP client: {err}")))
}

/// The most of an error body read (the message is quoted truncated anyway): a backend cannot
/// make the scheduler buffer an arbitrarily large error page.
const ERROR_BODY_BYTES: usize = 64 << 10;

/// Reads at most [`ERROR_BODY_BYTES`] of a non-200 answer's body, as text.
pub(crate) async fn error_body(response: reqwest::Response) -> String {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A failed send: nothing usable came back.
pub(crate) fn transport_error(err: reqwest::Error) -> BackendError {
    BackendError::Unreachable(error_chain(&err))
}

/// An error and its causes on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A non-200 answer, classified. Bodies are `{"error": "..."}` (Ollama) or
/// `{"error": {"message": "..."}}` (OpenAI); anything else is quoted, truncated.
/// The longest `Retry-After` passed on from a backend: a misconfigured engine cannot tell
/// clients to go away for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A backend's `Retry-After` in seconds (the HTTP-date form is not used by engines; ignored).
pub(crate) fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The error for a non-200 answer; `retry_after` is the backend's own hint on a 429/503.
pub(crate) fn status_error(
    status: u16,
    body: &str,
    model: &str,
    retry_after: Option<Duration>,
) -> BackendError {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| {
            e.as_str()
                .map(str::to_owned)
                .or_else(|| e.get("message")?.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    match status {
        404 => BackendError::ModelNotFound(model.to_owned()),
        400 | 422 => BackendError::Rejected(message),
        429 | 503 => BackendError::Overloaded {
            status,
            retry_after,
        },
        _ => BackendError::Status { status, message },
    }
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
    #[error("backend overloaded (HTTP {status})")]
    Overloaded {
        status: u16,
        /// The backend's `Retry-After`, passed on to the client when no endpoint could serve.
        retry_after: Option<Duration>,
    },
    /// The backend answered with another error status.
    #[error("backend error (HTTP {status}): {message}")]
    Status { status: u16, message: String },
    /// The backend sent bytes that are not its protocol.
    #[error("backend sent an invalid response: {0}")]
    BadResponse(String),
    /// The stream ended or broke before the generation finished.
    #[error("backend stream interrupted: {0}")]
    Interrupted(String),
    /// The send gate said no: nothing was sent (this scheduler no longer holds its lease).
    #[error("not sent: this scheduler no longer holds the lease")]
    NotSent,
}

impl BackendError {
    /// gRPC code for this failure.
    pub fn code(&self) -> Code {
        match self {
            Self::Unreachable(_) | Self::Overloaded { .. } | Self::NotSent => Code::Unavailable,
            Self::ModelNotFound(_) => Code::NotFound,
            Self::Rejected(_) => Code::InvalidArgument,
            // UNKNOWN is our "bad gateway": the backend's answer was wrong, not ours.
            Self::Status { .. } | Self::BadResponse(_) | Self::Interrupted(_) => Code::Unknown,
        }
    }

    /// Whether another endpoint might do better (before the first token). A request the
    /// backend rejected as malformed would be rejected anywhere.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::Rejected(_) | Self::NotSent)
    }

    /// Whether this counts against the endpoint's health (breaker).
    pub fn is_endpoint_fault(&self) -> bool {
        !matches!(
            self,
            Self::Rejected(_) | Self::ModelNotFound(_) | Self::NotSent
        )
    }

    /// Stable reason.
    pub fn reason(&self) -> llmgw_proto::Reason {
        use llmgw_proto::Reason;
        match self {
            Self::Unreachable(_) => Reason::BackendUnavailable,
            Self::ModelNotFound(_) => Reason::ModelNotFound,
            Self::Rejected(_) => Reason::BackendRejected,
            Self::Overloaded { .. } => Reason::BackendOverloaded,
            Self::Status { .. } => Reason::BackendError,
            Self::BadResponse(_) => Reason::BackendBadResponse,
            Self::Interrupted(_) => Reason::BackendInterrupted,
            Self::NotSent => Reason::NotLeader,
        }
    }
}

/// Prompt tokens counted the same way for every protocol when the engine reports none (Ollama
/// omits `prompt_eval_count` when the prompt was cached; some OpenAI-compatible engines send no
/// usage): the whitespace-separated words of the messages, prompt or inputs.
pub(crate) fn prompt_words(work: &Work) -> u32 {
    let words = |text: &str| text.split_whitespace().count();
    let count: usize = match work {
        Work::Chat(chat) => chat.messages.iter().map(|m| words(&m.content)).sum(),
        Work::Completion(completion) => words(&completion.prompt),
        Work::Embedding(embed) => embed.input.iter().map(|input| words(input)).sum(),
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Sends `call` unless `gate` closed just before the write (again before each resend of a
/// request a pooled connection dropped unanswered, see [`resend`]); a non-200 answer becomes
/// its classified error (`model` names the model in a 404).
pub(crate) async fn send(
    mut call: reqwest::RequestBuilder,
    gate: &SendGate,
    model: &str,
) -> Result<reqwest::Response, BackendError> {
    let mut resends = 0;
    let response = loop {
        if !gate() {
            return Err(BackendError::NotSent);
        }
        let spare = call.try_clone();
        match call.send().await {
            Ok(response) => break response,
            Err(err) if resends < resend::RESENDS && resend::closed_unanswered(&err) => {
                let Some(again) = spare else {
                    return Err(transport_error(err));
                };
                tracing::debug!(error = %error_chain(&err), "engine closed a pooled connection unanswered; sending again");
                resends += 1;
                call = again;
            }
            Err(err) => return Err(transport_error(err)),
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        let retry_after = retry_after_of(response.headers());
        let text = error_body(response).await;
        return Err(status_error(status, &text, model, retry_after));
    }
    Ok(response)
}

/// GETs `request` and decodes its JSON body; `what` names the endpoint in errors.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, BackendError> {
    let always: SendGate = std::sync::Arc::new(|| true);
    let response = send(request, &always, "").await?;
    json_body(response, what).await
}

/// The most of a listing (`/api/tags`, `/v1/models`, `/api/ps`) read: an engine cannot make
/// the scheduler buffer an endless body.
const LISTING_BYTES: usize = 4 << 20;

/// The body of a `GET` that answered 200, at most [`LISTING_BYTES`]; `None` for any other
/// status (an engine without that endpoint).
pub(crate) async fn get_text(
    request: reqwest::RequestBuilder,
) -> Result<Option<String>, BackendError> {
    use futures::StreamExt;
    let response = request.send().await.map_err(transport_error)?;
    if response.status() != reqwest::StatusCode::OK {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(transport_error)?;
        if body.len() + chunk.len() > LISTING_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

/// Reads a JSON answer of at most [`LISTING_BYTES`]; `what` names the endpoint in errors.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, BackendError> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(transport_error)?;
        if body.len() + chunk.len() > LISTING_BYTES {
            return Err(BackendError::BadResponse(format!(
                "{what}: answer longer than {LISTING_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|err| BackendError::BadResponse(format!("{what}: {err}")))
}

/// Sampling parameters over the request's extra engine options (those `protocol` takes), as
/// one JSON object; the protocols differ in the name of the output-length limit.
pub(crate) fn sampling_options(
    sampling: Option<llmgw_proto::v1::SamplingParams>,
    extra_json: &str,
    protocol: llmgw_proto::engine_options::EngineProtocol,
) -> serde_json::Map<String, serde_json::Value> {
    use llmgw_proto::engine_options::{EngineProtocol, passes};
    use serde_json::Value;
    let max_tokens_key = match protocol {
        EngineProtocol::Ollama => "num_predict",
        EngineProtocol::OpenAi => "max_tokens",
    };
    let mut options: serde_json::Map<String, Value> =
        serde_json::from_str(extra_json).unwrap_or_default();
    options.retain(|name, _| passes(protocol, name));
    if let Some(s) = sampling {
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                options.insert(key.to_owned(), value);
            }
        };
        put("temperature", s.temperature.map(Value::from));
        put("top_p", s.top_p.map(Value::from));
        put(max_tokens_key, s.max_tokens.map(Value::from));
        put("seed", s.seed.map(Value::from));
        put("presence_penalty", s.presence_penalty.map(Value::from));
        put("frequency_penalty", s.frequency_penalty.map(Value::from));
        put("stop", (!s.stop.is_empty()).then(|| Value::from(s.stop)));
    }
    options
}
