//! The live topology: routing table plus pools of endpoints, built from `SCHEDULER_CONFIG` (or,
//! without it, one Ollama pool at `OLLAMA_BASE`), and swapped atomically on reload. A request
//! takes the current `Arc<Topology>` once and keeps it, so in-flight requests finish on the
//! routes they started with. Pools whose configuration did not change are carried over as they
//! are — queue, in-flight counts, breakers and all.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::admission::{Admission, Class, FairShare, Limits};
use crate::backend::Backend;
use crate::backend::ollama::OllamaBackend;
use crate::backend::openai::OpenAiBackend;
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::metrics::SchedulerMetrics;
use crate::pool::Pool;
use crate::routing::config::{
    BreakerConfig, EndpointConfig, EndpointKind, FileConfig, ObjectivesConfig, PoolConfig, Slots,
};
use crate::routing::table::{RouteTable, Timeouts};

/// One consistent view of routes and pools.
#[derive(Debug)]
pub struct Topology {
    pub routes: RouteTable,
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// Extra attempts before the first token.
    pub retry_attempts: u32,
    /// First-token objectives by class, for requests that send none.
    pub objectives: ObjectivesConfig,
    pool_configs: HashMap<String, PoolConfig>,
}

impl Topology {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// The configured first-token objective of `class`, if any.
    pub fn objective(&self, class: Class) -> Option<Duration> {
        let ms = match class {
            Class::Critical => self.objectives.critical_ttft_ms,
            Class::Interactive => self.objectives.interactive_ttft_ms,
            Class::Batch => self.objectives.batch_ttft_ms,
        };
        ms.map(Duration::from_millis)
    }

    /// A topology assembled from ready parts (tests and benchmarks with scripted backends);
    /// it cannot be reloaded.
    pub fn from_parts(routes: RouteTable, pools: Vec<Pool>, retry_attempts: u32) -> Self {
        Self {
            routes,
            pools: pools
                .into_iter()
                .map(|pool| (pool.name.clone(), Arc::new(pool)))
                .collect(),
            retry_attempts,
            objectives: ObjectivesConfig::default(),
            pool_configs: HashMap::new(),
        }
    }

