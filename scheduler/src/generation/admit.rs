//! [`admit`]: the one door into a pool, used by the first attempt and by every fallback into
//! another pool. It checks capacity, enters the admission queue (or is refused with its
//! reason), and [`Door::wait`] waits for the slot under the `admission.wait` span. Every
//! decision is counted in `llmgw_admissions_total` and logged once.

use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::Queued;
use llmgw_telemetry::DECISIONS;
use tokio::time::Instant;
use tracing::Instrument;

use super::context::Context;
use crate::admission::{Ask, Entry, SlotPermit};
use crate::error::SchedulerError;
use crate::metrics::SchedulerMetrics;
use crate::pool::Pool;

/// A request that entered a pool: it holds a slot or a place in the queue.
#[derive(Debug)]
pub struct Door {
    pool: Arc<Pool>,
    entry: Entry,
}

/// Enters `pool` for `ask`, or refuses at once: no capacity (every endpoint down or ejected),
/// a prompt whose predicted first token comes after `first_token_limit` (the model's total
/// time or the caller's deadline), a per-token objective its batch would miss
/// ([`per_token_objective`]), a first-token objective the work ahead makes unattainable, a
/// full queue, or displacement rules. The refusal is counted and logged in `span`.
pub fn admit(
    pool: &Arc<Pool>,
    ask: &Ask,
    first_token_limit: Duration,
    metrics: &SchedulerMetrics,
    span: &tracing::Span,
) -> Result<Door, SchedulerError> {
    let own_first_token = pool
        .admission
        .pace()
        .timings()
        .first_token(ask.cost.prompt_tokens, pool.admission.configured_prefill());
    let entered = if !pool.serving() {
        Err(SchedulerError::NoHealthyBackend {
            pool: pool.name.clone(),
        })
    } else if own_first_token > first_token_limit {
        Err(SchedulerError::PromptTooHeavy {
            prompt_tokens: ask.cost.prompt_tokens,
            budget_ms: first_token_limit.as_millis() as u64,
        })
    } else if let Err(missed) = per_token_objective(pool, ask) {
        Err(missed)
    } else {
        let mut ask = ask.clone();
        if !ask.completion_capped
            && let Some(average) = pool.admission.pace().average_completion()
        {
            ask.cost.completion_tokens = average;
        }
        pool.admission.enter(ask)
    };
    match entered {
        Ok(entry) => Ok(Door {
            pool: Arc::clone(pool),
            entry,
        }),
        Err(err) => {
            let reason = err.reason().as_str();
            metrics.admission(&pool.name, ask.class, reason);
            tracing::debug!(target: DECISIONS, parent: span, pool = %pool.name, class = ask.class.name(), tenant = %ask.tenant,
                reason, error = %err, "admission decision: refused");
            Err(err)
        }
    }
}

/// Refuses a request whose time-per-output-token objective the batch it would join is known
/// to miss. A request that runs at once (a slot free, nobody waiting) joins the batch of an
/// endpoint with room, one more than it serves now; one that would wait (or an endpoint
/// without room) gets a slot only as one frees, in a full batch. The prediction is each
/// endpoint's decode pace at that batch ([`crate::pace::Pace::decode_in_batch`]), the best of
/// them — and the pick prefers an endpoint that meets it ([`Pool::pick`]); an endpoint with
/// nothing fresh learned there could meet it, so the request is admitted.
fn per_token_objective(pool: &Pool, ask: &Ask) -> Result<(), SchedulerError> {
    let Some(slo) = ask.slo_tpot else {
        return Ok(());
    };
    let at_once = pool.admission.runs_at_once();
    let mut best: Option<(Duration, usize)> = None;
    for endpoint in pool.endpoints.iter().filter(|e| e.available()) {
        let batch = match at_once {
            Ok(()) if endpoint.outstanding() < endpoint.slots() => endpoint.outstanding() + 1,
            _ => endpoint.slots(),
        };
        let Some(tpot) = endpoint.pace.decode_in_batch(batch) else {
            return Ok(());
        };
        if best.is_none_or(|(fastest, _)| tpot < fastest) {
            best = Some((tpot, batch));
        }
    }
    let Some((predicted, batch)) = best.filter(|(tpot, _)| *tpot > slo) else {
        return Ok(());
    };
    // Alone on an engine it would still miss: coming back later does not help, so the
    // longest a client should wait before trying again (maybe elsewhere) is named.
    let hopeless = pool
        .endpoints
        .iter()
        .filter(|e| e.available())
        .all(|e| e.pace.decode_in_batch(1).is_some_and(|alone| alone > slo));
    let retry_after = if hopeless {
        pool.admission.max_wait().max(Duration::from_secs(1))
    } else {
        // Back when the batch has shrunk: the queue's drain estimate, or the next finish.
        at_once.err().unwrap_or(Duration::from_secs(1))
    };
    Err(SchedulerError::TpotUnattainable {
        pool: pool.name.clone(),
        slo_ms: slo.as_millis() as u64,
        predicted_ms: predicted.as_millis() as u64,
        batch,
        retry_after,
    })
}

