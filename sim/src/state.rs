//! [`Sim`]: the shared state of one simulator instance, read by both wire protocols and the
//! control routes.

use std::sync::{Arc, Mutex};

use crate::config::{Fault, SimConfig};
use crate::slots::Slots;

/// Shared state of one simulator instance.
#[derive(Debug, Clone)]
pub struct Sim {
    pub(crate) config: Arc<SimConfig>,
    pub(crate) slots: Slots,
    fault: Arc<Mutex<Fault>>,
}

impl Sim {
    pub(crate) fn new(config: SimConfig, slots: Slots) -> Self {
        let fault = Arc::new(Mutex::new(config.fault));
        Self {
            config: Arc::new(config),
            slots,
            fault,
        }
    }

    /// Applies `fault` to requests from now on.
    pub(crate) fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// The fault applied to requests arriving now.
    pub(crate) fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}
