//! The backend pool: which backends exist, which are healthy, and which one
//! serves the next request.
//!
//! Selection is Pingora's `LoadBalancer<RoundRobin>`: readers never lock (the
//! ring lives in an `ArcSwap`) and picking is one relaxed atomic add. The same
//! `LoadBalancer` runs as a Pingora background service that probes every
//! backend each interval ([`health::HttpProbe`]).

pub mod health;
pub mod outlier;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, Extensions, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::services::background::{background_service, GenBackgroundService};

use crate::config::{Config, WhenAllUnhealthy};
use health::HttpProbe;
use outlier::OutlierDetector;

/// The backends lb spreads requests over.
pub struct Pool {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    /// How many ring steps a selection may take before giving up; enough to
    /// visit every backend even when the weights repeat some of them.
    max_steps: usize,
    /// Ejection of backends whose requests fail.
    outliers: Arc<OutlierDetector>,
    /// What to do when no backend is healthy.
    when_all_unhealthy: WhenAllUnhealthy,
}

/// The outcome of [`Pool::select`].
pub enum Selection {
    /// The backend to send the request to.
    Backend(Backend),
    /// No backend is healthy (and `when_all_unhealthy` is `fail`): 503.
    NoneHealthy,
    /// Every usable backend was already tried for this request: 502.
    Exhausted,
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
        let outliers = Arc::new(OutlierDetector::new(
            config.passive_health.clone(),
            config.backends.iter().map(|b| b.address),
        ));
        let total_weight: usize = backends.iter().map(|b| b.weight).sum();
        let max_steps = 2 * (total_weight + backends.len());

        let mut balancer = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
        balancer.set_health_check(Box::new(HttpProbe::new(
            &config.health_check,
            Arc::clone(&outliers),
        )?));
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
            outliers,
            when_all_unhealthy: config.when_all_unhealthy,
        };
        Ok((pool, service))
    }

    /// Picks the next backend in round-robin order that is healthy, not
    /// ejected and not in `tried`. When none is healthy, `when_all_unhealthy:
    /// try_all` picks among all backends not tried yet.
    pub fn select(&self, tried: &[SocketAddr]) -> Selection {
        let usable = |backend: &Backend, healthy: bool| {
            healthy && !tried.contains(&backend.addr) && !self.is_ejected(backend)
        };
        if let Some(backend) = self.balancer.select_with(b"", self.max_steps, usable) {
            return Selection::Backend(backend);
        }
        if self.when_all_unhealthy == WhenAllUnhealthy::TryAll {
            let untried = |backend: &Backend, _healthy: bool| !tried.contains(&backend.addr);
            if let Some(backend) = self.balancer.select_with(b"", self.max_steps, untried) {
                return Selection::Backend(backend);
            }
        }
        if tried.is_empty() {
            Selection::NoneHealthy
        } else {
            Selection::Exhausted
        }
    }

    fn is_ejected(&self, backend: &Backend) -> bool {
        backend
            .addr
            .as_inet()
            .is_some_and(|addr| self.outliers.is_ejected(addr))
    }

    /// Records that `backend` answered a request without failing.
    pub fn record_success(&self, backend: &SocketAddr) {
        if let Some(addr) = backend.as_inet() {
            self.outliers.record_success(addr);
        }
    }

    /// Records a failed request to `backend`; enough in a row eject it.
    pub fn record_failure(&self, backend: &SocketAddr, reason: &dyn std::fmt::Display) {
        if let Some(addr) = backend.as_inet() {
            self.outliers.record_failure(addr, reason);
        }
    }
}