impl Door {
    /// The pool this door leads into.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The first-token time admission predicted, from entering.
    pub fn predicted(&self) -> Duration {
        match &self.entry {
            Entry::Admitted(permit) => permit.predicted(),
            Entry::Waiting(ticket) => ticket.predicted(),
        }
    }

    /// The `queued` event to send when the request has to wait.
    pub fn queued(&self, ask: &Ask) -> Option<Queued> {
        let Entry::Waiting(ticket) = &self.entry else {
            return None;
        };
        Some(Queued {
            position: ticket.position() as u32,
            pool: self.pool.name.clone(),
            priority: super::priority_of(ask.class) as i32,
            tenant: ask.tenant.to_string(),
        })
    }

    /// Waits for the slot unless the caller's deadline passes first.
    pub async fn wait(self, context: &Context) -> Result<SlotPermit, SchedulerError> {
        let Context {
            span,
            metrics,
            ask,
            deadline,
            deadline_ms,
            ..
        } = context;
        let position = match &self.entry {
            Entry::Waiting(ticket) => ticket.position(),
            Entry::Admitted(_) => 0,
        };
        let wait_span = tracing::info_span!(parent: span, "admission.wait",
            otel.name = "admission.wait",
            "llmgw.pool" = %self.pool.name,
            "llmgw.priority" = ask.class.name(),
            "llmgw.tenant" = %ask.tenant,
            "llmgw.queue.position" = position as i64,
            "llmgw.queue.wait_ms" = tracing::field::Empty,
            "llmgw.admission.outcome" = tracing::field::Empty,
        );
        let waited = wait_for_slot(self.entry, *deadline, *deadline_ms)
            .instrument(wait_span.clone())
            .await;
        let outcome = match &waited {
            Ok(_) if position == 0 => "admitted",
            Ok(_) => "admitted_after_wait",
            Err(err) => err.reason().as_str(),
        };
        let wait_ms = waited
            .as_ref()
            .map_or(0.0, |p| p.queued().as_secs_f64() * 1000.0);
        metrics.admission(&self.pool.name, ask.class, outcome);
        if let Ok(permit) = &waited {
            metrics.queue_wait(&self.pool.name, ask.class, permit.queued().as_secs_f64());
        }
        wait_span.record("llmgw.admission.outcome", outcome);
        wait_span.record("llmgw.queue.wait_ms", wait_ms);
        tracing::debug!(target: DECISIONS, parent: &wait_span, pool = %self.pool.name, class = ask.class.name(), tenant = %ask.tenant,
            position, wait_ms, outcome, "admission decision");
        waited
    }
}

async fn wait_for_slot(
    entry: Entry,
    deadline: Option<Instant>,
    deadline_ms: u64,
) -> Result<SlotPermit, SchedulerError> {
    match entry {
        Entry::Admitted(permit) => Ok(permit),
        Entry::Waiting(ticket) => match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, ticket.wait())
                .await
                .map_err(|_| SchedulerError::DeadlineExceeded(deadline_ms))?,
            None => ticket.wait().await,
        },
    }
}

/// The latest a first token can usefully come: the model's total time, or the caller's
/// deadline if sooner.
pub fn first_token_limit(total: Duration, deadline_ms: u64) -> Duration {
    if deadline_ms > 0 {
        total.min(Duration::from_millis(deadline_ms))
    } else {
        total
    }
}
