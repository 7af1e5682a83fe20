//! The scheduler's errors and the one place they become gRPC statuses.
//!
//! Every status carries `x-llmgw-reason` metadata (a [`Reason`] the gateway passes on), and refusals carry `retry-after` (seconds) so clients can back off honestly.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use llmgw_proto::{REASON_METADATA, Reason};

use crate::backend::BackendError;

/// Status metadata naming the group's leader on a `not_leader` refusal.
pub const LEADER_METADATA: &str = "x-llmgw-leader";

/// Why a Chat call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The call lacks the scheduler's bearer token (`SCHEDULER_AUTH_TOKEN`).
    #[error("missing or wrong `authorization` bearer token")]
    Unauthenticated,
    /// The queue is full; try again after the hint.
    #[error("queue of pool `{pool}` is full ({limit} waiting)")]
    QueueFull {
        pool: String,
        limit: usize,
        retry_after: Duration,
    },
    /// A higher-ranked request took this waiter's place in a full queue.
    #[error("displaced from the full queue of pool `{pool}` by a {by} request")]
    Displaced {
        pool: String,
        by: &'static str,
        retry_after: Duration,
    },
    /// Waited the maximum queue time without getting a slot.
    #[error("no slot in pool `{pool}` within {waited_ms} ms")]
    QueueTimeout {
        pool: String,
        waited_ms: u64,
        retry_after: Duration,
    },
    /// The first-token objective cannot be met: predicted before the request waited.
    #[error(
        "first-token objective of {slo_ms} ms cannot be met in pool `{pool}`: predicted {predicted_ms} ms"
    )]
    SloUnattainable {
        pool: String,
        slo_ms: u64,
        predicted_ms: u64,
        retry_after: Duration,
    },
    /// The time-per-output-token objective cannot be met: the endpoint the request would run
    /// on decodes slower than that at the batch it would join.
    #[error(
        "time-per-output-token objective of {slo_ms} ms cannot be met in pool `{pool}`: a token takes {predicted_ms} ms in a batch of {batch}"
    )]
    TpotUnattainable {
        pool: String,
        slo_ms: u64,
        predicted_ms: u64,
        batch: usize,
        retry_after: Duration,
    },
    /// The prompt needs more prefill time than its first-token budget allows; the engine was
    /// not at fault (it was working on it), so nothing else was tried.
    #[error(
        "a prompt of ~{prompt_tokens} tokens got no first token within its budget of {budget_ms} ms"
    )]
    PromptTooHeavy { prompt_tokens: u32, budget_ms: u64 },
    /// No such public model or version.
    #[error("{0}")]
    UnknownModel(String),
    /// Every endpoint of the pool is down or ejected.
    #[error("no healthy endpoint in pool `{pool}`")]
    NoHealthyBackend { pool: String },
    /// A per-model timeout expired.
    #[error("{kind} timeout of {ms} ms expired")]
    Timeout { kind: TimeoutKind, ms: u64 },
    /// The request's own deadline passed.
    #[error("deadline of {0} ms passed")]
    DeadlineExceeded(u64),
    /// The scheduler is shutting down.
    #[error("scheduler is shutting down")]
    ShuttingDown,
    /// This replica does not hold its group's lease.
    #[error("this scheduler replica stands by; the leader is {}", .leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl SchedulerError {
    /// The stable reason sent as `x-llmgw-reason`.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument(_) => Reason::InvalidRequest,
            Self::Unauthenticated => Reason::Unauthenticated,
            Self::QueueFull { .. } => Reason::QueueFull,
            Self::Displaced { .. } => Reason::Displaced,
            Self::SloUnattainable { .. } | Self::TpotUnattainable { .. } => Reason::SloUnattainable,
            Self::PromptTooHeavy { .. } => Reason::PromptTooHeavy,
            Self::QueueTimeout { .. } => Reason::QueueTimeout,
            Self::DeadlineExceeded(_) => Reason::DeadlineExceeded,
            Self::UnknownModel(_) => Reason::ModelNotFound,
            Self::NoHealthyBackend { .. } => Reason::NoHealthyBackend,
            Self::Timeout { kind, .. } => kind.reason(),
            Self::ShuttingDown => Reason::ShuttingDown,
            Self::NotLeader { .. } => Reason::NotLeader,
            Self::Backend(err) => err.reason(),
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::QueueFull { .. }
            | Self::Displaced { .. }
            | Self::SloUnattainable { .. }
            | Self::TpotUnattainable { .. } => Code::ResourceExhausted,
            Self::PromptTooHeavy { .. } => Code::DeadlineExceeded,
            Self::QueueTimeout { .. } | Self::ShuttingDown | Self::NotLeader { .. } => {
                Code::Unavailable
            }
            Self::DeadlineExceeded(_) | Self::Timeout { .. } => Code::DeadlineExceeded,
            Self::UnknownModel(_) => Code::NotFound,
            Self::NoHealthyBackend { .. } => Code::Unavailable,
            Self::Backend(err) => err.code(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after, .. }
            | Self::Displaced { retry_after, .. }
            | Self::QueueTimeout { retry_after, .. }
            | Self::SloUnattainable { retry_after, .. }
            | Self::TpotUnattainable { retry_after, .. } => Some(*retry_after),
            Self::ShuttingDown | Self::NoHealthyBackend { .. } | Self::NotLeader { .. } => {
                Some(Duration::from_secs(1))
            }
            Self::Backend(BackendError::Overloaded { retry_after, .. }) => *retry_after,
            Self::InvalidArgument(_)
            | Self::Unauthenticated
            | Self::DeadlineExceeded(_)
            | Self::Backend(_)
            | Self::UnknownModel(_)
            | Self::PromptTooHeavy { .. }
            | Self::Timeout { .. } => None,
        }
    }
}

