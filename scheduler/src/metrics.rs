//! The scheduler's Prometheus metrics (OpenMetrics text on `SCHEDULER_METRICS_LISTEN`):
//! admission outcomes and queue waits by pool and class, backend errors by endpoint and
//! reason, backend time to first token, the error of first-token predictions; queue depth (in
//! requests and tokens), in-flight, slots, breaker states and tokens served per tenant are
//! read from the live topology at scrape time, so they are exact.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::Class;
use crate::pool::Pool;

const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// `gen_ai.server.time_to_first_token` buckets (seconds).
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    pool: String,
    priority: &'static str,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    pool: String,
    priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    pool: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    pool: String,
    endpoint: String,
    /// `configured`, `engine` or `latency`.
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    pool: String,
    endpoint: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    pool: String,
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    pool: String,
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PredictionLabels {
    pool: String,
    /// `late`: the first token came after the prediction; `early`: before.
    direction: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}
fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

/// Every metric the scheduler records.
#[derive(Debug)]
pub struct SchedulerMetrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    queue_wait: Histograms<ClassLabels>,
    backend_errors: Family<ErrorLabels, Counter>,
    ttft: Histograms<ModelLabels>,
    queue_depth: Family<ClassLabels, Gauge>,
    in_flight: Family<PoolLabels, Gauge>,
    slots: Family<PoolLabels, Gauge>,
    endpoint_in_flight: Family<EndpointLabels, Gauge>,
    endpoint_up: Family<EndpointLabels, Gauge>,
    breaker_state: Family<EndpointLabels, Gauge>,
    queue_tokens: Family<ClassLabels, Gauge>,
    served_tokens: Family<TenantLabels, Gauge>,
    prediction_error: Histograms<PredictionLabels>,
    endpoint_slots: Family<SlotLabels, Gauge>,
    endpoint_saturated: Family<EndpointLabels, Gauge>,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let admissions = Family::default();
        registry.register(
            "llmgw_admission",
            "Admission decisions by pool, priority class and outcome",
            admissions.clone(),
        );
        let queue_wait =
            Histograms::<ClassLabels>::new_with_constructor(wait_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "llmgw_queue_wait",
            "Time waited for a slot",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let backend_errors = Family::default();
        registry.register(
            "llmgw_backend_errors",
            "Failed backend attempts by endpoint and reason",
            backend_errors.clone(),
        );
        let ttft =
            Histograms::<ModelLabels>::new_with_constructor(ttft_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Backend time from request to first token, per successful attempt",
            Unit::Seconds,
            ttft.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "llmgw_queue_depth",
            "Requests waiting for a slot",
            queue_depth.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "llmgw_in_flight",
            "Slots held (generations running) per pool",
            in_flight.clone(),
        );
        let slots = Family::default();
        registry.register(
            "llmgw_pool_slots",
            "Slots of the pool's available endpoints",
            slots.clone(),
        );
        let endpoint_in_flight = Family::default();
        registry.register(
            "llmgw_endpoint_in_flight",
            "Requests in flight per endpoint",
            endpoint_in_flight.clone(),
        );
        let endpoint_up = Family::default();
        registry.register(
            "llmgw_endpoint_up",
            "1 if the endpoint answers its probe",
            endpoint_up.clone(),
        );
        let breaker_state = Family::default();
        registry.register(
            "llmgw_breaker_state",
            "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let queue_tokens = Family::default();
        registry.register(
            "llmgw_queue_tokens",
            "Tokens (prompt and completion estimates) of the requests waiting for a slot",
            queue_tokens.clone(),
        );
        let served_tokens = Family::default();
        registry.register(
            "llmgw_tenant_served_tokens",
            "Tokens served per tenant, the fair-share counter (monotone while the pool lives)",
            served_tokens.clone(),
        );
        let prediction_error = Histograms::<PredictionLabels>::new_with_constructor(
            wait_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "llmgw_ttft_prediction_error",
            "How far admission's first-token prediction was from the first token",
            Unit::Seconds,
            prediction_error.clone(),
        );
        let endpoint_slots = Family::default();
        registry.register(
            "llmgw_endpoint_slots",
            "Requests an endpoint takes at once now, and where that number comes from",
            endpoint_slots.clone(),
        );
        let endpoint_saturated = Family::default();
        registry.register(
            "llmgw_endpoint_saturated",
            "1 while the engine reports work waiting inside it (or a full KV cache): it takes no more",
            endpoint_saturated.clone(),
        );
        Self {
            registry,
            admissions,
            queue_wait,
            backend_errors,
            ttft,
            queue_depth,
            in_flight,
            slots,
            endpoint_in_flight,
            endpoint_up,
            breaker_state,
            queue_tokens,
            served_tokens,
            prediction_error,
            endpoint_slots,
            endpoint_saturated,
        }
    }

    /// A first token came `actual` after the request arrived; admission predicted `predicted`.
    pub fn ttft_prediction(
        &self,
        pool: &str,
        predicted: std::time::Duration,
        actual: std::time::Duration,
    ) {
        let (direction, error) = if actual >= predicted {
            ("late", actual - predicted)
        } else {
            ("early", predicted - actual)
        };
        self.prediction_error
            .get_or_create(&PredictionLabels {
                pool: pool.to_owned(),
                direction,
            })
            .observe(error.as_secs_f64());
    }

    /// One admission decision (`admitted`, `admitted_after_wait`, or the refusal's reason).
    pub fn admission(&self, pool: &str, class: Class, outcome: &str) {
        let labels = AdmissionLabels {
            pool: pool.to_owned(),
            priority: class.name(),
            outcome: outcome.to_owned(),
        };
        self.admissions.get_or_create(&labels).inc();
    }

    /// Time a request waited before getting its slot.
    pub fn queue_wait(&self, pool: &str, class: Class, seconds: f64) {
        self.queue_wait
            .get_or_create(&ClassLabels {
                pool: pool.to_owned(),
                priority: class.name(),
            })
            .observe(seconds);
    }

    /// A failed backend attempt.
    pub fn backend_error(&self, pool: &str, endpoint: &str, reason: llmgw_proto::Reason) {
        let labels = ErrorLabels {
            pool: pool.to_owned(),
            endpoint: endpoint.to_owned(),
            reason: reason.as_str(),
        };
        self.backend_errors.get_or_create(&labels).inc();
    }

    /// A backend's time to first token.
    pub fn first_token(&self, pool: &str, model: &str, seconds: f64) {
        self.ttft
            .get_or_create(&ModelLabels {
                pool: pool.to_owned(),
                model: model.to_owned(),
            })
            .observe(seconds);
    }

    /// OpenMetrics text, with the live gauges read from `pools` (the current topology's).
    pub fn render<'a>(&self, pools: impl IntoIterator<Item = &'a Arc<Pool>>) -> String {
        self.queue_depth.clear();
        self.in_flight.clear();
        self.slots.clear();
        self.endpoint_in_flight.clear();
        self.endpoint_up.clear();
        self.breaker_state.clear();
        self.queue_tokens.clear();
        self.served_tokens.clear();
        self.endpoint_slots.clear();
        self.endpoint_saturated.clear();
        for pool in pools {
            for (tenant, tokens) in pool.admission.served_tokens() {
                let labels = TenantLabels {
                    pool: pool.name.clone(),
                    tenant: tenant.to_string(),
                };
                self.served_tokens
                    .get_or_create(&labels)
                    .set(i64::try_from(tokens).unwrap_or(i64::MAX));
            }
            for class in Class::ALL {
                let labels = ClassLabels {
                    pool: pool.name.clone(),
                    priority: class.name(),
                };
                self.queue_depth
                    .get_or_create(&labels)
                    .set(pool.admission.waiting_in(class) as i64);
                self.queue_tokens.get_or_create(&labels).set(
                    i64::try_from(pool.admission.waiting_tokens_in(class)).unwrap_or(i64::MAX),
                );
            }
            let labels = PoolLabels {
                pool: pool.name.clone(),
            };
            self.in_flight
                .get_or_create(&labels)
                .set(pool.admission.running() as i64);
            self.slots
                .get_or_create(&labels)
                .set(pool.admission.slots() as i64);
            for endpoint in &pool.endpoints {
                let labels = EndpointLabels {
                    pool: pool.name.clone(),
                    endpoint: endpoint.name().to_owned(),
                };
                self.endpoint_in_flight
                    .get_or_create(&labels)
                    .set(endpoint.outstanding() as i64);
                self.endpoint_up
                    .get_or_create(&labels)
                    .set(i64::from(endpoint.probe_ok()));
                let state = match endpoint.breaker.state_name() {
                    "closed" => 0,
                    "half_open" => 1,
                    _ => 2,
                };
                self.breaker_state.get_or_create(&labels).set(state);
                self.endpoint_saturated
                    .get_or_create(&labels)
                    .set(i64::from(endpoint.capacity.saturated()));
                self.endpoint_slots
                    .get_or_create(&SlotLabels {
                        pool: pool.name.clone(),
                        endpoint: endpoint.name().to_owned(),
                        source: endpoint.capacity.source().name(),
                    })
                    .set(endpoint.slots() as i64);
            }
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
