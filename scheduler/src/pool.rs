//! A backend pool: one admission state in front of several endpoints, and the load balancer
//! that picks an endpoint for each admitted request.
//!
//! Choice among endpoints that answer their probe and whose breaker lets a request through,
//! skipping those already tried for this request: with prefix affinity, the endpoint that
//! served the request's longest known prefix if its load allows ([`crate::affinity`]); else
//! one whose engine is not saturated, then (for a request with a time-per-output-token
//! objective) one whose batch would meet it, then one that has the model loaded (Ollama's
//! `/api/ps`; avoids model-swap thrash), then the least loaded relative to its slots (learned
//! or configured), then the fastest first token (moving average).

use std::sync::Arc;
use std::time::Duration;

use crate::admission::Admission;
use crate::affinity::{Affinity, PrefixKey};
use crate::endpoint::Endpoint;

/// Prompts up to this many tokens are ordinary work for any engine: a first-token timeout on
/// one of them is the engine's fault.
pub const ORDINARY_PROMPT: u32 = 1024;

/// One pool of generation slots and the endpoints behind them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub admission: Arc<Admission>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Prefix affinity (`prefix_affinity = true`), if on.
    pub affinity: Option<Affinity>,
}

impl Pool {
    /// Slots of the endpoints that can serve now (a saturated one only counts those it holds).
    pub fn capacity(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.available())
            .map(|e| e.usable_slots())
            .sum()
    }

    /// Some endpoint answers its probe and its breaker is not open (it may be saturated).
    pub fn serving(&self) -> bool {
        self.endpoints.iter().any(|e| e.available())
    }

    /// Re-reads capacity into admission after health, breaker or load changes.
    pub fn refresh_capacity(&self) {
        self.admission.set_slots(self.capacity(), self.serving());
    }

    /// The time a first-token budget on `endpoint` grows by for a `prompt_tokens` prompt: its
    /// prefill at the larger of the configured rate and the one the endpoint showed.
    pub fn prefill_allowance(&self, endpoint: &Endpoint, prompt_tokens: u32) -> Duration {
        let configured = self.admission.configured_prefill();
        let learned = endpoint.pace.timings().prefill_per_token;
        configured
            .max(learned)
            .unwrap_or_default()
            .saturating_mul(prompt_tokens)
    }

    /// Whether a `prompt_tokens` prompt is beyond what `endpoint` has shown it serves: more
    /// than [`ORDINARY_PROMPT`] tokens and more than twice the largest prompt it answered. A
    /// first-token timeout of such a request says the request is heavy, not that the engine
    /// is sick.
    pub fn is_heavy(&self, endpoint: &Endpoint, prompt_tokens: u32) -> bool {
        prompt_tokens > ORDINARY_PROMPT.max(endpoint.pace.proven_prompt().saturating_mul(2))
    }

    /// `endpoint` (an index) served `prefix`: later turns may go back to it.
    pub fn remember(&self, prefix: Option<&PrefixKey>, endpoint: usize) {
        if let (Some(affinity), Some(prefix)) = (&self.affinity, prefix) {
            affinity.record(prefix, endpoint);
        }
    }

    /// The endpoint for the next attempt at `model`, skipping indexes in `tried`; with
    /// affinity, the one that served the longest part of `prefix` first if its load allows;
    /// with a per-token objective `tpot`, one whose batch meets it before one known to miss it.
    pub fn pick(
        &self,
        model: &str,
        tried: &[usize],
        prefix: Option<&PrefixKey>,
        tpot: Option<Duration>,
    ) -> Option<(usize, Arc<Endpoint>)> {
        // Each endpoint's standing is read once (its loaded models sit behind a lock), not
        // once per comparison.
        let mut ranked: Vec<(Standing, usize, &Arc<Endpoint>)> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(index, endpoint)| {
                !tried.contains(index) && endpoint.probe_ok() && endpoint.breaker.counts()
            })
            .map(|(index, endpoint)| (Standing::of(endpoint, model, tpot), index, endpoint))
            .collect();
        ranked.sort_by(|(a, ..), (b, ..)| a.cmp(b));
        let mut candidates: Vec<(usize, &Arc<Endpoint>)> = ranked
            .into_iter()
            .map(|(_, index, endpoint)| (index, endpoint))
            .collect();
        if let (Some(affinity), Some(prefix)) = (&self.affinity, prefix)
            && let Some((target, _depth)) = affinity.lookup(prefix)
            && let Some(at) = candidates
                .iter()
                .position(|(index, e)| *index == target && !e.capacity.saturated())
        {
            let total = candidates.iter().fold((0, 0), |(out, slots), (_, e)| {
                (out + e.outstanding(), slots + e.slots())
            });
            let chosen = &candidates[at].1;
            if affinity.within_bound((chosen.outstanding(), chosen.slots()), total) {
                let preferred = candidates.remove(at);
                candidates.insert(0, preferred);
            }
        }
        // The breaker has the last word (a half-open endpoint lets one trial through).
        candidates
            .into_iter()
            .find(|(_, endpoint)| endpoint.breaker.allow())
            .map(|(index, endpoint)| (index, Arc::clone(endpoint)))
    }
}

