//! A small pool of HTTP/2 connections to the scheduler. Many concurrent streams multiplexed on
//! one h2 connection degrade sharply (flow control and one connection task on one core), so
//! calls are spread round-robin over a few lazily connected channels, each of which reconnects
//! on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llmgw_proto::v1::scheduler_client::SchedulerClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

/// Round-robin over `n` channels to the same scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerClients {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
}

impl SchedulerClients {
    /// Prepares `connections` channels to `url`; nothing connects until first use, so the
    /// gateway starts (and reports not-ready) while the scheduler is still down.
    pub fn connect_lazy(
        url: &str,
        connections: usize,
        connect_timeout: Duration,
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

    /// A gRPC health client on the next connection.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }
}
