//! Opening a scheduler call (Chat, Complete or Embed): pick a scheduler, send the request, and
//! read up to the first content event — moving on to another scheduler (or waiting, bounded,
//! for a new leader) when one fails before the client got any byte. Every route that reaches
//! the scheduler goes through here.

use std::time::Duration;

use futures::{Stream, StreamExt};
use llmgw_proto::Reason;
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatEvent, ChatRequest, CompletionRequest, EmbedRequest, Started};
use llmgw_telemetry::{TraceContext, propagation};
use tokio::time::Instant;
use tonic::Streaming;
use tracing::Instrument;

use crate::error::ApiError;
use crate::governance::reservation::Reservation;
use crate::routes::AppState;
use crate::scheduler_client::Target;

/// One scheduler request, by RPC.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Chat(ChatRequest),
    Complete(CompletionRequest),
    Embed(EmbedRequest),
}

impl From<ChatRequest> for Call {
    fn from(request: ChatRequest) -> Self {
        Self::Chat(request)
    }
}

impl From<CompletionRequest> for Call {
    fn from(request: CompletionRequest) -> Self {
        Self::Complete(request)
    }
}

impl From<EmbedRequest> for Call {
    fn from(request: EmbedRequest) -> Self {
        Self::Embed(request)
    }
}

impl Call {
    /// The scheduler method it calls (the RPC span's name).
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::Chat(_) => "Chat",
            Self::Complete(_) => "Complete",
            Self::Embed(_) => "Embed",
        }
    }

    pub(crate) fn model(&self) -> &str {
        match self {
            Self::Chat(r) => &r.model,
            Self::Complete(r) => &r.model,
            Self::Embed(r) => &r.model,
        }
    }

    fn stream(&self) -> bool {
        match self {
            Self::Chat(r) => r.stream,
            Self::Complete(r) => r.stream,
            Self::Embed(_) => false,
        }
    }

    /// Sends the call with `prepare` applied to its metadata (trace context, token).
    async fn send(
        self,
        target: &Target,
        prepare: impl Fn(&mut tonic::metadata::MetadataMap),
    ) -> Result<tonic::Response<Streaming<ChatEvent>>, tonic::Status> {
        fn request<T>(
            message: T,
            prepare: impl Fn(&mut tonic::metadata::MetadataMap),
        ) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            prepare(request.metadata_mut());
            request
        }
        let mut client = target.scheduler();
        match self {
            Self::Chat(r) => client.chat(request(r, prepare)).await,
            Self::Complete(r) => client.complete(request(r, prepare)).await,
            Self::Embed(r) => client.embed(request(r, prepare)).await,
        }
    }
}

/// The client span of one scheduler call to `method`.
pub(crate) fn rpc_span(method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "scheduler_call",
        otel.name = format!("llmgw.scheduler.v1.Scheduler/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        "rpc.system" = "grpc",
        "rpc.service" = "llmgw.scheduler.v1.Scheduler",
        "rpc.method" = method,
        "rpc.grpc.status_code" = tracing::field::Empty,
    )
}