impl SchedulerError {
    /// Whether another endpoint or a fallback model might succeed (before the first token).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Backend(err) => err.retryable(),
            Self::Timeout { kind, .. } => {
                matches!(kind, TimeoutKind::Connect | TimeoutKind::FirstToken)
            }
            Self::InvalidArgument(_)
            | Self::Unauthenticated
            | Self::QueueFull { .. }
            | Self::Displaced { .. }
            | Self::SloUnattainable { .. }
            | Self::TpotUnattainable { .. }
            | Self::PromptTooHeavy { .. }
            | Self::QueueTimeout { .. }
            | Self::DeadlineExceeded(_)
            | Self::ShuttingDown
            | Self::NotLeader { .. }
            | Self::UnknownModel(_)
            | Self::NoHealthyBackend { .. } => false,
        }
    }
}

/// Which per-model timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Connecting and getting the response head.
    Connect,
    /// From the request to the first token.
    FirstToken,
    /// Between two tokens.
    Idle,
    /// The whole generation.
    Total,
}

impl TimeoutKind {
    fn reason(self) -> Reason {
        match self {
            Self::Connect => Reason::ConnectTimeout,
            Self::FirstToken => Reason::TtftTimeout,
            Self::Idle => Reason::IdleTimeout,
            Self::Total => Reason::TotalTimeout,
        }
    }
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::FirstToken => "first-token",
            Self::Idle => "idle",
            Self::Total => "total",
        })
    }
}

impl From<SchedulerError> for Status {
    fn from(err: SchedulerError) -> Self {
        let mut status = Status::new(err.code(), err.to_string());
        let metadata = status.metadata_mut();
        metadata.insert(
            REASON_METADATA,
            MetadataValue::from_static(err.reason().as_str()),
        );
        if let SchedulerError::NotLeader {
            leader: Some(leader),
        } = &err
            && let Ok(value) = leader.parse()
        {
            metadata.insert(LEADER_METADATA, value);
        }
        // Validation messages start with the field they are about: "`messages[0].role` must…".
        if let SchedulerError::InvalidArgument(message) = &err
            && let Some(param) = message
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(param, _)| param)
            && let Ok(value) = param.parse()
        {
            metadata.insert(llmgw_proto::PARAM_METADATA, value);
        }
        // An objective refusal names the header of the objective it could not meet.
        let objective = match &err {
            SchedulerError::SloUnattainable { .. } => Some("x-slo-ttft-ms"),
            SchedulerError::TpotUnattainable { .. } => Some("x-slo-tpot-ms"),
            _ => None,
        };
        if let Some(header) = objective {
            metadata.insert(
                llmgw_proto::PARAM_METADATA,
                MetadataValue::from_static(header),
            );
        }
        if let Some(retry_after) = err.retry_after() {
            // Whole seconds, rounded up, at least 1: what HTTP's Retry-After can say.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = seconds.to_string().parse() {
                metadata.insert("retry-after", value);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_reason_and_retry_after() {
        let status = Status::from(SchedulerError::QueueFull {
            pool: "default".into(),
            limit: 2,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get("x-llmgw-reason").unwrap(),
            "queue_full"
        );
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");

        let status = Status::from(SchedulerError::InvalidArgument(
            "`messages` must not be empty".into(),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.metadata().get("retry-after").is_none());
    }

    #[test]
    fn an_objective_refusal_names_its_objective() {
        let status = Status::from(SchedulerError::TpotUnattainable {
            pool: "gpu".into(),
            slo_ms: 50,
            predicted_ms: 100,
            batch: 4,
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let reason = status.metadata().get("x-llmgw-reason").unwrap();
        assert_eq!(reason, "slo_unattainable");
        let param = status.metadata().get(llmgw_proto::PARAM_METADATA).unwrap();
        assert_eq!(param, "x-slo-tpot-ms");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
        let status = Status::from(SchedulerError::SloUnattainable {
            pool: "gpu".into(),
            slo_ms: 50,
            predicted_ms: 100,
            retry_after: Duration::from_secs(1),
        });
        let param = status.metadata().get(llmgw_proto::PARAM_METADATA).unwrap();
        assert_eq!(param, "x-slo-ttft-ms");
    }
}
