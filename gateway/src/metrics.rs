//! The gateway's Prometheus metrics (OpenMetrics text at `GET /metrics`), one registry per
//! gateway instance. Names follow the OpenTelemetry GenAI metric conventions where they exist
//! (`gen_ai.server.time_to_first_token` → `gen_ai_server_time_to_first_token_seconds`), with
//! their recommended buckets.
//!
//! Label cardinality: `model` is the requested name only once the scheduler accepted it (else
//! `-`), so arbitrary client input cannot mint series; `tenant` is the validated tenant id.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `gen_ai.server.request.duration` buckets (seconds).
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token` buckets (seconds).
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token` buckets (seconds).
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// `gen_ai.client.token.usage` buckets (tokens).
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    tenant: String,
    token_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenTypeLabels {
    model: String,
    token_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    model: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    tenant: String,
    limit: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    tenant: String,
    window: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    op: &'static str,
}

/// Limit-store round trips (seconds): loopback Redis is ~0.1 ms, a remote one a few ms.
const STORE_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}
fn tpot_histogram() -> Histogram {
    Histogram::new(TPOT_BUCKETS)
}
fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

/// Every metric the gateway records.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<RequestLabels>,
    ttft: Histograms<ModelLabels>,
    tpot: Histograms<ModelLabels>,
    token_usage: Histograms<TokenTypeLabels>,
    tokens: Family<TokenLabels, Counter>,
    stream_errors: Family<ReasonLabels, Counter>,
    ratelimit: Family<RateLimitLabels, Counter>,
    budget_remaining: Family<BudgetLabels, Gauge>,
    store_duration: Histograms<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
    connections_closed: Family<ClosedLabels, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "llmgw_http_requests",
            "HTTP requests by route, model and status",
            requests.clone(),
        );
        let duration = Histograms::<RequestLabels>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Time from request to the end of the response",
            Unit::Seconds,
            duration.clone(),
        );
        let ttft =
            Histograms::<ModelLabels>::new_with_constructor(ttft_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from request to the first streamed token",
            Unit::Seconds,
            ttft.clone(),
        );
        let tpot =
            Histograms::<ModelLabels>::new_with_constructor(tpot_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, per streamed request",
            Unit::Seconds,
            tpot.clone(),
        );
        let token_usage = Histograms::<TokenTypeLabels>::new_with_constructor(
            token_histogram as fn() -> Histogram,
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request by type (input, output)",
            token_usage.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "llmgw_tokens",
            "Tokens by model, tenant and type (input, output)",
            tokens.clone(),
        );
        let stream_errors = Family::default();
        registry.register(
            "llmgw_stream_errors",
            "Streams ended by an error event after the first token",
            stream_errors.clone(),
        );
        let connections_closed = Family::default();
        registry.register(
            "llmgw_connections_closed",
            "Client connections the edge closed on a deadline (reason: head_timeout, idle_timeout, send_timeout)",
            connections_closed.clone(),
        );
        let ratelimit = Family::default();
        registry.register(
            "llmgw_ratelimit",
            "Limit decisions by configured tenant, limit (`all` when granted) and outcome",
            ratelimit.clone(),
        );
        let budget_remaining = Family::default();
        registry.register(
            "llmgw_budget_remaining_tokens",
            "Tokens a configured tenant has left, as of its last decision (window: tpm, day, month)",
            budget_remaining.clone(),
        );
        let store_duration =
            Histograms::<StoreLabels>::new_with_constructor(store_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "llmgw_limit_store_duration",
            "Limit-store round trips by store and operation",
            Unit::Seconds,
            store_duration.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "llmgw_limit_store_errors",
            "Limit-store calls that failed or timed out",
            store_errors.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            ttft,
            tpot,
            token_usage,
            tokens,
            stream_errors,
            ratelimit,
            budget_remaining,
            store_duration,
            store_errors,
            connections_closed,
        }
    }

    /// One limit decision. `tenant` is always a configured tenant's name.
    pub fn ratelimit(&self, tenant: &str, limit: &str, outcome: &'static str) {
        self.ratelimit
            .get_or_create(&RateLimitLabels {
                tenant: tenant.to_owned(),
                limit: limit.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Tokens a tenant has left in `window`.
    pub fn budget_remaining(&self, tenant: &str, window: &'static str, tokens: i64) {
        self.budget_remaining
            .get_or_create(&BudgetLabels {
                tenant: tenant.to_owned(),
                window,
            })
            .set(tokens);
    }

    /// One limit-store round trip.
    pub fn store_round_trip(&self, store: &'static str, op: &'static str, seconds: f64) {
        self.store_duration
            .get_or_create(&StoreLabels { store, op })
            .observe(seconds);
    }

    /// One failed limit-store call.
    pub fn store_error(&self, store: &'static str, op: &'static str) {
        self.store_errors
            .get_or_create(&StoreLabels { store, op })
            .inc();
    }

    /// One finished request (for streams: the committed status) and its duration.
    pub fn request(&self, route: &str, model: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                model: model.to_owned(),
                status,
            })
            .inc();
    }

    /// How long a request took, to the last byte.
    pub fn duration(&self, route: &str, model: &str, status: u16, seconds: f64) {
        self.duration
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                model: model.to_owned(),
                status,
            })
            .observe(seconds);
    }

    /// Time to the first streamed token.
    pub fn first_token(&self, model: &str, seconds: f64) {
        self.ttft
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .observe(seconds);
    }

    /// Mean time per output token after the first.
    pub fn per_output_token(&self, model: &str, seconds: f64) {
        self.tpot
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .observe(seconds);
    }

    /// Usage of one request.
    pub fn tokens(&self, model: &str, tenant: &str, input: u32, output: u32) {
        for (token_type, count) in [("input", input), ("output", output)] {
            let labels = TokenLabels {
                model: model.to_owned(),
                tenant: tenant.to_owned(),
                token_type,
            };
            self.tokens.get_or_create(&labels).inc_by(u64::from(count));
            let labels = TokenTypeLabels {
                model: model.to_owned(),
                token_type,
            };
            self.token_usage
                .get_or_create(&labels)
                .observe(f64::from(count));
        }
    }

    /// A stream that ended with an error event.
    pub fn stream_error(&self, model: &str, reason: &str) {
        self.stream_errors
            .get_or_create(&ReasonLabels {
                model: model.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The edge closed a client connection on a deadline.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ClosedLabels { reason })
            .inc();
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_gen_ai_names() {
        let metrics = GatewayMetrics::new();
        metrics.request("/v1/chat/completions", "m", 200);
        metrics.first_token("m", 0.05);
        metrics.tokens("m", "t", 3, 5);
        let text = metrics.render();
        assert!(text.contains("llmgw_http_requests_total{route=\"/v1/chat/completions\",model=\"m\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains(
                "gen_ai_server_time_to_first_token_seconds_bucket{le=\"0.06\",model=\"m\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("llmgw_tokens_total{model=\"m\",tenant=\"t\",token_type=\"output\"} 5"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
