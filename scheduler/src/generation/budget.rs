//! [`Budget`]: the earlier of the caller's deadline and the model's total time limit, and
//! which error expiring means. Every per-phase timeout is capped by it.

use tokio::time::Instant;

use crate::error::{SchedulerError, TimeoutKind};
use crate::routing::table::Timeouts;

/// When the request must be over, and why.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    at: Instant,
    caller_deadline: bool,
    deadline_ms: u64,
    total_ms: u64,
}

impl Budget {
    pub fn new(deadline: Option<Instant>, deadline_ms: u64, timeouts: &Timeouts) -> Self {
        let total = Instant::now() + timeouts.total;
        let total_ms = timeouts.total.as_millis() as u64;
        match deadline {
            Some(deadline) if deadline <= total => Self {
                at: deadline,
                caller_deadline: true,
                deadline_ms,
                total_ms,
            },
            _ => Self {
                at: total,
                caller_deadline: false,
                deadline_ms,
                total_ms,
            },
        }
    }

    /// The error reported when the budget itself runs out.
    pub fn error(&self) -> SchedulerError {
        if self.caller_deadline {
            SchedulerError::DeadlineExceeded(self.deadline_ms)
        } else {
            SchedulerError::Timeout {
                kind: TimeoutKind::Total,
                ms: self.total_ms,
            }
        }
    }

    /// `at` capped by the budget, and the error to report if that cap is what expires.
    pub fn cap(&self, at: Instant, kind: TimeoutKind, ms: u64) -> (Instant, SchedulerError) {
        if self.at <= at {
            (self.at, self.error())
        } else {
            (at, SchedulerError::Timeout { kind, ms })
        }
    }
}
