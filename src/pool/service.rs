//! Keeping pools current: each pool's discovery and health checks run as a
//! task ([`PoolService`]), and every task runs on the one runtime of one
//! Pingora background service ([`PoolsService`]), so a thousand pools cost
//! a thousand tasks, not a thousand threads. Pools a reload adds join the
//! same runtime through [`PoolTasks`].

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::Pool;
use crate::sync::lock;

/// The task that keeps a pool current: discovery every
/// `discovery.interval`, health checks every `health_check.interval`, both
/// at once after a reload or an admin change. The two run side by side, so
/// a resolver that takes its time does not hold the checks back. It holds
/// the pool weakly and ends once a reload removed the pool and its last
/// request finished.
pub struct PoolService(Weak<Pool>);

impl PoolService {
    /// The service keeping `pool` current.
    pub fn of(pool: &Arc<Pool>) -> Self {
        PoolService(Arc::downgrade(pool))
    }

    /// Runs until `shutdown`, or until the pool is gone.
    pub async fn run(&self, shutdown: ShutdownWatch) {
        tokio::join!(self.discover(shutdown.clone()), self.check(shutdown));
    }

    /// Resolves the backends every interval, or when asked to; after an
    /// asked-for round, the checks run at once.
    async fn discover(&self, mut shutdown: ShutdownWatch) {
        loop {
            let Some(pool) = self.0.upgrade() else {
                return;
            };
            let interval = pool.settings.load().discovery_interval;
            let asked = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = pool.refresh.notified() => true,
                _ = shutdown.changed() => return,
            };
            pool.update().await;
            if asked {
                pool.recheck.notify_one();
            }
        }
    }

    /// Checks every backend at once, then every interval (spread), or when
    /// discovery asks.
    async fn check(&self, mut shutdown: ShutdownWatch) {
        let mut next_check = Instant::now();
        loop {
            let Some(pool) = self.0.upgrade() else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next_check) => {}
                _ = pool.recheck.notified() => {}
                _ = shutdown.changed() => return,
            }
            // Each check of the round starts at its backend's own point of
            // the interval (`health::phase_of`); the next round is counted
            // from this one's start, so a backend is checked once an interval.
            let round_started = Instant::now();
            pool.balancer.backends().run_health_check(true).await;
            pool.refresh_usable().await;
            let interval = pool.settings.load().health_check_interval;
            next_check = round_started + spread(interval, rand::random());
        }
    }
}

/// The time to the next round of checks: `interval` shortened by up to a
/// tenth, at random (`draw` in [0, 1)), as HAProxy's `spread-checks` does,
/// so that pools started together drift apart instead of probing all their
/// backends in the same instant every interval. Never longer than
/// configured: a backend going down is found no later than before.
fn spread(interval: Duration, draw: f64) -> Duration {
    interval.mul_f64(1.0 - draw.clamp(0.0, 1.0) / 10.0)
}

/// Where pool tasks run: the runtime of [`PoolsService`] and its shutdown
/// watch, known once it has started.
pub struct PoolTasks {
    started: OnceLock<(tokio::runtime::Handle, ShutdownWatch)>,
    /// Never sent: the shutdown watch of tasks spawned before that (their
    /// runtime's end stops them).
    unstarted: tokio::sync::watch::Sender<bool>,
}

impl Default for PoolTasks {
    fn default() -> Self {
        PoolTasks {
            started: OnceLock::new(),
            unstarted: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl PoolTasks {
    /// Runs `pool`'s task beside the others; before [`PoolsService`] has
    /// started (or without it, in tests), on the caller's runtime, until
    /// the pool is gone.
    pub fn spawn(&self, pool: &Arc<Pool>) {
        let task = PoolService::of(pool);
        match self.started.get() {
            Some((runtime, shutdown)) => {
                let shutdown = shutdown.clone();
                runtime.spawn(async move { task.run(shutdown).await });
            }
            None => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let shutdown = self.unstarted.subscribe();
                    runtime.spawn(async move { task.run(shutdown).await });
                }
                Err(e) => log::error!("no runtime to run the checks of pool {}: {e}", pool.name()),
            },
        }
    }
}

/// The one background service under every pool's task.
pub struct PoolsService {
    /// The pools of the config lb started with, taken at start.
    pools: Mutex<Vec<PoolService>>,
    tasks: Arc<PoolTasks>,
}

impl PoolsService {
    /// The service for `pools`; `tasks` learns its runtime when it starts.
    pub fn new(pools: &[Arc<Pool>], tasks: Arc<PoolTasks>) -> Self {
        PoolsService {
            pools: Mutex::new(pools.iter().map(PoolService::of).collect()),
            tasks,
        }
    }
}

#[async_trait]
impl BackgroundService for PoolsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let runtime = tokio::runtime::Handle::current();
        let _ = self.tasks.started.set((runtime.clone(), shutdown.clone()));
        for task in std::mem::take(&mut *lock(&self.pools)) {
            let shutdown = shutdown.clone();
            runtime.spawn(async move { task.run(shutdown).await });
        }
        let _ = shutdown.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_spread_over_the_last_tenth_of_the_interval() {
        let interval = Duration::from_secs(10);
        assert_eq!(spread(interval, 0.0), interval);
        assert_eq!(spread(interval, 0.5), Duration::from_millis(9_500));
        assert!(spread(interval, 0.999_999) > Duration::from_secs(9));
        assert_eq!(
            spread(interval, 7.0),
            Duration::from_secs(9),
            "draws are clamped"
        );
    }
}
