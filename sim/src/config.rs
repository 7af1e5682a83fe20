//! Simulator knobs: every flag has a `SIM_*` environment variable.

use std::str::FromStr;
use std::time::Duration;

/// What happens to a request when every slot is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overflow {
    /// Wait in FIFO order (Ollama's behaviour), up to `max_queue` waiters, then 503.
    Queue,
    /// Refuse at once with 503 (a strictly bounded server).
    Reject,
}

/// A fault injected into every generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Answer with this HTTP status and an error body instead of generating.
    Status(u16),
    /// Send this many tokens, then cut the connection without finishing the body.
    DropAfter(usize),
    /// Send this many tokens, then go silent forever (until the client leaves).
    StallAfter(usize),
    /// Answer 200 and then bytes that are not the protocol's framing.
    Garbage,
}

/// The fault string did not parse.
#[derive(Debug, thiserror::Error)]
#[error("fault must be none, status:CODE, drop:N, stall:N or garbage; got `{0}`")]
pub struct FaultParseError(String);

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = || FaultParseError(value.to_owned());
        let (kind, arg) = value.split_once(':').unwrap_or((value, ""));
        match kind {
            "none" | "" => Ok(Self::None),
            "garbage" => Ok(Self::Garbage),
            "status" => arg.parse().map(Self::Status).map_err(|_| bad()),
            "drop" => arg.parse().map(Self::DropAfter).map_err(|_| bad()),
            "stall" => arg.parse().map(Self::StallAfter).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// Everything the simulator can be told.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "llm-sim",
    about = "Deterministic LLM upstream simulator (Ollama + OpenAI APIs)"
)]
pub struct SimConfig {
    /// Listen address.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Parallel generation slots (like OLLAMA_NUM_PARALLEL or an engine's batch size).
    #[arg(long, env = "SIM_SLOTS", default_value_t = 4)]
    pub slots: usize,
    /// What to do when all slots are busy.
    #[arg(long, env = "SIM_OVERFLOW", value_enum, default_value_t = Overflow::Queue)]
    pub overflow: Overflow,
    /// Waiters allowed in `queue` mode before 503 (Ollama's OLLAMA_MAX_QUEUE).
    #[arg(long, env = "SIM_MAX_QUEUE", default_value_t = 512)]
    pub max_queue: usize,
    /// Time to first token in milliseconds (prefill), counted once a slot is held.
    #[arg(long, env = "SIM_TTFT_MS", default_value_t = 50)]
    pub ttft_ms: u64,
    /// Prefill time per prompt token (word) in microseconds, added to the first-token time:
    /// a long prompt holds its slot longer before its first token, as on a real engine.
    #[arg(long, env = "SIM_PREFILL_US_PER_TOKEN", default_value_t = 0)]
    pub prefill_us_per_token: u64,
    /// Sequences (prompt and completion) the engine keeps in its prompt cache, like an
    /// engine's slots; a prompt that starts with one pays prefill only for the rest and
    /// reports the shared words as `cached_tokens`. 0 = no cache.
    #[arg(long, env = "SIM_PREFIX_CACHE", default_value_t = 0)]
    pub prefix_cache: usize,
    /// Time per further output token in milliseconds (decode).
    #[arg(long, env = "SIM_TPOT_MS", default_value_t = 20)]
    pub tpot_ms: u64,
    /// Time per output token added for each other generation decoding at once, in
    /// milliseconds: a continuous-batching engine's tokens slow down as its batch grows.
    #[arg(long, env = "SIM_BATCH_TPOT_MS", default_value_t = 0)]
    pub batch_tpot_ms: u64,
    /// Output length in tokens when the request sets no smaller `max_tokens`.
    #[arg(long, env = "SIM_OUTPUT_TOKENS", default_value_t = 16)]
    pub output_tokens: usize,
    /// Serve llama.cpp's load report (`/props`, `/metrics`); `false` stays silent like
    /// Ollama, whose capacity can only be learned from latency.
    #[arg(long, env = "SIM_LOAD_REPORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub load_report: bool,
    /// Answer with no delay at all (overhead benchmarks); overrides the timings.
    #[arg(long, env = "SIM_INSTANT", default_value_t = false)]
    pub instant: bool,
    /// Fault injected into every generation: none, status:CODE, drop:N, stall:N, garbage.
    #[arg(long, env = "SIM_FAULT", default_value = "none")]
    pub fault: Fault,
    /// Comma-separated model names served (Ollama tags; `name` means `name:latest`).
    #[arg(
        long,
        env = "SIM_MODELS",
        value_delimiter = ',',
        default_value = "llama3.2,smollm2:135m"
    )]
    pub models: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            slots: 4,
            overflow: Overflow::Queue,
            max_queue: 512,
            ttft_ms: 50,
            prefill_us_per_token: 0,
            prefix_cache: 0,
            tpot_ms: 20,
            batch_tpot_ms: 0,
            output_tokens: 16,
            load_report: true,
            instant: false,
            fault: Fault::None,
            models: vec!["llama3.2".to_owned(), "smollm2:135m".to_owned()],
        }
    }
}

