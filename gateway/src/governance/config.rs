//! The `GATEWAY_CONFIG` file: API keys, tenants and their limits, where counters live. TOML,
//! the same conventions as `SCHEDULER_CONFIG`: unknown keys are refused naming the key, and a
//! file that does not validate is refused as a whole (at start-up: the gateway does not start;
//! on reload: the running policy stays).

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `api_key` (the default when the file exists) or `none` (open mode).
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default)]
    pub open_mode: OpenModeConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub accounting: AccountingConfig,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyConfig>,
    #[serde(default, rename = "tokenizer")]
    pub tokenizers: Vec<TokenizerConfig>,
}

/// One `[[tokenizer]]`: a Hugging Face `tokenizer.json` that counts prompt tokens exactly for
/// the models it names, instead of the byte heuristic.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Model name globs this tokenizer is for (the first matching `[[tokenizer]]` wins).
    pub models: Vec<String>,
    /// Path of the `tokenizer.json` (read at start-up and on reload).
    pub file: String,
}

/// How callers are identified.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every request needs a configured key; the key decides the tenant.
    #[default]
    ApiKey,
    /// Open mode: `x-tenant-id` and `x-priority` (clamped) decide.
    None,
}

/// `[open_mode]`, used only with `auth = "none"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OpenModeConfig {
    /// The highest class `x-priority` may ask for; higher asks are lowered to it.
    #[serde(default = "interactive")]
    pub max_priority: PriorityClass,
}

impl Default for OpenModeConfig {
    fn default() -> Self {
        Self {
            max_priority: PriorityClass::Interactive,
        }
    }
}

fn interactive() -> PriorityClass {
    PriorityClass::Interactive
}

/// `[store]`: where limit counters live.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `redis://host:port/db`; absent = in memory (exact for one gateway only).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// What a request gets while the store cannot answer.
    #[serde(default)]
    pub on_error: OnError,
    /// Longest wait for one store round trip before `on_error` applies.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every Redis key (several deployments may share one Redis).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_error: OnError::Deny,
            timeout_ms: default_store_timeout_ms(),
            key_prefix: default_key_prefix(),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    // The URL may carry a password: only whether one is set is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("redis", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("on_error", &self.on_error)
            .field("timeout_ms", &self.timeout_ms)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

fn default_store_timeout_ms() -> u64 {
    250
}

fn default_key_prefix() -> String {
    "llmgw".to_owned()
}

/// What happens while the store is unreachable.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse with 503 `limits_unavailable`.
    #[default]
    Deny,
    /// Serve, counting in this gateway's memory, and say so (metric and warning).
    Allow,
}

/// `[accounting]`: how tokens are estimated and reservations expire.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountingConfig {
    /// Prompt bytes counted as one token when reserving. 1 (the default) is an upper bound for
    /// byte-level BPE tokenizers, so a reservation never undercounts; larger values reserve
    /// less and may leave prompt-side debt (charged at settlement).
    #[serde(default = "one")]
    pub prompt_bytes_per_token: f64,
    /// A reservation a gateway never settled (it died) expires after this long; it stays
    /// charged what it reserved. Must exceed the longest request.
    #[serde(default = "default_reservation_ttl_ms")]
    pub reservation_ttl_ms: u64,
    /// Completion cap of tenants with token limits but no `max_tokens`.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            prompt_bytes_per_token: 1.0,
            reservation_ttl_ms: default_reservation_ttl_ms(),
            default_max_tokens: default_max_tokens(),
        }
    }
}

fn one() -> f64 {
    1.0
}

fn default_reservation_ttl_ms() -> u64 {
    900_000
}

fn default_max_tokens() -> u32 {
    4096
}

/// A priority class as written in the file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    // Declared lowest first, so `Ord` ranks them.
    Batch,
    Interactive,
    Critical,
}

/// One `[[tenant]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Class of this tenant's requests when they send no `x-priority`.
    #[serde(default = "interactive")]
    pub priority: PriorityClass,
    /// The highest class `x-priority` may ask for (else 403 `priority_not_allowed`).
    #[serde(default)]
    pub max_priority: Option<PriorityClass>,
    /// Glob allow-list of model names (`*` and `?`); absent = every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// Cap on a request's completion tokens, sent upstream as its limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    /// Engine options (fields outside OpenAI's schema, e.g. `num_ctx`) this tenant may pass.
    #[serde(default)]
    pub allowed_options: Vec<String>,
}

/// One `[[key]]`: the SHA-256 of a key, never the key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub tenant: String,
    /// 64 hex digits, as printed by `gateway hash-key <KEY>`.
    pub sha256: String,
    /// A label for logs (which key was used), never the key.
    #[serde(default)]
    pub name: Option<String>,
    /// May read the status page and `/status.json` (every tenant's state).
    #[serde(default)]
    pub admin: bool,
}

