//! One request's life after it entered its first pool, as the event stream the Chat call
//! returns. It reads as named phases:
//!
//! 1. **wait** for the slot ([`admit::Door::wait`]) — the request entered the pool through
//!    [`admit::admit`] in the service, so refusals there are plain gRPC statuses;
//! 2. **attempt** ([`attempt::attempt`]) the pool's endpoints until one produces a first token
//!    (the request is then [`attempt::Committed`]);
//! 3. if every endpoint failed, **fall back** to the route's next model: through the same
//!    [`admit::admit`] when it lives in another pool, so a pool that cannot serve refuses at
//!    once with its reason; then wait and attempt again;
//! 4. **relay** ([`relay::relay`]) the generation to its end under idle and total timeouts.
//!
//! Retries and fallbacks happen only before the first token: once a token went out, a failure
//! ends the stream with an error — output is never duplicated or spliced. The slot permit and
//! the endpoint's in-flight mark live inside the stream, so they end with it, however it ends.

pub mod admit;
pub mod attempt;
pub mod budget;
pub mod context;
pub mod relay;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use llmgw_proto::v1::chat_event::Event;
use llmgw_proto::v1::{ChatEvent, Dispatched, Priority, Started};
use tonic::Status;

use self::admit::{Door, admit};
use self::attempt::{Attempts, Committed, NotCommitted, attempt};
use self::budget::Budget;
use self::context::Context;
use self::relay::{Relayed, event, relay};
use crate::admission::Class;
use crate::error::SchedulerError;
use crate::pool::Pool;
use crate::routing::table::Route;
use crate::topology::Topology;
use crate::work::Work;

/// Everything a request that entered its first pool carries into its stream.
#[derive(Debug)]
pub struct Job {
    pub topology: Arc<Topology>,
    pub route: Route,
    /// Where the request entered (holding a slot or a place in the queue).
    pub door: Door,
    pub request: Work,
    pub context: Context,
}

pub fn priority_of(class: Class) -> Priority {
    match class {
        Class::Critical => Priority::Critical,
        Class::Interactive => Priority::Interactive,
        Class::Batch => Priority::Batch,
    }
}

/// What one poll of an attempt in progress brought.
enum Progress {
    Dispatched(Dispatched),
    Done(Result<Committed, NotCommitted>),
}

