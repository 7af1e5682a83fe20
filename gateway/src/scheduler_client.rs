//! The gateway's schedulers. `SCHEDULER_URL` may list several (comma-separated), and a DNS
//! name that resolves to several addresses is several schedulers (re-resolved every few
//! seconds, as a Kubernetes headless Service needs). For each the gateway keeps a few HTTP/2
//! connections (many concurrent streams on one h2 connection degrade sharply, so calls are
//! spread round-robin), its serving state from gRPC health checks, and the models it serves
//! from `ListModels`. [`SchedulerClients::pick`] chooses a serving scheduler that has the model;
//! the chat route retries another one — before the first byte only — when a scheduler is down,
//! stands by (`not_leader`) or its connection breaks.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use llmgw_proto::SchedulerToken;
use llmgw_proto::v1::ListModelsRequest;
use llmgw_proto::v1::scheduler_client::SchedulerClient;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Largest message accepted from a scheduler (the scheduler's own limit on what it sends).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// How often each scheduler's health is checked, and how long it has to answer.
const HEALTH_POLL: Duration = Duration::from_millis(500);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// How often DNS names are resolved again and model lists refreshed.
const REFRESH: Duration = Duration::from_secs(5);

/// One scheduler: its connections and what the gateway knows of it.
#[derive(Debug)]
pub struct Target {
    /// `http://host:port`, as dialled.
    pub address: String,
    channels: Arc<[Channel]>,
    next: AtomicUsize,
    /// From its health watch; optimistic until the first answer.
    serving: AtomicBool,
    /// What its last health check said ([`Health`]).
    health: AtomicU8,
    /// From `ListModels`; `None` until known.
    models: RwLock<Option<HashSet<String>>>,
    /// Ends the watcher when the address disappears from DNS.
    gone: CancellationToken,
}

impl Target {
    fn new(
        address: String,
        connections: usize,
        connect_timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(address.clone())?
            // Small token frames must not wait for delayed ACKs.
            .tcp_nodelay(true)
            .connect_timeout(connect_timeout)
            // Finds a dead scheduler connection in seconds, not at the next request.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channels: Vec<Channel> = (0..connections.max(1))
            .map(|_| endpoint.connect_lazy())
            .collect();
        Ok(Self {
            address,
            channels: channels.into(),
            next: AtomicUsize::new(0),
            serving: AtomicBool::new(true),
            health: AtomicU8::new(Health::Unchecked as u8),
            models: RwLock::new(None),
            gone: CancellationToken::new(),
        })
    }

    fn channel(&self) -> Channel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[index].clone()
    }

    /// A Scheduler client on this scheduler's next connection.
    pub fn scheduler(&self) -> SchedulerClient<Channel> {
        SchedulerClient::new(self.channel())
            // A non-streamed answer arrives as one message: tonic's default of 4 MiB would turn
            // a long answer into an error.
            .max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// A gRPC health client on this scheduler's next connection.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// What its last health check said (not presumed before the first one).
    pub fn last_health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    fn has_model(&self, model: &str) -> Option<bool> {
        self.models
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|models| models.contains(model))
    }
}

/// A scheduler's last health check, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Unchecked,
    Serving,
    NotServing,
    Unreachable,
    TimedOut,
}

impl Health {
    fn from_u8(value: u8) -> Self {
        [
            Self::Unchecked,
            Self::Serving,
            Self::NotServing,
            Self::Unreachable,
            Self::TimedOut,
        ]
        .get(usize::from(value))
        .copied()
        .unwrap_or(Self::Unchecked)
    }

    /// How `/readyz` says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unchecked => "no health check has answered yet",
            Self::Serving => "SERVING",
            Self::NotServing => "scheduler reports NOT_SERVING",
            Self::Unreachable => "scheduler unreachable",
            Self::TimedOut => "scheduler health check timed out",
        }
    }
}

/// Where schedulers are found: an IP address, or a name to resolve again and again.
#[derive(Debug, Clone)]
struct Source {
    host: String,
    port: u16,
    resolved: bool,
}

/// Every scheduler the gateway knows.
#[derive(Debug, Clone)]
pub struct SchedulerClients {
    targets: Arc<RwLock<Vec<Arc<Target>>>>,
    sources: Arc<[Source]>,
    next: Arc<AtomicUsize>,
    connections: usize,
    connect_timeout: Duration,
    /// `authorization` for every Scheduler call (`SCHEDULER_AUTH_TOKEN`).
    authorization: Option<MetadataValue<Ascii>>,
}