/// The file could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}` {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl GatewayFile {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|err| match err {
            FileError::Parse { message, .. } => FileError::Parse {
                path: shown.clone(),
                message,
            },
            FileError::Invalid { key, message, .. } => FileError::Invalid {
                path: shown.clone(),
                key,
                message,
            },
            read @ FileError::Read { .. } => read,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let file: Self = toml::from_str(text).map_err(|err| FileError::Parse {
            path: String::new(),
            message: err.to_string(),
        })?;
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), FileError> {
        let invalid = |key: String, message: &str| {
            Err(FileError::Invalid {
                path: String::new(),
                key,
                message: message.to_owned(),
            })
        };
        if let Some(url) = &self.store.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid(
                "store.redis_url".into(),
                "must be a redis:// or rediss:// URL",
            );
        }
        if self.store.timeout_ms == 0 {
            return invalid("store.timeout_ms".into(), "must be at least 1");
        }
        if !(self.accounting.prompt_bytes_per_token >= 1.0
            && self.accounting.prompt_bytes_per_token <= 16.0)
        {
            return invalid(
                "accounting.prompt_bytes_per_token".into(),
                "must be between 1 and 16",
            );
        }
        if self.accounting.reservation_ttl_ms < 1000 {
            return invalid(
                "accounting.reservation_ttl_ms".into(),
                "must be at least 1000",
            );
        }
        if self.accounting.default_max_tokens == 0 {
            return invalid("accounting.default_max_tokens".into(), "must be at least 1");
        }
        let mut names = HashSet::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let at = |field: &str| format!("tenant[{i}].{field}");
            if !crate::caller::valid_token(&tenant.name) {
                return invalid(
                    at("name"),
                    "must be 1 to 64 characters of letters, digits, `.`, `_` or `-`",
                );
            }
            if tenant.name == llmgw_proto::OVERFLOW_TENANT {
                return invalid(
                    at("name"),
                    "`other` is reserved: it labels unlisted tenants in metrics and the status page",
                );
            }
            if !names.insert(tenant.name.as_str()) {
                return invalid(at("name"), "names a tenant twice");
            }
            if tenant.max_priority.is_some_and(|max| max < tenant.priority) {
                return invalid(at("max_priority"), "is below the tenant's `priority`");
            }
            for (field, value) in [
                ("rpm", tenant.rpm),
                ("tpm", tenant.tpm),
                ("max_concurrent", tenant.max_concurrent),
                ("tokens_per_day", tenant.tokens_per_day),
                ("tokens_per_month", tenant.tokens_per_month),
            ] {
                if value == Some(0) {
                    return invalid(at(field), "must be at least 1 (omit it for no limit)");
                }
            }
            if tenant.max_tokens == Some(0) {
                return invalid(at("max_tokens"), "must be at least 1");
            }
            if let Some(models) = &tenant.models
                && models.iter().any(|m| m.trim().is_empty())
            {
                return invalid(at("models"), "must not contain an empty pattern");
            }
        }
        let mut hashes = HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if !names.contains(key.tenant.as_str()) {
                return invalid(format!("key[{i}].tenant"), "names no `[[tenant]]`");
            }
            let hex = key.sha256.to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    format!("key[{i}].sha256"),
                    "must be 64 hex digits (`gateway hash-key <KEY>` prints it)",
                );
            }
            if !hashes.insert(hex) {
                return invalid(format!("key[{i}].sha256"), "is listed twice");
            }
        }
        for (i, tokenizer) in self.tokenizers.iter().enumerate() {
            if tokenizer.models.is_empty() || tokenizer.models.iter().any(|m| m.trim().is_empty()) {
                return invalid(
                    format!("tokenizer[{i}].models"),
                    "must list at least one non-empty model pattern",
                );
            }
        }
        if self.auth == AuthMode::ApiKey && self.keys.is_empty() {
            return invalid(
                "key".into(),
                "is empty while `auth = \"api_key\"`: no request could be served",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../deploy/gateway.example.toml");
        let file = GatewayFile::parse(text).unwrap();
        assert_eq!(file.auth, AuthMode::ApiKey);
        assert!(!file.tenants.is_empty() && !file.keys.is_empty());
    }

    #[test]
    fn the_kubernetes_config_is_valid() {
        let text = include_str!("../../../deploy/kubernetes/base/gateway.toml");
        let file = GatewayFile::parse(text).unwrap();
        assert!(
            file.store.redis_url.is_some(),
            "replicas share limits in Redis"
        );
    }

    #[test]
    fn defaults_are_api_keys_memory_store_and_deny() {
        let file = GatewayFile::parse(&format!(
            "[[tenant]]\nname = \"a\"\n[[key]]\ntenant = \"a\"\nsha256 = \"{HASH}\"\n"
        ))
        .unwrap();
        assert_eq!(file.auth, AuthMode::ApiKey);
        assert_eq!(file.store.redis_url, None);
        assert_eq!(file.store.on_error, OnError::Deny);
        assert_eq!(file.tenants[0].priority, PriorityClass::Interactive);
    }

    #[test]
    fn debug_output_hides_the_redis_password() {
        let file = GatewayFile::parse(
            "auth = \"none\"\n[store]\nredis_url = \"redis://:hunter2@10.0.0.1:6379/0\"",
        )
        .unwrap();
        assert!(!format!("{file:?}").contains("hunter2"));
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("color = 1", "unknown field `color`"),
            (
                "auth = \"none\"\n[[tenant]]\nname = \"a b\"",
                "`tenant[0].name`",
            ),
            (
                "auth = \"none\"\n[[tenant]]\nname = \"a\"\nrpm = 0",
                "`tenant[0].rpm`",
            ),
            (
                "auth = \"none\"\n[[tenant]]\nname = \"a\"\npriority = \"critical\"\nmax_priority = \"batch\"",
                "`tenant[0].max_priority`",
            ),
            (
                "[[tenant]]\nname = \"a\"\n[[key]]\ntenant = \"b\"\nsha256 = \"00\"",
                "`key[0].tenant`",
            ),
            (
                "[[tenant]]\nname = \"a\"\n[[key]]\ntenant = \"a\"\nsha256 = \"xyz\"",
                "`key[0].sha256`",
            ),
            ("[[tenant]]\nname = \"a\"", "`key` is empty"),
            (
                "auth = \"none\"\n[[tenant]]\nname = \"other\"",
                "`other` is reserved",
            ),
            (
                "auth = \"none\"\n[store]\nredis_url = \"http://x\"",
                "`store.redis_url`",
            ),
            ("auth = \"maybe\"", "unknown variant `maybe`"),
        ];
        for (text, expected) in cases {
            let err = GatewayFile::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
