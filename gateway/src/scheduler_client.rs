//! A small pool of HTTP/2 connections to the scheduler. Many concurrent streams multiplexed on
//! one h2 connection degrade sharply (flow control and one connection task on one core), so
//! calls are spread round-robin over a few lazily connected channels, each of which reconnects
//! on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llmgw_proto::SchedulerToken;
use llmgw_proto::v1::scheduler_client::SchedulerClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

/// Round-robin over `n` channels to the same scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerClients {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
    /// `authorization` for every Scheduler call (`SCHEDULER_AUTH_TOKEN`).
    authorization: Option<MetadataValue<Ascii>>,
}

impl SchedulerClients {
    /// Prepares `connections` channels to `url`; nothing connects until first use, so the
    /// gateway starts (and reports not-ready) while the scheduler is still down.
    pub fn connect_lazy(
        url: &str,
        connections: usize,
        connect_timeout: Duration,
        token: Option<SchedulerToken>,
    ) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())?
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
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
            authorization: token.and_then(|token| {
                let mut value: MetadataValue<Ascii> = token.bearer().parse().ok()?;
                // Keeps it out of `Debug` output (and out of HPACK tables).
                value.set_sensitive(true);
                Some(value)
            }),
        })
    }

    fn channel(&self) -> Channel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[index].clone()
    }

    /// A Scheduler client on the next connection.
    pub fn scheduler(&self) -> SchedulerClient<Channel> {
        SchedulerClient::new(self.channel())
    }

    /// Adds the scheduler's bearer token, if one is configured, to a Scheduler call.
    pub fn authorize<T>(&self, call: &mut tonic::Request<T>) {
        if let Some(value) = &self.authorization {
            call.metadata_mut().insert("authorization", value.clone());
        }
    }

    /// A gRPC health client on the next connection.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
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
}