/// The event stream of one request.
pub fn run(job: Job) -> impl Stream<Item = Result<ChatEvent, Status>> + Send {
    async_stream::stream! {
        let Job { topology, mut route, mut door, request, context } = job;
        let budget = Budget::new(context.deadline, context.deadline_ms, &route.timeouts);
        let (dispatched, mut handed_over) = tokio::sync::mpsc::unbounded_channel();
        let mut attempts = Attempts::new(topology.retry_attempts + 1, dispatched);
        let mut fallbacks: VecDeque<String> = route.fallbacks.iter().cloned().collect();
        let (committed, permit, pool) = 'serve: loop {
            let pool = Arc::clone(door.pool());
            if let Some(queued) = door.queued(&context.ask) {
                yield Ok(event(Event::Queued(queued)));
            }
            let permit = match door.wait(&context).await {
                Ok(permit) => permit,
                Err(err) => {
                    // A fallback's queue refused it: an engine may have worked on it before.
                    yield Err(context.fail_after(err, attempts.worked));
                    return;
                }
            };
            loop {
                // Hand-overs to engines are passed on as they happen, before the outcome.
                let outcome = {
                    let mut attempting = std::pin::pin!(attempt(&context, &pool, &route, &request, &budget, &mut attempts));
                    loop {
                        let progress = tokio::select! {
                            biased;
                            Some(note) = handed_over.recv() => Progress::Dispatched(note),
                            done = &mut attempting => Progress::Done(done),
                        };
                        match progress {
                            Progress::Dispatched(note) => yield Ok(event(Event::Dispatched(note))),
                            Progress::Done(done) => break done,
                        }
                    }
                };
                while let Ok(note) = handed_over.try_recv() {
                    yield Ok(event(Event::Dispatched(note)));
                }
                let ended = match outcome {
                    Ok(committed) => break 'serve (committed, permit, pool),
                    Err(NotCommitted::Final(err)) => Some(err),
                    Err(NotCommitted::OutOfAttempts) => Some(attempts.last_error.take().unwrap_or_else(|| no_healthy(&pool))),
                    Err(NotCommitted::Exhausted) => None,
                };
                if let Some(err) = ended {
                    yield Err(context.fail_after(err, attempts.worked));
                    return;
                }
                match fall_back(&topology, &mut fallbacks, &pool, &route, &context, &request, &mut attempts) {
                    Some(Next { route: next, door: None }) => route = next,
                    Some(Next { route: next, door: Some(entered) }) => {
                        route = next;
                        door = entered;
                        continue 'serve;
                    }
                    None => {
                        let err = attempts.last_error.take().unwrap_or_else(|| no_healthy(&pool));
                        yield Err(context.fail_after(err, attempts.worked));
                        return;
                    }
                }
            }
        };
        let predicted = permit.predicted();
        let actual = context.received.elapsed();
        context.metrics.ttft_prediction(&pool.name, predicted, actual);
        context.span.record("llmgw.ttft.predicted_ms", predicted.as_secs_f64() * 1000.0);
        context.span.record("llmgw.ttft.actual_ms", actual.as_secs_f64() * 1000.0);
        let serving = committed.in_flight.endpoint();
        yield Ok(event(Event::Started(Started {
            backend: serving.name().to_owned(),
            queue_ms: permit.queued().as_millis() as u64,
            pool: pool.name.clone(),
            model: route.upstream.clone(),
            priority: priority_of(context.ask.class) as i32,
            tenant: context.ask.tenant.to_string(),
            served_model: route.model.clone(),
            predicted_ttft_ms: predicted.as_millis() as u64,
            endpoint_slots: u32::try_from(serving.slots()).unwrap_or(u32::MAX),
            slots_source: serving.capacity.source().name().to_owned(),
        })));
        // Non-streamed answers are gathered into one delta; an embeddings answer is one event.
        let stream = request.stream() || matches!(request, Work::Embedding(_));
        let mut relayed = std::pin::pin!(relay(&context, Relayed { committed, permit, pool, route, budget, stream }));
        while let Some(item) = relayed.next().await {
            yield item;
        }
    }
}

fn no_healthy(pool: &Pool) -> SchedulerError {
    SchedulerError::NoHealthyBackend {
        pool: pool.name.clone(),
    }
}

/// The next route to try after every endpoint of the current one failed.
#[derive(Debug)]
struct Next {
    route: Route,
    /// Set when the fallback lives in another pool: the request entered it anew.
    door: Option<Door>,
}

/// The route's next fallback model that can be tried. One the caller may not use (its
/// `allowed_models`) is skipped. One in another pool enters it through [`admit`], like any
/// request; a refusal there (no capacity, full queue) is remembered as the last error and the
/// next fallback is tried, so nothing waits on a pool that cannot serve.
fn fall_back(
    topology: &Topology,
    fallbacks: &mut VecDeque<String>,
    current: &Pool,
    from: &Route,
    context: &Context,
    request: &Work,
    attempts: &mut Attempts,
) -> Option<Next> {
    while let Some(name) = fallbacks.pop_front() {
        if !request.allows_model(&name) {
            tracing::info!(parent: &context.span, fallback = %name, "fallback model is outside the caller's allowed models; skipped");
            continue;
        }
        let Ok(route) = topology
            .routes
            .resolve(&name, &context.ask.tenant, fastrand::u64(..))
        else {
            tracing::warn!(parent: &context.span, fallback = %name, "fallback model is not routable; skipped");
            continue;
        };
        let Some(pool) = topology.pool(&route.pool) else {
            continue;
        };
        tracing::info!(parent: &context.span, from = %from.model, to = %route.model, "falling back to another model");
        attempts.next_route();
        if pool.name == current.name {
            return Some(Next { route, door: None });
        }
        let limit = admit::first_token_limit(route.timeouts.total, context.deadline_ms);
        match admit(pool, &context.ask, limit, &context.metrics, &context.span) {
            Ok(door) => {
                return Some(Next {
                    route,
                    door: Some(door),
                });
            }
            Err(refused) => attempts.last_error = Some(refused),
        }
    }
    None
}
