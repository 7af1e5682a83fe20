//! The `llmgw.scheduler.v1.Scheduler` service: validates a Chat, Complete or Embed call, admits
//! it, and streams the backend's answer as events (the same pipeline for all three). The slot permit lives inside the returned stream, so
//! it is released when the stream ends, fails, or is dropped because the caller went away.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use llmgw_proto::v1::scheduler_server::Scheduler;
use llmgw_proto::v1::{
    ChatEvent, ChatRequest, CompletionRequest, EmbedRequest, ListModelsRequest, ListModelsResponse,
    Model, StatusRequest, StatusResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::error::SchedulerError;
use crate::generation::admit::{Door, admit, first_token_limit};
use crate::generation::context::Context;
use crate::generation::{self, Job};
use crate::lease::Lease;
use crate::topology::Topologies;
use crate::validated::{Validated, validate};
use crate::work::Work;
use llmgw_telemetry::propagation;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SchedulerService {
    topologies: Arc<Topologies>,
    lease: Arc<Lease>,
    started: Instant,
}

impl SchedulerService {
    pub fn new(topologies: Arc<Topologies>, lease: Arc<Lease>) -> Self {
        Self {
            topologies,
            lease,
            started: Instant::now(),
        }
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type ChatStream = ChatStream;
    type CompleteStream = ChatStream;
    type EmbedStream = ChatStream;

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatStream>, Status> {
        let incoming = propagation::extract_grpc(request.metadata());
        self.serve(Work::Chat(request.into_inner()), incoming)
    }

    async fn complete(
        &self,
        request: Request<CompletionRequest>,
    ) -> Result<Response<ChatStream>, Status> {
        let incoming = propagation::extract_grpc(request.metadata());
        self.serve(Work::Completion(request.into_inner()), incoming)
    }

    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<ChatStream>, Status> {
        let incoming = propagation::extract_grpc(request.metadata());
        self.serve(Work::Embedding(request.into_inner()), incoming)
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

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let topology = self.topologies.current();
        Ok(Response::new(crate::status::snapshot(
            &topology,
            &self.lease,
            self.started.elapsed(),
        )))
    }
}

impl SchedulerService {
    /// Validates, routes and admits one call, then streams its events.
    fn serve(
        &self,
        request: Work,
        incoming: llmgw_telemetry::TraceContext,
    ) -> Result<Response<ChatStream>, Status> {
        let received = Instant::now();
        let common = request.common();
        // The caller's trace context becomes the parent before the span is ever entered.
        let span = tracing::info_span!(
            "scheduler_request",
            otel.name = format!("llmgw.scheduler.v1.Scheduler/{}", request.method()),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            "rpc.system" = "grpc",
            "rpc.service" = "llmgw.scheduler.v1.Scheduler",
            "rpc.method" = request.method(),
            "rpc.grpc.status_code" = tracing::field::Empty,
            request_id = %common.request_id,
            model = %common.model,
            tenant = %common.tenant,
            stream = request.stream(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            "llmgw.cost.prompt_tokens" = tracing::field::Empty,
            "llmgw.cost.completion_tokens" = tracing::field::Empty,
            "llmgw.slo.ttft_ms" = tracing::field::Empty,
            "llmgw.ttft.predicted_ms" = tracing::field::Empty,
            "llmgw.ttft.actual_ms" = tracing::field::Empty,
        );
        propagation::adopt(&span, incoming.clone());
        let record = |status: Status| {
            span.record("rpc.grpc.status_code", status.code() as i32);
            span.record("otel.status_code", "ERROR");
            status
        };
        let refuse = |err: SchedulerError| {
            span.in_scope(|| {
                // The message may quote what the caller sent (a role, a key name): debug only.
                tracing::info!(reason = err.reason().as_str(), "chat refused");
                tracing::debug!(error = %err, "chat refused: details");
            });
            record(Status::from(err))
        };
        // A standby starts nothing: the gateway retries on the leader it names.
        if !self.lease.is_leader() {
            return Err(refuse(SchedulerError::NotLeader {
                leader: self.lease.leader(),
            }));
        }
        let Validated {
            request,
            mut ask,
            deadline,
        } = validate(request, received).map_err(refuse)?;
        let topology = self.topologies.current();
        ask.slo = ask.slo.or_else(|| topology.objective(ask.class));
        span.record(
            "llmgw.cost.prompt_tokens",
            i64::from(ask.cost.prompt_tokens),
        );
        span.record(
            "llmgw.cost.completion_tokens",
            i64::from(ask.cost.completion_tokens),
        );
        if let Some(slo) = ask.slo {
            span.record("llmgw.slo.ttft_ms", slo.as_millis() as i64);
        }
        let route = topology
            .routes
            .resolve(request.model(), &ask.tenant, fastrand::u64(..))
            .map_err(|unknown| refuse(SchedulerError::UnknownModel(unknown.0)))?;
        let Some(pool) = topology.pool(&route.pool).cloned() else {
            return Err(refuse(SchedulerError::NoHealthyBackend {
                pool: route.pool,
            }));
        };
        if let Some(unsupported) = unsupported_by(&request, &pool) {
            return Err(refuse(unsupported));
        }
        let metrics = Arc::clone(self.topologies.metrics());
        let deadline_ms = request.common().deadline_ms;
        // The one door into a pool; fallbacks into other pools go through it too.
        let limit = first_token_limit(route.timeouts.total, deadline_ms);
        let (route, door) = match admit(&pool, &ask, limit, &metrics, &span) {
            Ok(door) => (route, door),
            Err(
                unattainable @ (SchedulerError::SloUnattainable { .. }
                | SchedulerError::TpotUnattainable { .. }),
            ) => meeting_objective(&topology, &route, &request, &ask, &metrics, &span)
                .ok_or_else(|| record(Status::from(unattainable)))?,
            Err(err) => return Err(record(Status::from(err))),
        };
        let stream = generation::run(Job {
            topology,
            route,
            door,
            request,
            context: Context {
                span,
                incoming,
                metrics,
                ask,
                deadline,
                deadline_ms,
                lease: Arc::clone(&self.lease),
                received,
            },
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The first fallback model, in another pool, whose admission predicts it meets the request's
/// objective: a request refused for its objective goes there instead.
fn meeting_objective(
    topology: &crate::topology::Topology,
    route: &crate::routing::table::Route,
    request: &Work,
    ask: &crate::admission::Ask,
    metrics: &crate::metrics::SchedulerMetrics,
    span: &tracing::Span,
) -> Option<(crate::routing::table::Route, Door)> {
    route.fallbacks.iter().find_map(|name| {
        if !request.allows_model(name) {
            return None;
        }
        let fallback = topology
            .routes
            .resolve(name, &ask.tenant, fastrand::u64(..))
            .ok()?;
        let pool = topology
            .pool(&fallback.pool)
            .filter(|p| p.name != route.pool)?;
        let limit = first_token_limit(fallback.timeouts.total, request.common().deadline_ms);
        let door = admit(pool, ask, limit, metrics, span).ok()?;
        tracing::info!(parent: span, from = %route.model, to = %fallback.model,
            "objective unattainable; a fallback model can meet it");
        Some((fallback, door))
    })
}

/// A chat asking for several choices from an Ollama endpoint, which generates one. Refused
/// before it waits for a slot.
fn unsupported_by(request: &Work, pool: &crate::pool::Pool) -> Option<SchedulerError> {
    let Work::Chat(chat) = request else {
        return None;
    };
    let ollama = pool
        .endpoints
        .iter()
        .any(|endpoint| endpoint.config.kind == crate::routing::config::EndpointKind::Ollama);
    (ollama && chat.n > 1).then(|| {
        SchedulerError::InvalidArgument(format!(
            "`n` is not supported by the Ollama endpoints of pool `{}` (OpenAI-compatible endpoints support it)",
            pool.name
        ))
    })
}
