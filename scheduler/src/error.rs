//! The scheduler's errors and the one place they become gRPC statuses.
//!
//! Every status carries `x-llmgw-reason` metadata (a stable snake_case word the gateway passes
//! on), and refusals carry `retry-after` (seconds) so clients can back off honestly.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::backend::BackendError;

/// Why a Chat call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
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
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl SchedulerError {
    /// The stable reason word sent as `x-llmgw-reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_request",
            Self::QueueFull { .. } => "queue_full",
            Self::Displaced { .. } => "displaced",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::DeadlineExceeded(_) => "deadline_exceeded",
            Self::UnknownModel(_) => "model_not_found",
            Self::NoHealthyBackend { .. } => "no_healthy_backend",
            Self::Timeout { kind, .. } => kind.reason(),
            Self::ShuttingDown => "shutting_down",
            Self::Backend(err) => err.reason(),
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::QueueFull { .. } | Self::Displaced { .. } => Code::ResourceExhausted,
            Self::QueueTimeout { .. } | Self::ShuttingDown => Code::Unavailable,
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
            | Self::QueueTimeout { retry_after, .. } => Some(*retry_after),
            Self::ShuttingDown | Self::NoHealthyBackend { .. } => Some(Duration::from_secs(1)),
            Self::InvalidArgument(_)
            | Self::DeadlineExceeded(_)
            | Self::Backend(_)
            | Self::UnknownModel(_)
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
            | Self::QueueFull { .. }
            | Self::Displaced { .. }
            | Self::QueueTimeout { .. }
            | Self::DeadlineExceeded(_)
            | Self::ShuttingDown
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
    fn reason(self) -> &'static str {
        match self {
            Self::Connect => "connect_timeout",
            Self::FirstToken => "ttft_timeout",
            Self::Idle => "idle_timeout",
            Self::Total => "total_timeout",
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
        metadata.insert("x-llmgw-reason", MetadataValue::from_static(err.reason()));
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
    use crate::backend::BackendError;

    #[test]
    fn every_reason_is_in_the_shared_vocabulary() {
        let retry = Duration::from_secs(1);
        let errors = [
            SchedulerError::InvalidArgument(String::new()),
            SchedulerError::QueueFull {
                pool: String::new(),
                limit: 0,
                retry_after: retry,
            },
            SchedulerError::Displaced {
                pool: String::new(),
                by: "critical",
                retry_after: retry,
            },
            SchedulerError::QueueTimeout {
                pool: String::new(),
                waited_ms: 0,
                retry_after: retry,
            },
            SchedulerError::UnknownModel(String::new()),
            SchedulerError::NoHealthyBackend {
                pool: String::new(),
            },
            SchedulerError::Timeout {
                kind: TimeoutKind::Connect,
                ms: 0,
            },
            SchedulerError::Timeout {
                kind: TimeoutKind::FirstToken,
                ms: 0,
            },
            SchedulerError::Timeout {
                kind: TimeoutKind::Idle,
                ms: 0,
            },
            SchedulerError::Timeout {
                kind: TimeoutKind::Total,
                ms: 0,
            },
            SchedulerError::DeadlineExceeded(0),
            SchedulerError::ShuttingDown,
            SchedulerError::Backend(BackendError::Unreachable(String::new())),
            SchedulerError::Backend(BackendError::ModelNotFound(String::new())),
            SchedulerError::Backend(BackendError::Rejected(String::new())),
            SchedulerError::Backend(BackendError::Overloaded(503)),
            SchedulerError::Backend(BackendError::Status {
                status: 500,
                message: String::new(),
            }),
            SchedulerError::Backend(BackendError::BadResponse(String::new())),
            SchedulerError::Backend(BackendError::Interrupted(String::new())),
        ];
        for err in errors {
            assert!(
                llmgw_proto::REASONS.contains(&err.reason()),
                "{} missing",
                err.reason()
            );
        }
    }

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
}