    /// Builds from `file` (or the environment's single pool), reusing unchanged pools of
    /// `previous`.
    fn build(
        config: &Config,
        file: Option<&FileConfig>,
        previous: Option<&Topology>,
    ) -> Result<Self, String> {
        let defaults = Timeouts {
            connect: config.backend_connect_timeout(),
            ttft: Duration::from_millis(config.ttft_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
            total: Duration::from_millis(config.total_timeout_ms),
        };
        let mut weights = config.weights()?;
        let fair_share = file.map_or_else(FairShare::default, |file| FairShare {
            prompt_weight: file.fair_share.prompt_weight,
            completion_weight: file.fair_share.completion_weight,
        });
        let objectives = file.map_or_else(ObjectivesConfig::default, |file| file.objectives);
        let (pool_configs, routes, retry_attempts, connect) = match file {
            Some(file) => {
                weights.extend(file.tenant_weights.clone());
                let connect = Timeouts::layered(&file.timeouts, defaults).connect;
                (
                    file.pools.clone(),
                    RouteTable::from_config(file, defaults),
                    file.retry.attempts,
                    connect,
                )
            }
            None => (
                vec![env_pool(config)],
                RouteTable::passthrough("default", defaults),
                2,
                defaults.connect,
            ),
        };
        let mut pools = BTreeMap::new();
        let mut configs = HashMap::new();
        for pool_config in pool_configs {
            let reused = previous.and_then(|p| {
                (p.pool_configs.get(&pool_config.name) == Some(&pool_config))
                    .then(|| p.pools.get(&pool_config.name))
                    .flatten()
            });
            let pool = match reused {
                Some(pool) => Arc::clone(pool),
                None => Arc::new(build_pool(&pool_config, &weights, fair_share, connect)?),
            };
            pools.insert(pool_config.name.clone(), pool);
            configs.insert(pool_config.name.clone(), pool_config);
        }
        Ok(Self {
            routes,
            pools,
            retry_attempts,
            objectives,
            pool_configs: configs,
        })
    }
}

/// The pool the environment describes when there is no config file.
fn env_pool(config: &Config) -> PoolConfig {
    PoolConfig {
        name: "default".to_owned(),
        endpoints: vec![EndpointConfig {
            url: config.ollama_base.clone(),
            kind: EndpointKind::Ollama,
            slots: Slots::Fixed(config.max_concurrency),
            api_key_env: None,
            schema_format: Default::default(),
        }],
        max_queue: config.max_queue,
        max_queue_bytes: config.max_queue_bytes,
        queue_timeout_ms: config.queue_timeout_ms,
        priority_aging_ms: config.priority_aging_ms,
        breaker: BreakerConfig::default(),
        prefill_ms_per_1k_tokens: None,
        prefix_affinity: false,
        affinity_epsilon: 0.25,
    }
}

fn build_pool(
    config: &PoolConfig,
    weights: &HashMap<String, u32>,
    fair_share: FairShare,
    connect: Duration,
) -> Result<Pool, String> {
    let mut endpoints = Vec::new();
    for endpoint in &config.endpoints {
        let backend: Arc<dyn Backend> = match endpoint.kind {
            EndpointKind::Ollama => {
                Arc::new(OllamaBackend::new(&endpoint.url, connect).map_err(|e| e.to_string())?)
            }
            EndpointKind::Openai => {
                let key = endpoint
                    .api_key_env
                    .as_ref()
                    .and_then(|var| std::env::var(var).ok());
                Arc::new(
                    OpenAiBackend::new(&endpoint.url, key, connect)
                        .map_err(|e| e.to_string())?
                        .with_schema_format(endpoint.schema_format),
                )
            }
        };
        endpoints.push(Arc::new(Endpoint::new(
            endpoint.clone(),
            backend,
            config.breaker,
        )));
    }
    let limits = Limits {
        // What each endpoint takes before any report: its number, or 1 for "auto".
        slots: endpoints.iter().map(|e| e.slots()).sum(),
        max_queue: config.max_queue,
        max_queue_bytes: config.max_queue_bytes,
        max_wait: Duration::from_millis(config.queue_timeout_ms),
        aging: Duration::from_millis(config.priority_aging_ms),
        weights: weights.clone(),
        fair_share,
        prefill_per_token: config.prefill_ms_per_1k_tokens.map(Duration::from_micros),
    };
    Ok(Pool {
        affinity: config
            .prefix_affinity
            .then(|| crate::affinity::Affinity::new(config.affinity_epsilon)),
        name: config.name.clone(),
        admission: Admission::new(config.name.clone(), limits),
        endpoints,
    })
}

/// The current topology, and how to reload it.
#[derive(Debug)]
pub struct Topologies {
    config: Config,
    current: RwLock<Arc<Topology>>,
    metrics: Arc<SchedulerMetrics>,
}

impl Topologies {
    /// The topology `config` describes (reading `SCHEDULER_CONFIG` if set).
    pub fn load(config: &Config) -> Result<Self, String> {
        let file = Self::read_file(config)?;
        let topology = Topology::build(config, file.as_ref(), None)?;
        Ok(Self {
            config: config.clone(),
            current: RwLock::new(Arc::new(topology)),
            metrics: Arc::new(SchedulerMetrics::new()),
        })
    }

    fn read_file(config: &Config) -> Result<Option<FileConfig>, String> {
        config
            .config_file
            .as_ref()
            .map(|path| FileConfig::load(&PathBuf::from(path)).map_err(|e| e.to_string()))
            .transpose()
    }

    /// The topology requests should use now.
    pub fn current(&self) -> Arc<Topology> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Re-reads the config file; on any error the running topology stays and the error is
    /// returned. In-flight requests keep the topology they started with.
    pub fn reload(&self) -> Result<(), String> {
        let file = Self::read_file(&self.config)?;
        let previous = self.current();
        let next = Topology::build(&self.config, file.as_ref(), Some(&previous))?;
        for pool in next.pools.values() {
            pool.refresh_capacity();
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// The scheduler's metrics (they outlive reloads).
    pub fn metrics(&self) -> &Arc<SchedulerMetrics> {
        &self.metrics
    }

    /// The config file, if any (for change detection).
    pub fn config_file(&self) -> Option<&str> {
        self.config.config_file.as_deref()
    }
}
