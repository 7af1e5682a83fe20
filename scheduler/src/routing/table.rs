//! The routing table: a public model name (`llama3.2`, an alias, or `llama3.2@canary`) and a
//! tenant resolve to a [`Route`]: pool, upstream model name, timeouts and fallbacks.
//!
//! Order of decisions for a version: an explicit `@version`; else the tenant's pin for this
//! model; else a weighted split when versions carry weights (canaries); else the default
//! version. Then a tenant's pool pin, if any, replaces the version's pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::config::{FileConfig, ModelConfig, RouteConfig, TimeoutsConfig};

/// Timeouts of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the backend.
    pub connect: Duration,
    /// From sending the request to the first token (each attempt).
    pub ttft: Duration,
    /// Longest gap between two tokens.
    pub idle: Duration,
    /// The whole generation, first attempt to last token.
    pub total: Duration,
}

impl Timeouts {
    /// `config` over `defaults`, field by field.
    pub fn layered(config: &TimeoutsConfig, defaults: Timeouts) -> Self {
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        Self {
            connect: ms(config.connect_ms, defaults.connect),
            ttft: ms(config.ttft_ms, defaults.ttft),
            idle: ms(config.idle_ms, defaults.idle),
            total: ms(config.total_ms, defaults.total),
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The public model name (aliases resolved).
    pub model: String,
    /// The version chosen (empty without a config file).
    pub version: String,
    pub pool: String,
    /// The model name sent to the backend.
    pub upstream: String,
    pub timeouts: Timeouts,
    /// Public models to try if every endpoint fails before the first token.
    pub fallbacks: Vec<String>,
}

/// The requested model or version does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownModel(pub String);

#[derive(Debug)]
struct Model {
    config: ModelConfig,
    timeouts: Timeouts,
}

/// All routes.
#[derive(Debug)]
pub struct RouteTable(Table);

#[derive(Debug)]
enum Table {
    /// No config file: any model name goes unchanged to the one pool.
    Passthrough { pool: String, timeouts: Timeouts },
    /// From `SCHEDULER_CONFIG`.
    Configured {
        by_name: HashMap<String, Arc<Model>>,
        public: Vec<String>,
        routes: Vec<RouteConfig>,
    },
}

impl RouteTable {
    /// The table a config file describes, with `defaults` under its timeouts.
    pub fn from_config(config: &FileConfig, defaults: Timeouts) -> Self {
        let file_defaults = Timeouts::layered(&config.timeouts, defaults);
        let mut by_name = HashMap::new();
        for model in &config.models {
            let entry = Arc::new(Model {
                timeouts: Timeouts::layered(&model.timeouts, file_defaults),
                config: model.clone(),
            });
            for name in std::iter::once(&model.name).chain(&model.aliases) {
                by_name.insert(name.clone(), Arc::clone(&entry));
            }
        }
        let public = config.models.iter().map(|m| m.name.clone()).collect();
        Self(Table::Configured {
            by_name,
            public,
            routes: config.routes.clone(),
        })
    }

    /// No config file: every model name goes unchanged to `pool`.
    pub fn passthrough(pool: impl Into<String>, timeouts: Timeouts) -> Self {
        Self(Table::Passthrough {
            pool: pool.into(),
            timeouts,
        })
    }

    /// Public model names, or `None` when models are whatever the backend has.
    pub fn public_models(&self) -> Option<&[String]> {
        match &self.0 {
            Table::Passthrough { .. } => None,
            Table::Configured { public, .. } => Some(public),
        }
    }

    /// Resolves `requested` for `tenant`; `draw` is a uniform random number for weighted splits.
    pub fn resolve(&self, requested: &str, tenant: &str, draw: u64) -> Result<Route, UnknownModel> {
        let (by_name, routes) = match &self.0 {
            Table::Passthrough { pool, timeouts } => {
                return Ok(Route {
                    model: requested.to_owned(),
                    version: String::new(),
                    pool: pool.clone(),
                    upstream: requested.to_owned(),
                    timeouts: *timeouts,
                    fallbacks: Vec::new(),
                });
            }
            Table::Configured {
                by_name, routes, ..
            } => (by_name, routes),
        };
        let (name, explicit_version) = match requested.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (requested, None),
        };
        let model = by_name
            .get(name)
            .ok_or_else(|| UnknownModel(format!("model `{name}` is not served here")))?;
        let config = &model.config;
        let applies = |route: &&RouteConfig| {
            route.tenant == tenant
                && route
                    .model
                    .as_ref()
                    .is_none_or(|m| by_name.get(m).is_some_and(|e| Arc::ptr_eq(e, model)))
        };
        let pinned_version = routes
            .iter()
            .filter(applies)
            .find_map(|r| r.version.as_deref());
        let version = match explicit_version.or(pinned_version) {
            Some(wanted) => config
                .versions
                .iter()
                .find(|v| v.name == wanted)
                .ok_or_else(|| {
                    UnknownModel(format!("model `{}` has no version `{wanted}`", config.name))
                })?,
            None => weighted(config, draw),
        };
        let pool = routes
            .iter()
            .filter(applies)
            .find_map(|r| r.pool.clone())
            .unwrap_or_else(|| version.pool.clone());
        Ok(Route {
            model: config.name.clone(),
            version: version.name.clone(),
            pool,
            upstream: version.upstream.clone(),
            timeouts: model.timeouts,
            fallbacks: config.fallbacks.clone(),
        })
    }
}

/// The weighted choice among versions, or the default version when no weights are set.
fn weighted(config: &ModelConfig, draw: u64) -> &super::config::VersionConfig {
    let total: u64 = config.versions.iter().map(|v| u64::from(v.weight)).sum();
    let default = || {
        config
            .default_version
            .as_ref()
            .and_then(|name| config.versions.iter().find(|v| &v.name == name))
            .unwrap_or(&config.versions[0])
    };
    if total == 0 {
        return default();
    }
    let mut point = draw % total;
    for version in &config.versions {
        if point < u64::from(version.weight) {
            return version;
        }
        point -= u64::from(version.weight);
    }
    default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Timeouts = Timeouts {
        connect: Duration::from_secs(2),
        ttft: Duration::from_secs(60),
        idle: Duration::from_secs(30),
        total: Duration::from_secs(600),
    };

    fn table() -> RouteTable {
        let config = FileConfig::parse(
            r#"
            [timeouts]
            idle_ms = 20000

            [[pool]]
            name = "ollama"
            [[pool.endpoint]]
            url = "http://a:11434"
            kind = "ollama"
            slots = 4

            [[pool]]
            name = "vllm"
            [[pool.endpoint]]
            url = "http://b:8000"
            kind = "openai"
            slots = 32

            [[pool]]
            name = "dedicated"
            [[pool.endpoint]]
            url = "http://c:11434"
            kind = "ollama"
            slots = 2

            [[model]]
            name = "llama3.2"
            aliases = ["llama"]
            fallbacks = ["qwen"]
            timeouts = { ttft_ms = 5000 }
            [[model.version]]
            name = "stable"
            pool = "ollama"
            upstream = "llama3.2:3b"
            weight = 90
            [[model.version]]
            name = "canary"
            pool = "vllm"
            upstream = "meta-llama/Llama-3.2-3B-Instruct"
            weight = 10

            [[model]]
            name = "qwen"
            default_version = "small"
            [[model.version]]
            name = "big"
            pool = "vllm"
            upstream = "qwen2.5:7b"
            [[model.version]]
            name = "small"
            pool = "ollama"
            upstream = "qwen2.5:0.5b"

            [[route]]
            tenant = "team-a"
            model = "llama3.2"
            version = "canary"

            [[route]]
            tenant = "team-b"
            pool = "dedicated"
            "#,
        )
        .unwrap();
        RouteTable::from_config(&config, DEFAULTS)
    }

    #[test]
    fn aliases_versions_and_defaults() {
        let table = table();
        let route = table.resolve("llama", "x", 0).unwrap();
        assert_eq!(
            (
                route.model.as_str(),
                route.version.as_str(),
                route.pool.as_str()
            ),
            ("llama3.2", "stable", "ollama")
        );
        assert_eq!(route.timeouts.ttft, Duration::from_secs(5), "model timeout");
        assert_eq!(route.timeouts.idle, Duration::from_secs(20), "file default");
        assert_eq!(
            route.timeouts.total,
            Duration::from_secs(600),
            "built-in default"
        );
        assert_eq!(route.fallbacks, vec!["qwen".to_owned()]);
        let canary = table.resolve("llama3.2@canary", "x", 0).unwrap();
        assert_eq!(
            (canary.pool.as_str(), canary.upstream.as_str()),
            ("vllm", "meta-llama/Llama-3.2-3B-Instruct")
        );
        assert_eq!(table.resolve("qwen", "x", 7).unwrap().version, "small");
        assert!(
            table
                .resolve("llama3.2@nightly", "x", 0)
                .unwrap_err()
                .0
                .contains("no version `nightly`")
        );
        assert!(
            table
                .resolve("gpt-5", "x", 0)
                .unwrap_err()
                .0
                .contains("`gpt-5` is not served")
        );
        assert_eq!(
            table.public_models().unwrap(),
            ["llama3.2".to_owned(), "qwen".to_owned()]
        );
    }

    #[test]
    fn tenant_pins_pick_a_version_or_a_pool() {
        let table = table();
        for draw in 0..50 {
            assert_eq!(
                table.resolve("llama3.2", "team-a", draw).unwrap().version,
                "canary"
            );
        }
        let pinned = table.resolve("qwen", "team-b", 0).unwrap();
        assert_eq!(
            (pinned.pool.as_str(), pinned.upstream.as_str()),
            ("dedicated", "qwen2.5:0.5b")
        );
        assert_eq!(
            table.resolve("qwen", "team-a", 0).unwrap().pool,
            "ollama",
            "team-a's pin is for llama3.2 only"
        );
    }

    #[test]
    fn weights_split_traffic_within_tolerance() {
        let table = table();
        let draws = 20_000;
        let canary = (0..draws)
            .filter(|_| {
                table
                    .resolve("llama3.2", "anyone", fastrand::u64(..))
                    .unwrap()
                    .version
                    == "canary"
            })
            .count();
        let share = canary as f64 / draws as f64;
        assert!((share - 0.10).abs() < 0.01, "canary share {share}");
    }

    #[test]
    fn passthrough_sends_any_name_unchanged() {
        let table = RouteTable::passthrough("default", DEFAULTS);
        let route = table.resolve("whatever:7b", "t", 0).unwrap();
        assert_eq!(
            (route.pool.as_str(), route.upstream.as_str()),
            ("default", "whatever:7b")
        );
        assert!(table.public_models().is_none());
    }
}
