//! [`Observation`]: what metrics need to know about one request to a scheduler-backed route,
//! filled in as it goes, and the finishing touches every such response gets (the tenant's
//! rate-limit headers, the model label for the metrics layer).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::layers::Observed;
use crate::metrics::GatewayMetrics;
use crate::status_page::recent::{RecentRefusals, Refused};
use llmgw_proto::Reason;

#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub metrics: Arc<GatewayMetrics>,
    /// The requested model once the scheduler accepted it (before, clients could mint labels).
    pub model: Option<String>,
    pub tenant: String,
    pub received: Instant,
    /// The response is a stream: its duration is recorded when the stream ends.
    pub streaming: bool,
    /// The route label.
    pub route: &'static str,
    /// The tenant's rate-limit state as of its reservation.
    pub limit_headers: HeaderMap,
    /// Where a stream that fails after its `200` is remembered for the status page.
    pub failures: StreamFailures,
}

/// Remembers a stream that failed after its `200` (the `observe` layer saw only the 200).
#[derive(Debug, Clone)]
pub(crate) struct StreamFailures {
    refusals: Arc<RecentRefusals>,
    request_id: String,
    tenant: String,
}

impl StreamFailures {
    pub fn record(&self, route: &str, model: &str, reason: Reason) {
        self.refusals.record(Refused {
            at: llmgw_telemetry::timestamp::now_rfc3339(),
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            route: route.to_owned(),
            model: model.to_owned(),
            // The client got a 200 and, after it, the error in the stream.
            status: 200,
            reason: reason.as_str().to_owned(),
        });
    }
}

impl Observation {
    pub fn new(state: &AppState, caller: &Caller, route: &'static str) -> Self {
        Self {
            metrics: Arc::clone(&state.metrics),
            model: None,
            tenant: caller.metrics_tenant.clone(),
            received: Instant::now(),
            streaming: false,
            route,
            limit_headers: HeaderMap::new(),
            failures: StreamFailures {
                refusals: Arc::clone(&state.refusals),
                request_id: caller.request_id.clone(),
                tenant: caller.tenant.clone(),
            },
        }
    }

    /// The response for `handled`, with the tenant's rate-limit state as of its reservation
    /// (on success and failure alike) and the model label once the scheduler accepted it.
    pub fn respond(self, handled: Result<Response, ApiError>) -> Response {
        let mut response = match handled {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        response.headers_mut().extend(self.limit_headers);
        if let Some(model) = self.model {
            response.extensions_mut().insert(Observed {
                model,
                streaming: self.streaming,
            });
        }
        response
    }
}
