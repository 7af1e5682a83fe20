//! `SCHEDULER_CONFIG`: models, backend pools and their endpoints, tenant routes, timeouts.
//! Plain data with `deny_unknown_fields`; [`FileConfig::load`] parses and validates, and every
//! error names the key (`pool[1].endpoint[0].url: …`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Defaults for every model.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolConfig>,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Fair-share weights by tenant.
    #[serde(default)]
    pub tenant_weights: BTreeMap<String, u32>,
    /// How prompt and completion tokens count in fair share.
    #[serde(default)]
    pub fair_share: FairShareConfig,
    /// First-token objectives by class, for requests that send none.
    #[serde(default)]
    pub objectives: ObjectivesConfig,
}

/// `[fair_share]`: a tenant's virtual time advances by `prompt_weight × prompt tokens +
/// completion_weight × completion tokens` per request.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FairShareConfig {
    #[serde(default = "one")]
    pub prompt_weight: f64,
    #[serde(default = "one")]
    pub completion_weight: f64,
}

impl Default for FairShareConfig {
    fn default() -> Self {
        Self {
            prompt_weight: 1.0,
            completion_weight: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// `[objectives]`: the first-token objective (ms) of each class when the request sets none
/// (`x-slo-ttft-ms`); unset = none.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesConfig {
    pub critical_ttft_ms: Option<u64>,
    pub interactive_ttft_ms: Option<u64>,
    pub batch_ttft_ms: Option<u64>,
}

/// Timeouts in milliseconds; unset fields inherit (model → file defaults → built-in).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub connect_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

/// Tries before the first token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts (other endpoints, then fallback models) before the first token.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
        }
    }
}

fn default_attempts() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: usize,
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    #[serde(default = "default_aging_ms")]
    pub priority_aging_ms: u64,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Prefill time per 1,000 prompt tokens the first-token budget grows by, until the
    /// endpoint's own rate is learned (the larger of the two is used).
    #[serde(default)]
    pub prefill_ms_per_1k_tokens: Option<u64>,
    /// Send a conversation back to the endpoint that served its beginning (its engine still
    /// holds that prefix in cache), within `affinity_epsilon` of the average load.
    #[serde(default)]
    pub prefix_affinity: bool,
    /// How far above the pool's average load affinity may load an endpoint: `(1 + ε)` ×.
    #[serde(default = "default_affinity_epsilon")]
    pub affinity_epsilon: f64,
}

fn default_affinity_epsilon() -> f64 {
    0.25
}

fn default_max_queue() -> usize {
    256
}
fn default_max_queue_bytes() -> usize {
    64 << 20
}
fn default_queue_timeout_ms() -> u64 {
    30_000
}
fn default_aging_ms() -> u64 {
    10_000
}

/// Backend wire protocol.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// Ollama's native API (`/api/chat`).
    Ollama,
    /// The OpenAI-compatible API (`/v1/chat/completions`): vLLM, TGI, llama.cpp, SGLang, OpenAI…
    Openai,
}

/// An endpoint's `slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slots {
    /// At most this many at once.
    Fixed(usize),
    /// As many as the engine reports it runs (`/props`, its metrics), or as its latency
    /// shows, up to [`AUTO_SLOTS_CEILING`].
    Auto,
}

/// The most slots `"auto"` ever learns for one endpoint.
pub const AUTO_SLOTS_CEILING: usize = 64;

impl Slots {
    /// The most it may run at once.
    pub fn ceiling(self) -> usize {
        match self {
            Self::Fixed(slots) => slots,
            Self::Auto => AUTO_SLOTS_CEILING,
        }
    }
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Word(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(slots) => Ok(Self::Fixed(slots)),
            Raw::Word(word) if word == "auto" => Ok(Self::Auto),
            Raw::Word(word) => Err(serde::de::Error::custom(format!(
                "slots must be a number or \"auto\", got \"{word}\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: String,
    pub kind: EndpointKind,
    /// Generations it runs at once (Ollama's OLLAMA_NUM_PARALLEL, the engine's batch size):
    /// a number is the most ever sent at once (an engine that reports fewer runs fewer), and
    /// `"auto"` takes what the engine reports or its latency shows.
    pub slots: Slots,
    /// Environment variable holding the API key sent as a bearer token.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// How an OpenAI-compatible engine is asked for JSON matching a schema.
    #[serde(default)]
    pub schema_format: SchemaFormat,
}

/// The spelling of "answer with JSON matching this schema" an OpenAI-compatible engine takes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFormat {
    /// OpenAI's `{"type": "json_schema", "json_schema": {name, schema, strict}}` (vLLM, SGLang,
    /// llama.cpp's llama-server, OpenAI).
    #[default]
    JsonSchema,
    /// `{"type": "json_object", "schema": {…}}` (llama-cpp-python's server, which refuses the
    /// first spelling).
    JsonObjectSchema,
}

/// Three-state circuit breaker thresholds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long it stays open before one trial request (half-open).
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_failures(),
            open_ms: default_open_ms(),
        }
    }
}

