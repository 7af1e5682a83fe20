//! A backend pool: one admission state in front of one backend. The routing issue grows this
//! into several pools with several endpoints each; the service only ever asks for "the pool
//! serving this model".

use std::sync::Arc;

use crate::admission::Admission;
use crate::backend::Backend;

/// One pool of generation slots and the backend behind them.
#[derive(Debug, Clone)]
pub struct Pool {
    pub admission: Arc<Admission>,
    pub backend: Arc<dyn Backend>,
}

/// Every pool the scheduler serves.
#[derive(Debug, Clone)]
pub struct Pools {
    default: Pool,
}

impl Pools {
    /// Just the default pool, serving any model name.
    pub fn single(pool: Pool) -> Self {
        Self { default: pool }
    }

    /// The pool that serves `model`.
    pub fn for_model(&self, _model: &str) -> &Pool {
        &self.default
    }

    /// All pools, for probes and listings.
    pub fn all(&self) -> impl Iterator<Item = &Pool> {
        std::iter::once(&self.default)
    }
}
