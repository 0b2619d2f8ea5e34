//! The two kinds of Pingora `LoadBalancer` a pool may hold: weighted round
//! robin (for `round_robin` and `least_request`) and Ketama consistent
//! hashing (for `consistent_hash`). Both share lb's discovery and health
//! check; only the ring differs.

use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;

/// A pool's ring.
pub(super) enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<KetamaHashing>),
}

impl Balancer {
    /// A ring over `backends`, checked by `health_check`; Ketama when
    /// `hashed`.
    pub(super) fn new(
        hashed: bool,
        backends: Backends,
        health_check: Box<dyn HealthCheck + Send + Sync>,
    ) -> Self {
        if hashed {
            let mut balancer = LoadBalancer::from_backends(backends);
            balancer.set_health_check(health_check);
            Balancer::Hash(balancer)
        } else {
            let mut balancer = LoadBalancer::from_backends(backends);
            balancer.set_health_check(health_check);
            Balancer::RoundRobin(balancer)
        }
    }

    /// Whether it is a consistent-hash ring.
    pub(super) fn is_hashed(&self) -> bool {
        matches!(self, Balancer::Hash(_))
    }

    /// The backends and their health.
    pub(super) fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(b) => b.backends(),
            Balancer::Hash(b) => b.backends(),
        }
    }

    /// Discovers the backends again and rebuilds the ring.
    pub(super) async fn update(&self) -> Result<()> {
        match self {
            Balancer::RoundRobin(b) => b.update().await,
            Balancer::Hash(b) => b.update().await,
        }
    }

    /// The first backend `accept` takes, walking the ring from `key` (the
    /// key is ignored by round robin).
    pub(super) fn select_with<F>(&self, key: &[u8], max_steps: usize, accept: F) -> Option<Backend>
    where
        F: Fn(&Backend, bool) -> bool,
    {
        match self {
            Balancer::RoundRobin(b) => b.select_with(key, max_steps, accept),
            Balancer::Hash(b) => b.select_with(key, max_steps, accept),
        }
    }
}