fn default_failures() -> u32 {
    3
}
fn default_open_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public name clients use.
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Version used when no weight split applies; defaults to the first version.
    #[serde(default)]
    pub default_version: Option<String>,
    /// Public models tried, in order, when every endpoint of this one failed before the first
    /// token.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(rename = "version")]
    pub versions: Vec<VersionConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    pub name: String,
    pub pool: String,
    /// Model name the backend knows (e.g. `llama3.2:3b`).
    pub upstream: String,
    /// Share of unpinned traffic (canary splits); all zero = the default version only.
    #[serde(default)]
    pub weight: u32,
}

/// A tenant's route: pin it to a version and/or a pool, for one model or all.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub tenant: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
}

/// The file could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl FileConfig {
    /// Reads, parses and validates the file at `path`, including that every `api_key_env`
    /// is set in this process's environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let checked =
            Self::parse(&text).and_then(|config| config.check_environment().map(|()| config));
        checked.map_err(|err| match err {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: shown.clone(),
                message,
            },
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                path: shown.clone(),
                key,
                message,
            },
            read @ ConfigError::Read { .. } => read,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: String::new(),
            message: err.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every endpoint's `api_key_env` names a variable that is set.
    pub fn check_environment(&self) -> Result<(), ConfigError> {
        for (p, pool) in self.pools.iter().enumerate() {
            for (e, endpoint) in pool.endpoints.iter().enumerate() {
                if let Some(var) = &endpoint.api_key_env
                    && std::env::var(var).is_err()
                {
                    return Err(ConfigError::Invalid {
                        path: String::new(),
                        key: format!("pool[{p}].endpoint[{e}].api_key_env"),
                        message: format!("environment variable `{var}` is not set"),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| {
            Err(ConfigError::Invalid {
                path: String::new(),
                key,
                message,
            })
        };
        if self.pools.is_empty() {
            return invalid("pool".into(), "at least one [[pool]] is required".into());
        }
        for (key, ms) in [
            (
                "objectives.critical_ttft_ms",
                self.objectives.critical_ttft_ms,
            ),
            (
                "objectives.interactive_ttft_ms",
                self.objectives.interactive_ttft_ms,
            ),
            ("objectives.batch_ttft_ms", self.objectives.batch_ttft_ms),
        ] {
            if ms.is_some_and(|ms| !(1..=3_600_000).contains(&ms)) {
                return invalid(key.into(), "must be between 1 and 3600000 ms".into());
            }
        }
        for (key, weight) in [
            ("fair_share.prompt_weight", self.fair_share.prompt_weight),
            (
                "fair_share.completion_weight",
                self.fair_share.completion_weight,
            ),
        ] {
            if !(0.0..=1000.0).contains(&weight) {
                return invalid(
                    key.into(),
                    format!("must be between 0 and 1000, got {weight}"),
                );
            }
        }
        let mut pools = HashSet::new();
        for (p, pool) in self.pools.iter().enumerate() {
            if pool.name.trim().is_empty() || !pools.insert(pool.name.as_str()) {
                return invalid(
                    format!("pool[{p}].name"),
                    format!("must be non-empty and unique, got `{}`", pool.name),
                );
            }
            if pool.endpoints.is_empty() {
                return invalid(
                    format!("pool[{p}].endpoint"),
                    "at least one endpoint is required".into(),
                );
            }
            if !(0.0..=10.0).contains(&pool.affinity_epsilon) {
                return invalid(
                    format!("pool[{p}].affinity_epsilon"),
                    format!("must be between 0 and 10, got {}", pool.affinity_epsilon),
                );
            }
            if pool
                .prefill_ms_per_1k_tokens
                .is_some_and(|ms| !(1..=3_600_000).contains(&ms))
            {
                return invalid(
                    format!("pool[{p}].prefill_ms_per_1k_tokens"),
                    "must be between 1 and 3600000".into(),
                );
            }
            if pool.breaker.failures == 0 {
                return invalid(
                    format!("pool[{p}].breaker.failures"),
                    "must be at least 1".into(),
                );
            }
            if pool.queue_timeout_ms == 0 {
                return invalid(
                    format!("pool[{p}].queue_timeout_ms"),
                    "must be at least 1".into(),
                );
            }
            for (e, endpoint) in pool.endpoints.iter().enumerate() {
                let key = format!("pool[{p}].endpoint[{e}]");
                if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
                    return invalid(
                        format!("{key}.url"),
                        format!("must be an http(s) URL, got `{}`", endpoint.url),
                    );
                }
                if endpoint.slots == Slots::Fixed(0) {
                    return invalid(format!("{key}.slots"), "must be at least 1".into());
                }
            }
        }
        let mut names = HashSet::new();
        for (m, model) in self.models.iter().enumerate() {
            for name in std::iter::once(&model.name).chain(&model.aliases) {
                if name.trim().is_empty() || name.contains('@') || !names.insert(name.as_str()) {
                    return invalid(
                        format!("model[{m}]"),
                        format!(
                            "name or alias `{name}` must be non-empty, without `@`, and unique"
                        ),
                    );
                }
            }
            if model.versions.is_empty() {
                return invalid(
                    format!("model[{m}].version"),
                    "at least one version is required".into(),
                );
            }
            let mut versions = HashSet::new();
            for (v, version) in model.versions.iter().enumerate() {
                if !versions.insert(version.name.as_str()) {
                    return invalid(
                        format!("model[{m}].version[{v}].name"),
                        format!("`{}` is repeated", version.name),
                    );
                }
                if !pools.contains(version.pool.as_str()) {
                    return invalid(
                        format!("model[{m}].version[{v}].pool"),
                        format!("no pool named `{}`", version.pool),
                    );
                }
            }
            if let Some(default) = &model.default_version
                && !versions.contains(default.as_str())
            {
                return invalid(
                    format!("model[{m}].default_version"),
                    format!("no version named `{default}`"),
                );
            }
        }
        for (m, model) in self.models.iter().enumerate() {
            for fallback in &model.fallbacks {
                if !names.contains(fallback.as_str()) || fallback == &model.name {
                    return invalid(
                        format!("model[{m}].fallbacks"),
                        format!("`{fallback}` is not another model"),
                    );
                }
            }
        }
        for (r, route) in self.routes.iter().enumerate() {
            if let Some(model) = &route.model
                && !names.contains(model.as_str())
            {
                return invalid(
                    format!("route[{r}].model"),
                    format!("no model named `{model}`"),
                );
            }
            if let Some(pool) = &route.pool
                && !pools.contains(pool.as_str())
            {
                return invalid(
                    format!("route[{r}].pool"),
                    format!("no pool named `{pool}`"),
                );
            }
            if route.version.is_some() && route.model.is_none() {
                return invalid(
                    format!("route[{r}].version"),
                    "a version pin needs `model`".into(),
                );
            }
        }
        for (tenant, weight) in &self.tenant_weights {
            if !(1..=1000).contains(weight) {
                return invalid(
                    format!("tenant_weights.{tenant}"),
                    format!("must be 1 to 1000, got {weight}"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[pool]]
        name = "gpu"
        [[pool.endpoint]]
        url = "http://localhost:11434"
        kind = "ollama"
        slots = 4

        [[model]]
        name = "llama3.2"
        [[model.version]]
        name = "stable"
        pool = "gpu"
        upstream = "llama3.2:3b"
    "#;

    fn error(text: &str) -> String {
        FileConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_file_parses_with_defaults() {
        let config = FileConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.pools[0].max_queue, 256);
        assert_eq!(
            config.pools[0].breaker,
            BreakerConfig {
                failures: 3,
                open_ms: 10_000
            }
        );
        assert_eq!(config.retry.attempts, 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert!(error(&format!("{MINIMAL}\nbogus = 1")).contains("unknown field `bogus`"));
        assert!(
            error(&MINIMAL.replace("slots = 4", "slots = 0"))
                .contains("pool[0].endpoint[0].slots: must be at least 1")
        );
        assert!(
            error(&MINIMAL.replace("pool = \"gpu\"", "pool = \"cpu\""))
                .contains("model[0].version[0].pool: no pool named `cpu`")
        );
        assert!(
            error(&MINIMAL.replace("kind = \"ollama\"", "kind = \"tgi\""))
                .contains("unknown variant `tgi`")
        );
        assert!(
            error(&MINIMAL.replace("http://localhost", "localhost"))
                .contains("pool[0].endpoint[0].url")
        );
        assert!(
            error(&format!("[objectives]\ninteractive_ttft_ms = 0\n{MINIMAL}"))
                .contains("objectives.interactive_ttft_ms: must be between 1 and 3600000 ms")
        );
        assert!(
            error(&format!(
                "[fair_share]\ncompletion_weight = -1.0\n{MINIMAL}"
            ))
            .contains("fair_share.completion_weight")
        );
        assert!(
            error(&MINIMAL.replace(
                "name = \"gpu\"",
                "name = \"gpu\"\nprefill_ms_per_1k_tokens = 0"
            ))
            .contains("pool[0].prefill_ms_per_1k_tokens")
        );
        let bad_route = format!("{MINIMAL}\n[[route]]\ntenant = \"a\"\npool = \"nope\"");
        assert!(error(&bad_route).contains("route[0].pool: no pool named `nope`"));
        let missing_key = MINIMAL.replace(
            "slots = 4",
            "slots = 4\napi_key_env = \"LLMGW_TEST_SURELY_UNSET\"",
        );
        let parsed = FileConfig::parse(&missing_key).unwrap();
        let err = parsed.check_environment().unwrap_err().to_string();
        assert!(err.contains("pool[0].endpoint[0].api_key_env: environment variable `LLMGW_TEST_SURELY_UNSET` is not set"), "{err}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example = include_str!("../../../deploy/scheduler.example.toml");
        let config = FileConfig::parse(example).unwrap();
        assert_eq!(config.pools.len(), 3);
        assert!(config.models.iter().any(|m| m.name == "llama3.2"));
    }

    #[test]
    fn the_kubernetes_config_is_valid() {
        let text = include_str!("../../../deploy/kubernetes/base/scheduler.toml");
        let config = FileConfig::parse(text).unwrap();
        assert_eq!(config.pools.len(), 1);
    }
}
