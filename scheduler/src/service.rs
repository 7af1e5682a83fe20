//! The `llmgw.scheduler.v1.Scheduler` service: validates a Chat call, admits it, and streams
//! the backend's generation as events. The slot permit lives inside the returned stream, so
//! it is released when the stream ends, fails, or is dropped because the caller went away.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use llmgw_proto::v1::scheduler_server::Scheduler;
use llmgw_proto::v1::{
    ChatEvent, ChatRequest, ListModelsRequest, ListModelsResponse, Model, Priority,
};
use prost::Message as _;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::admission::{Ask, Class};
use crate::error::SchedulerError;
use crate::generation::{self, Job};
use crate::topology::Topologies;
use llmgw_telemetry::propagation;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SchedulerService {
    topologies: Arc<Topologies>,
}

impl SchedulerService {
    pub fn new(topologies: Arc<Topologies>) -> Self {
        Self { topologies }
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

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type ChatStream = ChatStream;

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatStream>, Status> {
        let received = Instant::now();
        // The caller's trace context becomes the parent before the span is ever entered.
        let incoming = propagation::extract_grpc(request.metadata());
        let request = request.into_inner();
        let span = tracing::info_span!(
            "scheduler_chat",
            otel.name = "llmgw.scheduler.v1.Scheduler/Chat",
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            "rpc.system" = "grpc",
            "rpc.service" = "llmgw.scheduler.v1.Scheduler",
            "rpc.method" = "Chat",
            "rpc.grpc.status_code" = tracing::field::Empty,
            request_id = %request.request_id,
            model = %request.model,
            tenant = %request.tenant,
            stream = request.stream,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        propagation::adopt(&span, incoming.clone());
        let refuse = |err: SchedulerError| {
            span.in_scope(|| tracing::info!(reason = err.reason(), error = %err, "admission decision: refused"));
            let status = Status::from(err);
            span.record("rpc.grpc.status_code", status.code() as i32);
            span.record("otel.status_code", "ERROR");
            status
        };
        validate(&request).map_err(refuse)?;
        let topology = self.topologies.current();
        let ask = ask_of(&request);
        let route = topology
            .routes
            .resolve(&request.model, &ask.tenant, fastrand::u64(..))
            .map_err(|unknown| refuse(SchedulerError::UnknownModel(unknown.0)))?;
        let Some(pool) = topology.pool(&route.pool).cloned() else {
            return Err(refuse(SchedulerError::NoHealthyBackend {
                pool: route.pool,
            }));
        };
        let metrics = Arc::clone(self.topologies.metrics());
        if pool.capacity() == 0 {
            metrics.admission(&pool.name, ask.class, "no_healthy_backend");
            return Err(refuse(SchedulerError::NoHealthyBackend {
                pool: route.pool,
            }));
        }
        let entry = pool.admission.enter(ask.clone()).map_err(|err| {
            metrics.admission(&pool.name, ask.class, err.reason());
            refuse(err)
        })?;
        let deadline = (request.deadline_ms > 0)
            .then(|| received + Duration::from_millis(request.deadline_ms));
        let stream = generation::run(Job {
            topology,
            route,
            pool,
            request,
            ask,
            entry,
            deadline,
            span,
            incoming,
            metrics,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let topology = self.topologies.current();
        let model = |id: String| Model {
            id,
            owned_by: "llm-gateway".to_owned(),
            created: 0,
        };
        if let Some(public) = topology.routes.public_models() {
            return Ok(Response::new(ListModelsResponse {
                models: public.iter().cloned().map(model).collect(),
            }));
        }
        // No config file: whatever the backends serve.
        let mut last_error = None;
        for endpoint in topology
            .pools
            .values()
            .flat_map(|pool| pool.endpoints.iter())
        {
            match endpoint.backend.list_models().await {
                Ok(names) => {
                    return Ok(Response::new(ListModelsResponse {
                        models: names.into_iter().map(model).collect(),
                    }));
                }
                Err(err) => {
                    tracing::warn!(endpoint = endpoint.name(), error = %err, "list models failed");
                    last_error = Some(err);
                }
            }
        }
        let err = last_error.map_or(
            SchedulerError::NoHealthyBackend {
                pool: "any".to_owned(),
            },
            SchedulerError::from,
        );
        Err(Status::from(err))
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
