//! The `llmgw.scheduler.v1.Scheduler` service: validates a Chat call, admits it, and streams
//! the backend's generation as events. The slot permit lives inside the returned stream, so
//! it is released when the stream ends, fails, or is dropped because the caller went away.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use llmgw_proto::v1::scheduler_server::Scheduler;
use llmgw_proto::v1::{
    ChatEvent, ChatRequest, ListModelsRequest, ListModelsResponse, Model, Priority, Queued,
    Started, chat_event::Event,
};
use prost::Message as _;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::admission::{Ask, Class, Entry};
use crate::error::SchedulerError;
use crate::pool::{Pool, Pools};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SchedulerService {
    pools: Pools,
}

impl SchedulerService {
    pub fn new(pools: Pools) -> Self {
        Self { pools }
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, Status>> + Send>>;

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Checks what the scheduler itself relies on; the gateway validates the OpenAI shape first,
/// but direct gRPC callers (grpcurl, other services) get the same clear messages.
fn validate(request: &ChatRequest) -> Result<(), SchedulerError> {
    let invalid = |message: String| Err(SchedulerError::InvalidArgument(message));
    if request.model.trim().is_empty() {
        return invalid("`model` must not be empty".to_owned());
    }
    if request.messages.is_empty() {
        return invalid("`messages` must not be empty".to_owned());
    }
    for (index, message) in request.messages.iter().enumerate() {
        if !ROLES.contains(&message.role.as_str()) {
            return invalid(format!(
                "`messages[{index}].role` must be one of system, user, assistant, tool; got `{}`",
                message.role
            ));
        }
    }
    if Priority::try_from(request.priority).is_err() {
        return invalid(format!(
            "`priority` {} is not a known priority",
            request.priority
        ));
    }
    if !request.extra_json.is_empty()
        && !serde_json::from_str::<serde_json::Value>(&request.extra_json)
            .is_ok_and(|v| v.is_object())
    {
        return invalid("`extra_json` must be a JSON object".to_owned());
    }
    Ok(())
}

/// Tenant used when the caller names none.
pub const ANONYMOUS: &str = "anonymous";

/// What admission needs to know about a request.
fn ask_of(request: &ChatRequest) -> Ask {
    let tenant = if request.tenant.is_empty() {
        ANONYMOUS
    } else {
        request.tenant.as_str()
    };
    let class = match Priority::try_from(request.priority) {
        Ok(Priority::Critical) => Class::Critical,
        Ok(Priority::Batch) => Class::Batch,
        Ok(Priority::Interactive | Priority::Unspecified) | Err(_) => Class::Interactive,
    };
    Ask {
        tenant: tenant.into(),
        class,
        bytes: request.encoded_len(),
    }
}

fn priority_of(class: Class) -> Priority {
    match class {
        Class::Critical => Priority::Critical,
        Class::Interactive => Priority::Interactive,
        Class::Batch => Priority::Batch,
    }
}

fn event(event: Event) -> ChatEvent {
    ChatEvent { event: Some(event) }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type ChatStream = ChatStream;

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatStream>, Status> {
        let received = Instant::now();
        let request = request.into_inner();
        let span = tracing::info_span!(
            "scheduler_chat",
            request_id = %request.request_id,
            model = %request.model,
            tenant = %request.tenant,
            stream = request.stream,
        );
        let refuse = |err: SchedulerError| {
            span.in_scope(|| tracing::info!(reason = err.reason(), error = %err, "chat refused"));
            Status::from(err)
        };
        validate(&request).map_err(refuse)?;
        let pool = self.pools.for_model(&request.model).clone();
        let ask = ask_of(&request);
        let entry = pool.admission.enter(ask.clone()).map_err(refuse)?;
        let deadline = (request.deadline_ms > 0)
            .then(|| received + Duration::from_millis(request.deadline_ms));
        let stream = generation(pool, request, ask, entry, deadline, span);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let mut models = Vec::new();
        for pool in self.pools.all() {
            let names = pool.backend.list_models().await.map_err(|err| {
                tracing::warn!(backend = pool.backend.name(), error = %err, "list models failed");
                Status::from(SchedulerError::from(err))
            })?;
            models.extend(names.into_iter().map(|id| Model {
                id,
                owned_by: "llm-gateway".to_owned(),
                created: 0,
            }));
        }
        Ok(Response::new(ListModelsResponse { models }))
    }
}

/// Runs `future` unless `deadline` passes first.
async fn before<T>(
    deadline: Option<Instant>,
    budget_ms: u64,
    future: impl Future<Output = T>,
) -> Result<T, SchedulerError> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| SchedulerError::DeadlineExceeded(budget_ms)),
        None => Ok(future.await),
    }
}

