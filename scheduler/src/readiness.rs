//! [`Readiness`]: what gRPC health reports, from two inputs — whether any pool can serve
//! (the probes) and whether this replica leads its group (the lease). SERVING needs both, so
//! only the leader is ready and the gateway's `/readyz` and Kubernetes readiness tell the truth.

use std::sync::atomic::{AtomicBool, Ordering};

use llmgw_proto::v1::scheduler_server::SchedulerServer;
use tokio::sync::Mutex;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::service::SchedulerService;

/// Name under which the Scheduler service's health is reported.
pub const SCHEDULER_SERVICE: &str = <SchedulerServer<SchedulerService> as NamedService>::NAME;

/// The two inputs and the last status reported.
#[derive(Debug)]
pub struct Readiness {
    reporter: HealthReporter,
    backends_up: AtomicBool,
    leader: AtomicBool,
    reported: Mutex<Option<ServingStatus>>,
}

impl Readiness {
    /// Starts NOT_SERVING: no probe has answered yet. `leader` is the initial leadership (true
    /// without a lease).
    pub async fn new(reporter: HealthReporter, leader: bool) -> Self {
        let readiness = Self {
            reporter,
            backends_up: AtomicBool::new(false),
            leader: AtomicBool::new(leader),
            reported: Mutex::new(None),
        };
        readiness.publish().await;
        readiness
    }

    pub async fn set_backends_up(&self, up: bool) {
        self.backends_up.store(up, Ordering::Relaxed);
        self.publish().await;
    }

    pub async fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
        self.publish().await;
    }

    /// NOT_SERVING for good (shutdown).
    pub async fn stop(&self) {
        self.backends_up.store(false, Ordering::Relaxed);
        self.publish().await;
    }

    async fn publish(&self) {
        let serving =
            self.backends_up.load(Ordering::Relaxed) && self.leader.load(Ordering::Relaxed);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let mut reported = self.reported.lock().await;
        if *reported != Some(status) {
            self.reporter.set_service_status("", status).await;
            self.reporter
                .set_service_status(SCHEDULER_SERVICE, status)
                .await;
            if reported.is_some() {
                tracing::info!(serving, "scheduler health changed");
            }
            *reported = Some(status);
        }
    }
}
