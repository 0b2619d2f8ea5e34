//! The backend pool: which backends exist, which are healthy, and which one
//! serves the next request.
//!
//! Selection is Pingora's `LoadBalancer<RoundRobin>`: readers never lock (the
//! ring lives in an `ArcSwap`) and picking is one relaxed atomic add. The same
//! `LoadBalancer` runs as a Pingora background service that probes every
//! backend each interval ([`health::HttpProbe`]).

pub mod health;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, Extensions, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::services::background::{background_service, GenBackgroundService};

use crate::config::Config;
use health::HttpProbe;

/// The backends lb spreads requests over.
pub struct Pool {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    /// How many ring steps a selection may take before giving up; enough to
    /// visit every backend even when the weights repeat some of them.
    max_steps: usize,
}

/// The Pingora background service that runs the health checks.
pub type HealthCheckService = GenBackgroundService<LoadBalancer<RoundRobin>>;

impl Pool {
    /// Builds the pool and the background service that keeps its health
    /// up to date. The pool is ready to select before the service starts.
    pub fn new(config: &Config) -> Result<(Pool, HealthCheckService)> {
        let backends: BTreeSet<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                addr: SocketAddr::Inet(b.address),
                weight: b.weight.get(),
                ext: Extensions::new(),
            })
            .collect();
        let total_weight: usize = backends.iter().map(|b| b.weight).sum();
        let max_steps = 2 * (total_weight + backends.len());

        let mut balancer = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
        balancer.set_health_check(Box::new(HttpProbe::new(&config.health_check)?));
        balancer.health_check_frequency = Some(config.health_check.interval);
        // Probe all backends at once so one slow backend cannot delay the others' checks.
        balancer.parallel_health_check = true;
        // A static list resolves at once; fill the ring now so the first request finds it.
        balancer.update().now_or_never().unwrap_or_else(|| {
            Error::e_explain(ErrorType::InternalError, "static discovery blocked")
        })?;

        let service = background_service("health check", balancer);
        let pool = Pool {
            balancer: service.task(),
            max_steps,
        };
        Ok((pool, service))
    }

    /// Picks the next healthy backend in round-robin order, skipping those in
    /// `tried`. `None` when no such backend is left.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<Backend> {
        self.balancer
            .select_with(b"", self.max_steps, |backend, healthy| {
                healthy && !tried.contains(&backend.addr)
            })
    }
}