/// The event stream of one admitted (or queued) request.
fn generation(
    pool: Pool,
    request: ChatRequest,
    ask: Ask,
    entry: Entry,
    deadline: Option<Instant>,
    span: tracing::Span,
) -> impl Stream<Item = Result<ChatEvent, Status>> + Send {
    let budget = request.deadline_ms;
    async_stream::stream! {
        let failed = |err: SchedulerError| {
            tracing::warn!(parent: &span, reason = err.reason(), error = %err, "chat failed");
            Status::from(err)
        };
        let permit = match entry {
            Entry::Admitted(permit) => permit,
            Entry::Waiting(ticket) => {
                yield Ok(event(Event::Queued(Queued {
                    position: ticket.position() as u32,
                    pool: pool.admission.pool().to_owned(),
                    priority: priority_of(ask.class) as i32,
                    tenant: ask.tenant.to_string(),
                })));
                match before(deadline, budget, ticket.wait()).await.and_then(|r| r) {
                    Ok(permit) => permit,
                    Err(err) => {
                        yield Err(failed(err));
                        return;
                    }
                }
            }
        };
        let model = request.model.clone();
        let events = match before(deadline, budget, pool.backend.chat(request)).await {
            Ok(Ok(events)) => events,
            Ok(Err(err)) => {
                yield Err(failed(err.into()));
                return;
            }
            Err(err) => {
                yield Err(failed(err));
                return;
            }
        };
        let queue_ms = permit.queued().as_millis() as u64;
        yield Ok(event(Event::Started(Started {
            backend: pool.backend.name().to_owned(),
            queue_ms,
            pool: pool.admission.pool().to_owned(),
            model,
            priority: priority_of(ask.class) as i32,
            tenant: ask.tenant.to_string(),
        })));
        let mut events = std::pin::pin!(events);
        let mut completion_tokens = 0;
        loop {
            match before(deadline, budget, events.next()).await {
                Ok(Some(Ok(next))) => {
                    if let Event::Usage(usage) = &next {
                        completion_tokens = usage.completion_tokens;
                    }
                    yield Ok(event(next));
                }
                Ok(Some(Err(err))) => {
                    yield Err(failed(err.into()));
                    return;
                }
                Ok(None) => break,
                Err(err) => {
                    yield Err(failed(err));
                    return;
                }
            }
        }
        drop(permit);
        tracing::info!(parent: &span, queue_ms, completion_tokens, "chat finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::Message;

    fn request(role: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: role.into(),
                content: "hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&request("user")).is_ok());
        let err = validate(&request("robot")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`messages[0].role` must be one of system, user, assistant, tool; got `robot`"
        );
        let empty = ChatRequest {
            messages: vec![],
            ..request("user")
        };
        assert_eq!(
            validate(&empty).unwrap_err().to_string(),
            "`messages` must not be empty"
        );
        let bad_priority = ChatRequest {
            priority: 42,
            ..request("user")
        };
        assert!(
            validate(&bad_priority)
                .unwrap_err()
                .to_string()
                .contains("`priority`")
        );
    }
}