/// Calls a scheduler with `request` and reads up to its first content event. With
/// `commit_after` (streams) it returns early so the caller can commit the response and keep
/// it alive while the request waits.
pub(crate) async fn open(
    state: &AppState,
    request: Call,
    incoming: &TraceContext,
    rpc_span: &tracing::Span,
    commit_after: Option<Duration>,
    reservation: &mut Option<Reservation>,
) -> Result<(Streaming<ChatEvent>, Opening), ApiError> {
    let model = request.model().to_owned();
    let stream = request.stream();
    // Another scheduler is tried — before the client got any byte — when one is down, stands
    // by (`not_leader`), shuts down, or its connection breaks. The request is cloned only when
    // a retry is possible.
    // With several schedulers, a request every one of them turned away waits (bounded) for a
    // new leader: a failover costs it latency, not an error.
    let several = state.scheduler.targets().len() > 1;
    let failover_until = Instant::now() + Duration::from_millis(state.config.failover_wait_ms);
    let mut excluded: Vec<String> = Vec::new();
    let mut last_failure: Option<tonic::Status> = None;
    let mut pending = Some(request);
    loop {
        let Some(target) = state.scheduler.pick(&model, &excluded) else {
            if several
                && Instant::now() < failover_until
                && last_failure
                    .as_ref()
                    .is_some_and(|f| moves_on(f) == MoveOn::OrWait)
            {
                tokio::time::sleep(FAILOVER_POLL).await;
                excluded.clear();
                continue;
            }
            let failure =
                last_failure.unwrap_or_else(|| tonic::Status::unavailable("no scheduler to call"));
            return Err(record_rpc_failure(rpc_span, failure));
        };
        let Some(this) = pending.take() else {
            let failure =
                last_failure.unwrap_or_else(|| tonic::Status::unavailable("no scheduler to call"));
            return Err(record_rpc_failure(rpc_span, failure));
        };
        if several {
            pending = Some(this.clone());
        }
        let context = propagation::outgoing(rpc_span, incoming);
        let prepare = |metadata: &mut tonic::metadata::MetadataMap| {
            propagation::inject_grpc(&context, metadata);
            state.scheduler.authorize_metadata(metadata);
        };
        // The response head comes as soon as the scheduler admitted or queued the call; a
        // scheduler that does not send it in time (paused, cut off) is skipped like a dead one.
        let head_timeout = state.config.scheduler_connect_timeout() + SCHEDULER_HEAD_GRACE;
        let called = tokio::time::timeout(
            head_timeout,
            this.send(&target, prepare).instrument(rpc_span.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(
                "the scheduler did not answer in time",
            ))
        });
        let outcome = match called {
            Ok(response) => {
                let mut events = response.into_inner();
                match Opening::read(&mut events, commit_after, stream, reservation).await {
                    Ok(opening) => Ok((events, opening)),
                    Err(ApiError::Scheduler(status)) => Err(status),
                    Err(other) => return Err(other),
                }
            }
            Err(status) => Err(status),
        };
        match outcome {
            Ok(opened) => return Ok(opened),
            Err(status) if pending.is_some() && moves_on(&status) != MoveOn::No => {
                tracing::info!(scheduler = %target.address, code = ?status.code(),
                    "scheduler failed before the first byte; trying another");
                excluded.push(target.address.clone());
                last_failure = Some(status);
            }
            Err(status) => return Err(record_rpc_failure(rpc_span, status)),
        }
    }
}

/// Everything the scheduler said before the first content event.
#[derive(Debug, Default)]
pub(crate) struct Opening {
    pub started: Option<Started>,
    /// Set if the request had to wait for a slot.
    pub queued_position: Option<u32>,
    /// The first delta/finish/usage event, or `None` if the stream ended without one.
    pub first: Option<Event>,
}

impl Opening {
    /// Reads events up to the first content event. With `commit_after` (streams), gives up
    /// waiting after that long so the caller can commit the SSE response and keep it alive.
    pub(crate) async fn read<S>(
        events: &mut S,
        commit_after: Option<Duration>,
        stream: bool,
        reservation: &mut Option<Reservation>,
    ) -> Result<Self, ApiError>
    where
        S: Stream<Item = Result<ChatEvent, tonic::Status>> + Unpin,
    {
        let mut opening = Self::default();
        let give_up_at = commit_after.map(|wait| Instant::now() + wait);
        loop {
            let next = match give_up_at {
                Some(at) => match tokio::time::timeout_at(at, events.next()).await {
                    Ok(next) => next,
                    Err(_still_waiting) => return Ok(opening),
                },
                None => events.next().await,
            };
            let next = next.transpose().map_err(|status| {
                if let Some(reservation) = reservation {
                    reservation.failed(&status);
                }
                ApiError::Scheduler(status)
            })?;
            let Some(event) = next else {
                return Ok(opening);
            };
            match event.event {
                Some(Event::Started(started)) => {
                    // The first token exists: leaving from here on is charged.
                    if let Some(reservation) = reservation {
                        reservation.generating(stream);
                    }
                    opening.started = Some(started);
                }
                Some(Event::Queued(queued)) => opening.queued_position = Some(queued.position),
                Some(Event::Dispatched(_)) => {
                    // An engine works on the prompt: leaving from here on costs the prompt.
                    if let Some(reservation) = reservation {
                        reservation.dispatched();
                    }
                }
                None => {}
                Some(content) => {
                    opening.first = Some(content);
                    return Ok(opening);
                }
            }
        }
    }
}

/// Beyond the connect timeout, how long a scheduler may take to send a call's response head.
const SCHEDULER_HEAD_GRACE: Duration = Duration::from_secs(1);

/// How often a request waiting out a failover looks for a new leader.
const FAILOVER_POLL: Duration = Duration::from_millis(100);

