//! [`Policy`]: the `GATEWAY_CONFIG` file compiled for lookups — keys by hash, tenants by name,
//! model globs, priority ranks — swapped whole on reload, so a request sees one consistent
//! version from start to end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use llmgw_proto::v1::Priority;

use super::config::{
    AccountingConfig, AuthMode, GatewayFile, PriorityClass, StoreConfig, TenantConfig,
};
use super::estimate::Tokenizers;
use super::keys::{self, KeyHash};
use super::ledger::Limits;

/// One tenant's rules.
#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    /// Class of requests that send no `x-priority`.
    pub priority: Priority,
    /// The highest class `x-priority` may ask for.
    pub max_priority: Priority,
    models: Option<Vec<String>>,
    pub limits: Limits,
    /// Completion cap (the tenant's own, or the accounting default when token limits exist).
    pub max_tokens: Option<u32>,
    pub allowed_options: HashSet<String>,
}

impl Tenant {
    fn compile(config: &TenantConfig, accounting: &AccountingConfig) -> Self {
        let limits = Limits {
            rpm: config.rpm,
            tpm: config.tpm,
            max_concurrent: config.max_concurrent,
            tokens_per_day: config.tokens_per_day,
            tokens_per_month: config.tokens_per_month,
        };
        let counts_tokens = limits.tpm.is_some()
            || limits.tokens_per_day.is_some()
            || limits.tokens_per_month.is_some();
        Self {
            name: config.name.as_str().into(),
            priority: priority(config.priority),
            max_priority: priority(config.max_priority.unwrap_or(config.priority)),
            models: config.models.clone(),
            limits,
            max_tokens: config
                .max_tokens
                .or(counts_tokens.then_some(accounting.default_max_tokens)),
            allowed_options: config.allowed_options.iter().cloned().collect(),
        }
    }

    /// Whether the model allow-list (globs) lets `model` through.
    /// The tenant's model globs; `None` = any model.
    pub fn model_globs(&self) -> Option<&[String]> {
        self.models.as_deref()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|glob| glob_matches(glob, model)))
    }

    /// Whether any limit applies (else no store round trip is needed).
    pub fn is_limited(&self) -> bool {
        self.limits != Limits::default()
    }
}

/// The class a `PriorityClass` names.
pub fn priority(class: PriorityClass) -> Priority {
    match class {
        PriorityClass::Critical => Priority::Critical,
        PriorityClass::Interactive => Priority::Interactive,
        PriorityClass::Batch => Priority::Batch,
    }
}

/// Higher is more urgent.
pub fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Batch => 0,
        Priority::Interactive | Priority::Unspecified => 1,
        Priority::Critical => 2,
    }
}

/// A configured key.
#[derive(Debug)]
pub struct Key {
    pub tenant: Arc<Tenant>,
    /// The label from the file, for logs.
    pub name: Option<String>,
    /// May read the status page.
    pub admin: bool,
}

/// The compiled file.
#[derive(Debug)]
pub struct Policy {
    pub auth: AuthMode,
    /// Open mode's clamp on `x-priority`.
    pub open_max_priority: Priority,
    pub accounting: AccountingConfig,
    pub store: StoreConfig,
    tenants: HashMap<String, Arc<Tenant>>,
    keys: HashMap<KeyHash, Key>,
    pub tokenizers: Tokenizers,
}

impl Policy {
    /// Compiles `file`; loading a `[[tokenizer]]` file can fail (the error names it).
    pub fn compile(file: &GatewayFile) -> Result<Self, String> {
        let tenants: HashMap<String, Arc<Tenant>> = file
            .tenants
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Arc::new(Tenant::compile(t, &file.accounting)),
                )
            })
            .collect();
        let keys = file
            .keys
            .iter()
            .filter_map(|key| {
                let hash = keys::from_hex(&key.sha256.to_ascii_lowercase())?;
                let tenant = Arc::clone(tenants.get(&key.tenant)?);
                Some((
                    hash,
                    Key {
                        tenant,
                        name: key.name.clone(),
                        admin: key.admin,
                    },
                ))
            })
            .collect();
        Ok(Self {
            auth: file.auth,
            open_max_priority: priority(file.open_mode.max_priority),
            accounting: file.accounting.clone(),
            store: file.store.clone(),
            tenants,
            keys,
            tokenizers: Tokenizers::load(&file.tokenizers)?,
        })
    }

    /// The key whose hash matches `presented`.
    pub fn key(&self, presented: &str) -> Option<&Key> {
        self.keys.get(&keys::hash(presented))
    }

    /// A configured tenant by name.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(name)
    }

    /// Every configured tenant, by name.
    pub fn tenants(&self) -> Vec<&Arc<Tenant>> {
        let mut tenants: Vec<&Arc<Tenant>> = self.tenants.values().collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        tenants
    }
}

/// One glob grammar for both services (`*` any run, `?` one character).
pub use llmgw_proto::glob_matches;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (glob, text, expected) in [
            ("llama3.2", "llama3.2", true),
            ("llama3.2", "llama3.2:3b", false),
            ("qwen*", "qwen2.5:7b", true),
            ("qwen*", "qwe", false),
            ("*:3b", "llama3.2:3b", true),
            ("l?ama*", "llama3", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_matches(glob, text), expected, "{glob} vs {text}");
        }
    }
}