/// How good a choice an endpoint is now, best first: one whose engine is not saturated (a
/// saturated one only if nothing else can take it: its slot was counted before its report
/// came), whose batch is not known to miss the request's per-token objective, that has the
/// model loaded, with the least load relative to its slots, then the fastest first token.
struct Standing {
    saturated: bool,
    misses_objective: bool,
    unloaded: bool,
    load: f64,
    ttft: std::time::Duration,
}

impl Standing {
    fn of(endpoint: &Endpoint, model: &str, tpot: Option<Duration>) -> Self {
        Self {
            saturated: endpoint.capacity.saturated(),
            misses_objective: tpot.is_some_and(|objective| {
                endpoint
                    .pace
                    .decode_in_batch(endpoint.outstanding() + 1)
                    .is_some_and(|pace| pace > objective)
            }),
            unloaded: !endpoint.has_loaded(model),
            load: endpoint.load(),
            ttft: endpoint.ttft_estimate(),
        }
    }

    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.saturated
            .cmp(&other.saturated)
            .then(self.misses_objective.cmp(&other.misses_objective))
            .then(self.unloaded.cmp(&other.unloaded))
            .then(self.load.total_cmp(&other.load))
            .then(self.ttft.cmp(&other.ttft))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::admission::Limits;
    use crate::backend::ollama::OllamaBackend;
    use crate::routing::config::{BreakerConfig, EndpointConfig, EndpointKind, Slots};

    fn pool(slots: &[usize]) -> Pool {
        let endpoints = slots
            .iter()
            .enumerate()
            .map(|(i, slots)| {
                let url = format!("http://127.0.0.1:{}", 1000 + i);
                let backend = Arc::new(OllamaBackend::new(&url, Duration::from_secs(1)).unwrap());
                let config = EndpointConfig {
                    url,
                    kind: EndpointKind::Ollama,
                    slots: Slots::Fixed(*slots),
                    api_key_env: None,
                    schema_format: Default::default(),
                };
                Arc::new(Endpoint::new(
                    config,
                    backend,
                    BreakerConfig {
                        failures: 1,
                        open_ms: 60_000,
                    },
                ))
            })
            .collect();
        Pool {
            affinity: None,
            name: "p".into(),
            admission: Admission::new("p", Limits::new(8, 8, Duration::from_secs(1))),
            endpoints,
        }
    }

    #[tokio::test]
    async fn least_loaded_relative_to_slots_then_loaded_model_first() {
        let pool = pool(&[2, 8]);
        let _a = pool.endpoints[0].begin();
        let _b = pool.endpoints[1].begin();
        let _c = pool.endpoints[1].begin();
        // 1/2 vs 2/8: the bigger endpoint is less loaded.
        assert_eq!(pool.pick("m", &[], None, None).unwrap().0, 1);
        pool.endpoints[0].set_probe(true, Some(vec!["m:latest".into()]));
        assert_eq!(
            pool.pick("m", &[], None, None).unwrap().0,
            0,
            "model already loaded wins"
        );
        assert_eq!(
            pool.pick("m", &[0], None, None).unwrap().0,
            1,
            "tried endpoints are skipped"
        );
        assert!(pool.pick("m", &[0, 1], None, None).is_none());
    }

    #[tokio::test]
    async fn a_per_token_objective_prefers_a_batch_that_meets_it_over_a_lighter_load() {
        let pool = pool(&[4, 4]);
        // Endpoint 0 is idle but slow; endpoint 1 already serves one and is fast at two.
        pool.endpoints[0]
            .pace
            .record_decode_in_batch(1.0, 11, Duration::from_millis(1000));
        pool.endpoints[1]
            .pace
            .record_decode_in_batch(2.0, 11, Duration::from_millis(100));
        let _busy = pool.endpoints[1].begin();
        assert_eq!(
            pool.pick("m", &[], None, None).unwrap().0,
            0,
            "least loaded"
        );
        let objective = Some(Duration::from_millis(50));
        assert_eq!(pool.pick("m", &[], None, objective).unwrap().0, 1);
        // When every batch misses it, the usual order decides.
        let strict = Some(Duration::from_millis(5));
        assert_eq!(pool.pick("m", &[], None, strict).unwrap().0, 0);
    }

    #[tokio::test]
    async fn unhealthy_and_open_endpoints_leave_capacity_and_choice() {
        let pool = pool(&[2, 8]);
        assert_eq!(pool.capacity(), 10);
        pool.endpoints[1].set_probe(false, None);
        assert_eq!(pool.capacity(), 2);
        assert_eq!(pool.pick("m", &[], None, None).unwrap().0, 0);
        pool.endpoints[0].breaker.on_failure();
        assert_eq!(pool.capacity(), 0);
        assert!(pool.pick("m", &[], None, None).is_none());
    }
}