/// Whether another scheduler may serve a call that failed before its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveOn {
    /// No: the answer stands.
    No,
    /// Yes, if another has the model (schedulers shard models by config).
    Elsewhere,
    /// Yes; and if none serves now, wait (bounded) for a new leader.
    OrWait,
}

/// This scheduler stands by, shuts down, or never answered as itself (no reason: a transport
/// failure) → another one, or a new leader; it lacks the model → another one.
fn moves_on(status: &tonic::Status) -> MoveOn {
    let reason = status
        .metadata()
        .get(llmgw_proto::REASON_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|word| word.parse::<Reason>().ok());
    match reason {
        // Without a reason the scheduler never answered as itself: refused connection, broken
        // or closing connection (tonic reports some of these as CANCELLED).
        None | Some(Reason::NotLeader | Reason::ShuttingDown) => MoveOn::OrWait,
        Some(Reason::ModelNotFound) => MoveOn::Elsewhere,
        Some(_) => MoveOn::No,
    }
}

pub(crate) fn record_rpc_status(span: &tracing::Span, status: &tonic::Status) {
    span.record("rpc.grpc.status_code", status.code() as i32);
    span.record("otel.status_code", "ERROR");
}

pub(crate) fn record_rpc_failure(span: &tracing::Span, status: tonic::Status) -> ApiError {
    record_rpc_status(span, &status);
    ApiError::Scheduler(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{Delta, Queued};

    fn refused(reason: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::unavailable("no");
        if let Some(reason) = reason {
            status
                .metadata_mut()
                .insert(llmgw_proto::REASON_METADATA, reason.parse().unwrap());
        }
        status
    }

    #[test]
    fn only_a_scheduler_that_never_answered_as_itself_is_left_for_another() {
        assert_eq!(moves_on(&refused(None)), MoveOn::OrWait);
        assert_eq!(moves_on(&refused(Some("not_leader"))), MoveOn::OrWait);
        assert_eq!(moves_on(&refused(Some("shutting_down"))), MoveOn::OrWait);
        assert_eq!(
            moves_on(&refused(Some("model_not_found"))),
            MoveOn::Elsewhere
        );
        // Its own refusal stands: another scheduler would only hide the overload.
        assert_eq!(moves_on(&refused(Some("queue_full"))), MoveOn::No);
        assert_eq!(moves_on(&refused(Some("backend_unavailable"))), MoveOn::No);
    }

    fn event(event: Event) -> Result<ChatEvent, tonic::Status> {
        Ok(ChatEvent { event: Some(event) })
    }

    #[tokio::test]
    async fn the_opening_stops_at_the_first_content_event() {
        let started = Started {
            backend: "ollama@x".into(),
            queue_ms: 12,
            ..Default::default()
        };
        let delta = Event::Delta(Delta {
            content: "Hi".into(),
            tool_calls: vec![],
            ..Default::default()
        });
        let mut events = futures::stream::iter(vec![
            event(Event::Queued(Queued {
                position: 3,
                ..Default::default()
            })),
            Ok(ChatEvent { event: None }),
            event(Event::Started(started.clone())),
            event(delta.clone()),
            event(delta.clone()),
        ]);
        let opening = Opening::read(&mut events, None, true, &mut None)
            .await
            .unwrap();
        assert_eq!(opening.queued_position, Some(3));
        assert_eq!(opening.started, Some(started));
        assert_eq!(opening.first, Some(delta));
        assert_eq!(events.count().await, 1, "the rest is left for the body");
    }

    #[tokio::test]
    async fn a_failure_before_content_is_the_schedulers_status() {
        let mut events = futures::stream::iter(vec![
            event(Event::Queued(Queued {
                position: 1,
                ..Default::default()
            })),
            Err(refused(Some("queue_timeout"))),
        ]);
        let outcome = Opening::read(&mut events, None, false, &mut None).await;
        assert!(
            matches!(outcome, Err(ApiError::Scheduler(s)) if s.code() == tonic::Code::Unavailable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_still_waiting_returns_after_commit_after() {
        let queued = futures::stream::iter(vec![event(Event::Queued(Queued {
            position: 2,
            ..Default::default()
        }))]);
        let mut events = queued.chain(futures::stream::pending());
        let opening = Opening::read(&mut events, Some(Duration::from_secs(1)), true, &mut None)
            .await
            .unwrap();
        assert_eq!(opening.queued_position, Some(2));
        assert!(opening.first.is_none() && opening.started.is_none());
    }
}
