//! [`Context`]: what every phase of one request shares — its server span, the caller's trace
//! context, metrics and deadline — and the one place a failure is recorded and logged.

use std::sync::Arc;

use llmgw_telemetry::TraceContext;
use tokio::time::Instant;
use tonic::Status;

use crate::admission::Ask;
use crate::error::SchedulerError;
use crate::lease::Lease;
use crate::metrics::SchedulerMetrics;

/// Request-wide state the phases read.
#[derive(Debug)]
pub struct Context {
    /// The `scheduler_request` server span (chat, completion or embeddings).
    pub span: tracing::Span,
    /// The caller's trace context, passed on when spans are not recorded.
    pub incoming: TraceContext,
    pub metrics: Arc<SchedulerMetrics>,
    pub ask: Ask,
    /// The caller's own deadline, if any, and its length as sent (for messages).
    pub deadline: Option<Instant>,
    pub deadline_ms: u64,
    /// No backend call starts without a valid lease (a paused leader that resumes must not).
    pub lease: Arc<Lease>,
    /// When the call arrived (first-token times are measured from here).
    pub received: Instant,
}

impl Context {
    /// Logs `err` once, marks the span failed, and turns it into the status the caller gets.
    pub fn fail(&self, err: SchedulerError) -> Status {
        tracing::warn!(parent: &self.span, reason = err.reason().as_str(), error = %err, "chat failed");
        let status = Status::from(err);
        self.span
            .record("rpc.grpc.status_code", status.code() as i32);
        self.span.record("otel.status_code", "ERROR");
        status
    }

    /// [`Context::fail`], saying whether an engine worked on the request first.
    pub fn fail_after(&self, err: SchedulerError, worked: bool) -> Status {
        let mut status = self.fail(err);
        if worked {
            status.metadata_mut().insert(
                llmgw_proto::WORK_METADATA,
                tonic::metadata::MetadataValue::from_static("prompt"),
            );
        }
        status
    }
}
