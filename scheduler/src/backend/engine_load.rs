//! [`EngineLoad`]: what an engine says about its own batch — requests running, requests
//! waiting inside it, KV-cache use, how many sequences it runs at once — read from the
//! Prometheus text of its `/metrics` (and llama.cpp's `/props`). One parser for the names of
//! every engine we know; an engine that reports none of them reports nothing.
//!
//! | engine | running | waiting | KV cache used (0–1) |
//! |---|---|---|---|
//! | llama.cpp `llama-server --metrics` | `llamacpp:requests_processing` | `llamacpp:requests_deferred` | — |
//! | vLLM | `vllm:num_requests_running` | `vllm:num_requests_waiting` | `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before 0.10) |
//! | SGLang | `sglang:num_running_reqs` | `sglang:num_queue_reqs` | `sglang:token_usage` |
//! | TGI | `tgi_batch_current_size` | `tgi_queue_size` | — |

/// One reading of an engine's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineLoad {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    /// KV-cache use, 0 to 1.
    pub kv_cache: Option<f64>,
    /// Sequences it runs at once (llama.cpp `/props` `total_slots`).
    pub total_slots: Option<usize>,
}

const RUNNING: [&str; 4] = [
    "llamacpp:requests_processing",
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "tgi_batch_current_size",
];
const WAITING: [&str; 4] = [
    "llamacpp:requests_deferred",
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "tgi_queue_size",
];
const KV_CACHE: [&str; 3] = [
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
];

impl EngineLoad {
    /// The load in `metrics` (Prometheus text); `None` if it names none of the known series.
    /// Series with labels (one per model, as vLLM labels them) are summed; KV use takes the
    /// highest.
    pub fn from_metrics(metrics: &str) -> Option<Self> {
        let mut load = Self::default();
        for line in metrics.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            let name = series.split('{').next().unwrap_or(series).trim();
            if RUNNING.contains(&name) {
                *load.running.get_or_insert(0.0) += value;
            } else if WAITING.contains(&name) {
                *load.waiting.get_or_insert(0.0) += value;
            } else if KV_CACHE.contains(&name) {
                let used = load.kv_cache.get_or_insert(0.0);
                *used = used.max(value);
            }
        }
        (load != Self::default()).then_some(load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_engines_names() {
        let llama = "# HELP llamacpp:requests_processing Number of requests processing.\n\
                     # TYPE llamacpp:requests_processing gauge\n\
                     llamacpp:requests_processing 4\n\
                     llamacpp:requests_deferred 2\n\
                     llamacpp:prompt_tokens_total 1200\n";
        assert_eq!(
            EngineLoad::from_metrics(llama),
            Some(EngineLoad {
                running: Some(4.0),
                waiting: Some(2.0),
                ..EngineLoad::default()
            })
        );
        let vllm = "vllm:num_requests_running{model_name=\"a\"} 3.0\n\
                    vllm:num_requests_running{model_name=\"b\"} 1.0\n\
                    vllm:num_requests_waiting{model_name=\"a\"} 0.0\n\
                    vllm:kv_cache_usage_perc{model_name=\"a\"} 0.97\n";
        let load = EngineLoad::from_metrics(vllm).unwrap();
        assert_eq!(
            (load.running, load.waiting, load.kv_cache),
            (Some(4.0), Some(0.0), Some(0.97))
        );
        let sglang = "sglang:num_running_reqs 8\nsglang:num_queue_reqs 5\nsglang:token_usage 0.4\n";
        assert_eq!(EngineLoad::from_metrics(sglang).unwrap().waiting, Some(5.0));
        assert_eq!(
            EngineLoad::from_metrics("tgi_queue_size 3\ntgi_batch_current_size 16\n")
                .unwrap()
                .running,
            Some(16.0)
        );
        assert_eq!(
            EngineLoad::from_metrics("process_cpu_seconds_total 1\nbogus\n"),
            None
        );
        assert_eq!(
            EngineLoad::from_metrics("llamacpp:requests_deferred NaN\n"),
            None
        );
    }
}