/// Time per output token: `alone`, plus `per_other` for each other generation in the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodePace {
    pub alone: Duration,
    pub per_other: Duration,
}

impl DecodePace {
    /// The delay between two tokens while `batch` generations decode at once.
    pub fn at(self, batch: u64) -> Duration {
        self.alone.saturating_add(
            self.per_other
                .saturating_mul(u32::try_from(batch.saturating_sub(1)).unwrap_or(u32::MAX)),
        )
    }
}

impl SimConfig {
    /// Delay before the first token of a `prompt_tokens` prompt.
    pub fn time_to_first_token(&self, prompt_tokens: usize) -> Duration {
        if self.instant {
            Duration::ZERO
        } else {
            Duration::from_millis(self.ttft_ms)
                + Duration::from_micros(self.prefill_us_per_token)
                    .saturating_mul(u32::try_from(prompt_tokens).unwrap_or(u32::MAX))
        }
    }

    /// Delay between further tokens, by the batch they are decoded in.
    pub fn decode_pace(&self) -> DecodePace {
        if self.instant {
            DecodePace::default()
        } else {
            DecodePace {
                alone: Duration::from_millis(self.tpot_ms),
                per_other: Duration::from_millis(self.batch_tpot_ms),
            }
        }
    }

    /// The canonical `name:tag` of `model` if this simulator serves it.
    pub fn resolve_model(&self, model: &str) -> Option<String> {
        let wanted = canonical_tag(model);
        self.models
            .iter()
            .map(|m| canonical_tag(m))
            .find(|m| *m == wanted)
    }
}

fn canonical_tag(model: &str) -> String {
    if model.contains(':') {
        model.to_owned()
    } else {
        format!("{model}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_grammar() {
        assert_eq!("none".parse::<Fault>().unwrap(), Fault::None);
        assert_eq!("status:503".parse::<Fault>().unwrap(), Fault::Status(503));
        assert_eq!("drop:3".parse::<Fault>().unwrap(), Fault::DropAfter(3));
        assert_eq!("stall:0".parse::<Fault>().unwrap(), Fault::StallAfter(0));
        assert_eq!("garbage".parse::<Fault>().unwrap(), Fault::Garbage);
        assert!("drop:x".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
    }

    #[test]
    fn tokens_slow_down_as_the_batch_grows() {
        let config = SimConfig {
            tpot_ms: 10,
            batch_tpot_ms: 30,
            ..SimConfig::default()
        };
        let pace = config.decode_pace();
        assert_eq!(pace.at(1), Duration::from_millis(10));
        assert_eq!(pace.at(4), Duration::from_millis(100));
        let instant = SimConfig {
            instant: true,
            ..config
        };
        assert_eq!(instant.decode_pace().at(4), Duration::ZERO);
    }

    #[test]
    fn models_resolve_with_or_without_latest_tag() {
        let config = SimConfig::default();
        assert_eq!(
            config.resolve_model("llama3.2").as_deref(),
            Some("llama3.2:latest")
        );
        assert_eq!(
            config.resolve_model("llama3.2:latest").as_deref(),
            Some("llama3.2:latest")
        );
        assert_eq!(
            config.resolve_model("smollm2:135m").as_deref(),
            Some("smollm2:135m")
        );
        assert_eq!(config.resolve_model("gpt-9"), None);
    }
}