/// `SCHEDULER_URL` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` must be http://host:port")]
    Malformed(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

impl SchedulerClients {
    /// Prepares connections to every scheduler of `urls` (comma-separated); nothing connects
    /// until first use, so the gateway starts (and reports not-ready) while schedulers are
    /// still down. DNS names get their addresses in [`SchedulerClients::watch`]; until then
    /// the name itself is dialled.
    pub fn connect_lazy(
        urls: &str,
        connections: usize,
        connect_timeout: Duration,
        token: Option<SchedulerToken>,
    ) -> Result<Self, UrlError> {
        let mut sources = Vec::new();
        let mut targets = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| UrlError::Malformed(url.to_owned()))?;
            let authority = rest.trim_end_matches('/');
            let (host, port) = authority
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                .ok_or_else(|| UrlError::Malformed(url.to_owned()))?;
            let resolved = host.parse::<IpAddr>().is_err();
            sources.push(Source {
                host: host.to_owned(),
                port,
                resolved,
            });
            targets.push(Arc::new(Target::new(
                format!("http://{authority}"),
                connections,
                connect_timeout,
            )?));
        }
        if targets.is_empty() {
            return Err(UrlError::Malformed(urls.to_owned()));
        }
        Ok(Self {
            targets: Arc::new(RwLock::new(targets)),
            sources: sources.into(),
            next: Arc::new(AtomicUsize::new(0)),
            connections,
            connect_timeout,
            authorization: token.and_then(|token| {
                let mut value: MetadataValue<Ascii> = token.bearer().parse().ok()?;
                // Keeps it out of `Debug` output (and out of HPACK tables).
                value.set_sensitive(true);
                Some(value)
            }),
        })
    }

    /// Every scheduler now.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The scheduler for the next `model` call, skipping `excluded` addresses: serving ones
    /// that list the model first, then serving ones whose models are unknown or that serve any
    /// name, then any (the scheduler then answers honestly why it cannot serve). Round-robin
    /// among equals.
    pub fn pick(&self, model: &str, excluded: &[String]) -> Option<Arc<Target>> {
        let targets = self.targets();
        let open: Vec<&Arc<Target>> = targets
            .iter()
            .filter(|t| !excluded.contains(&t.address))
            .collect();
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let choose = |pool: Vec<&Arc<Target>>| {
            (!pool.is_empty()).then(|| Arc::clone(pool[turn % pool.len()]))
        };
        let serving: Vec<&Arc<Target>> = open.iter().copied().filter(|t| t.is_serving()).collect();
        let with_model: Vec<&Arc<Target>> = serving
            .iter()
            .copied()
            .filter(|t| t.has_model(model) == Some(true))
            .collect();
        choose(with_model)
            .or_else(|| choose(serving))
            .or_else(|| choose(open))
    }

    /// Adds the scheduler's bearer token, if one is configured, to a Scheduler call.
    pub fn authorize<T>(&self, call: &mut tonic::Request<T>) {
        self.authorize_metadata(call.metadata_mut());
    }

    /// [`Self::authorize`] on a call's metadata.
    pub fn authorize_metadata(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(value) = &self.authorization {
            metadata.insert("authorization", value.clone());
        }
    }

    /// Keeps every scheduler's serving state and models fresh, and DNS names resolved, until
    /// `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        for target in self.targets() {
            // Not tracked: a follower only reads health and ends on `shutdown` (or when its
            // address leaves DNS); nothing is lost if the runtime drops it first.
            tokio::spawn(self.clone().follow(target, shutdown.clone()));
        }
        if !self.sources.iter().any(|s| s.resolved) {
            return;
        }
        loop {
            self.resolve(&shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// Resolves the DNS names again: new addresses become schedulers, vanished ones go.
    async fn resolve(&self, shutdown: &CancellationToken) {
        let mut wanted: Vec<String> = Vec::new();
        for source in self.sources.iter() {
            if !source.resolved {
                wanted.push(format!("http://{}:{}", source.host, source.port));
                continue;
            }
            match tokio::net::lookup_host((source.host.as_str(), source.port)).await {
                Ok(addresses) => wanted.extend(addresses.map(|a| format!("http://{a}"))),
                Err(err) => {
                    tracing::warn!(host = %source.host, error = %err, "cannot resolve scheduler address; keeping the last ones");
                    return;
                }
            }
        }
        let current = self.targets();
        let mut next: Vec<Arc<Target>> = current
            .iter()
            .filter(|t| wanted.contains(&t.address))
            .cloned()
            .collect();
        for gone in current.iter().filter(|t| !wanted.contains(&t.address)) {
            tracing::info!(scheduler = %gone.address, "scheduler address gone");
            gone.gone.cancel();
        }
        for address in wanted {
            if next.iter().any(|t| t.address == address) {
                continue;
            }
            match Target::new(address.clone(), self.connections, self.connect_timeout) {
                Ok(target) => {
                    tracing::info!(scheduler = %address, "scheduler address found");
                    let target = Arc::new(target);
                    // Not tracked, as above: it ends on `shutdown` or when the address goes.
                    tokio::spawn(self.clone().follow(Arc::clone(&target), shutdown.clone()));
                    next.push(target);
                }
                Err(err) => {
                    tracing::warn!(scheduler = %address, error = %err, "bad scheduler address")
                }
            }
        }
        *self
            .targets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
    }

    /// Follows one scheduler's health and refreshes its models. Health is polled (a gRPC
    /// health `Check` every [`HEALTH_POLL`], answered within [`HEALTH_TIMEOUT`]) rather than
    /// watched: a scheduler that is paused or cut off goes silent without closing anything, and
    /// only a deadline notices that.
    async fn follow(self, target: Arc<Target>, shutdown: CancellationToken) {
        let mut models_due = tokio::time::Instant::now();
        loop {
            let mut health = target.health();
            let check = health.check(HealthCheckRequest {
                service: String::new(),
            });
            let health = match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
                Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
                    Health::Serving
                }
                Ok(Ok(_)) => Health::NotServing,
                Ok(Err(_)) => Health::Unreachable,
                Err(_) => Health::TimedOut,
            };
            let serving = health == Health::Serving;
            let changed = serving != target.serving.swap(serving, Ordering::Relaxed);
            target.health.store(health as u8, Ordering::Relaxed);
            if changed {
                tracing::info!(scheduler = %target.address, serving, "scheduler serving state changed");
                models_due = tokio::time::Instant::now();
            }
            if serving && tokio::time::Instant::now() >= models_due {
                self.refresh_models(&target).await;
                models_due = tokio::time::Instant::now() + REFRESH;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = target.gone.cancelled() => return,
                () = tokio::time::sleep(HEALTH_POLL) => {}
            }
        }
    }

    async fn refresh_models(&self, target: &Target) {
        // One scheduler takes every request anyway: no need to ask it (and, without a config
        // file, its backends) for models.
        if self.targets().len() < 2 && !self.sources.iter().any(|s| s.resolved) {
            return;
        }
        let mut call = tonic::Request::new(ListModelsRequest {});
        self.authorize(&mut call);
        if let Ok(Ok(listed)) =
            tokio::time::timeout(Duration::from_secs(2), target.scheduler().list_models(call)).await
        {
            let models = listed
                .into_inner()
                .models
                .into_iter()
                .map(|m| m.id)
                .collect();
            *target
                .models
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(models);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_is_sent_but_never_printed() {
        let clients = SchedulerClients::connect_lazy(
            "http://127.0.0.1:1",
            1,
            Duration::from_secs(1),
            Some("tok-secret-1".parse().unwrap()),
        )
        .unwrap();
        let mut call = tonic::Request::new(());
        clients.authorize(&mut call);
        assert_eq!(
            call.metadata().get("authorization").unwrap(),
            "Bearer tok-secret-1"
        );
        assert!(!format!("{clients:?}").contains("tok-secret-1"));
    }

    #[tokio::test]
    async fn picks_serving_schedulers_with_the_model_and_skips_excluded_ones() {
        let clients = SchedulerClients::connect_lazy(
            "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3",
            1,
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let targets = clients.targets();
        assert_eq!(targets.len(), 3);
        *targets[1].models.write().unwrap() = Some(["m".to_owned()].into());
        targets[2].serving.store(false, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(
                clients.pick("m", &[]).unwrap().address,
                "http://127.0.0.1:2"
            );
        }
        let excluded = ["http://127.0.0.1:2".to_owned()];
        assert_eq!(
            clients.pick("m", &excluded).unwrap().address,
            "http://127.0.0.1:1"
        );
        let all: Vec<String> = targets.iter().map(|t| t.address.clone()).collect();
        assert!(clients.pick("m", &all).is_none());
        assert!(matches!(
            SchedulerClients::connect_lazy("127.0.0.1:1", 1, Duration::from_secs(1), None),
            Err(UrlError::Malformed(_))
        ));
    }
}
