//! The backend pool: which backends exist, which are healthy, and which one
//! serves the next request.
//!
//! Selection walks one of Pingora's `LoadBalancer` rings (`balancer.rs`:
//! round robin, random, or Ketama for `consistent_hash`): readers never
//! lock (the ring lives in an `ArcSwap`), and round robin's pick is one
//! relaxed atomic add. `least_request` and `peak_ewma` draw two backends
//! from the random ring and take the one that costs less; slow start
//! thins a returning backend's share during its ramp. The rings' service
//! discovery is [`members::Members`]: configured entries, resolved
//! again every `discovery.interval`. [`PoolService`], a task on the one
//! background service of every pool ([`PoolsService`]), runs discovery
//! and the active health checks ([`health::Probe`]) on their intervals,
//! and at once when a reload or the admin API changes the pool. Passive health ([`outlier`]) and draining are checked per
//! candidate during selection. Requests and health checks reach backends
//! over the same transport (TLS, SNI, HTTP/2), built once per config by
//! [`transport::PeerTemplate`].

mod balancer;
mod candidates;
mod clock;
pub mod cutoff;
pub mod ewma;
pub mod health;
pub mod members;
pub mod outlier;
pub mod resolve;
mod service;
pub mod transport;

pub use service::{PoolService, PoolTasks, PoolsService};

/// The `User-Agent` of every health check probe, so a backend can tell
/// lb's checks from its users' requests (and log them apart, as `be` does).
pub const PROBE_USER_AGENT: &str = "lb-health-check";

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::lb::{Backend, Backends};
use pingora::prelude::*;
use tokio::sync::Notify;

use crate::config::{Balance, Config, OnMarkedDown, PoolConfig, WhenAllUnhealthy};
use crate::telemetry::metrics::{metrics, BackendMetrics};
use balancer::{Balancer, RingKind, UsableDiscovery, UsableSet};
use candidates::Candidates;
use cutoff::{BackendConnections, DepartedWatch, TrackedConnect};
use health::{Probe, SharedProbe};
use members::{BackendState, Discovery, Members};
use outlier::OutlierDetector;

/// The settings of the pool that a reload replaces.
struct PoolSettings {
    when_all_unhealthy: WhenAllUnhealthy,
    balance: Balance,
    /// How long a returning or added backend ramps up; None: no ramp.
    slow_start: Option<Duration>,
    /// `peak_ewma`'s decay time.
    ewma_decay: Option<Duration>,
    /// With `health_check.on_marked_down: close`: how requests connect, so
    /// that their connections can be shut down, and how a backend that left
    /// the pool with connections open is watched.
    tracked_connect: Option<(Arc<TrackedConnect>, DepartedWatch)>,
    health_check_interval: Duration,
    discovery_interval: Duration,
}

/// A reloaded config's changes to a running pool, built and checked by
/// [`Pool::prepare`], applied by [`Pool::apply`].
pub struct PoolUpdate {
    probe: health::PreparedProbe,
    passive_health: crate::config::PassiveHealthConfig,
    backends: Vec<crate::config::BackendConfig>,
    discovery: crate::config::DiscoveryConfig,
    settings: PoolSettings,
}

/// The backends lb spreads requests over.
pub struct Pool {
    /// The upstream's name (`default` for the top-level backends).
    name: String,
    /// Every backend, healthy or not; health checks run over it.
    balancer: Balancer,
    /// The same ring over the backends that are usable (healthy, not
    /// draining), rebuilt at each change of health, after each discovery
    /// and health round: selection walks it first, so a down backend costs
    /// a request nothing, and a returning one gets traffic at once.
    usable: Balancer,
    usable_set: Arc<UsableSet>,
    /// One rebuild of the usable ring at a time (Pingora's rule for
    /// updates of one view); health changes may come at once.
    usable_rebuild: tokio::sync::Mutex<()>,
    /// A change of health the usable ring has not followed yet.
    usable_stale: std::sync::atomic::AtomicBool,
    members: Arc<Members>,
    outliers: Arc<OutlierDetector>,
    probe: Arc<Probe>,
    settings: ArcSwap<PoolSettings>,
    /// How many ring steps a selection may take before giving up; enough to
    /// visit every backend even when the weights repeat some of them.
    max_steps: AtomicUsize,
    /// The connections of requests in flight, when `on_marked_down: close`.
    connections: Arc<BackendConnections>,
    /// Wakes [`PoolService`] to resolve and rebuild the ring now.
    refresh: Notify,
    /// Wakes [`PoolService`]'s checks after an asked-for resolution.
    recheck: Notify,
    /// The series of requests it answered with no backend (`backend="none"`),
    /// made at the first such request: a pool that a failed reload built
    /// and dropped leaves no series behind.
    unanswered: std::sync::OnceLock<BackendMetrics>,
}

/// The outcome of [`Pool::select`].
pub enum Selection {
    /// The backend to send the request to, and its state.
    Backend(Backend, Arc<BackendState>),
    /// No backend is healthy (and `when_all_unhealthy` is `fail`): 503.
    NoneHealthy,
    /// Every usable backend was already tried for this request: 502.
    Exhausted,
}

impl Pool {
    /// Builds the pool; [`Pool::resolve_all`] resolves its backends.
    pub fn new(config: &Config, upstream: &PoolConfig) -> Result<Arc<Pool>> {
        let members = Arc::new(Members::new(
            &upstream.name,
            &upstream.backends,
            &config.discovery,
        ));
        let outliers = Arc::new(OutlierDetector::new(config.passive_health.clone()));
        let probe = Arc::new(Probe::new(
            &upstream.health_check,
            &upstream.backend_transport,
            Arc::clone(&members),
            Arc::clone(&outliers),
        )?);
        let kind = RingKind::of(upstream.balancing.balance);
        let balancer = Balancer::new(
            kind,
            Backends::new(Box::new(Discovery(Arc::clone(&members)))),
            Box::new(SharedProbe(Arc::clone(&probe))),
        );
        let usable_set = Arc::new(UsableSet::default());
        let connections = Arc::<BackendConnections>::default();
        let usable = Balancer::unchecked(
            kind,
            Backends::new(Box::new(UsableDiscovery(Arc::clone(&usable_set)))),
        );
        let pool = Arc::new(Pool {
            name: upstream.name.clone(),
            balancer,
            usable,
            usable_set,
            members,
            outliers,
            probe,
            settings: ArcSwap::from_pointee(settings_of(config, upstream, &connections)),
            connections,
            max_steps: AtomicUsize::new(0),
            refresh: Notify::new(),
            recheck: Notify::new(),
            unanswered: std::sync::OnceLock::new(),
            usable_rebuild: tokio::sync::Mutex::new(()),
            usable_stale: std::sync::atomic::AtomicBool::new(false),
        });
        let _ = pool.probe.pool.set(Arc::downgrade(&pool));
        Ok(pool)
    }

    /// Resolves the backends of `pools` and builds their rings, all at
    /// once on one runtime of its own (Pingora's runtimes start later), so
    /// that they can select before their tasks start.
    pub fn resolve_all(pools: &[Arc<Pool>]) -> Result<()> {
        if pools.is_empty() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .or_err(
                ErrorType::InternalError,
                "cannot start a runtime to resolve backends",
            )?;
        runtime.block_on(futures::future::join_all(pools.iter().map(|p| p.update())));
        Ok(())
    }

    /// Checks what a reloaded config would change in this pool and builds
    /// it, changing nothing yet: [`Pool::apply`] puts it in service.
    pub fn prepare(&self, config: &Config, pool: &PoolConfig) -> Result<PoolUpdate> {
        Ok(PoolUpdate {
            probe: Probe::prepare(&pool.health_check, &pool.backend_transport)?,
            passive_health: config.passive_health.clone(),
            backends: pool.backends.clone(),
            discovery: config.discovery.clone(),
            settings: settings_of(config, pool, &self.connections),
        })
    }

    /// Applies a reloaded config's backends, health check, passive health
    /// and `when_all_unhealthy`, then resolves and rebuilds the ring at
    /// once. Cannot fail: [`Pool::prepare`] checked it.
    pub fn apply(&self, update: PoolUpdate) {
        self.probe.apply(update.probe);
        self.outliers.set_config(update.passive_health);
        self.members.set_config(&update.backends, &update.discovery);
        // Runtime changes last until the next reload: drained backends come back.
        for state in self.members.states().values() {
            state.draining.store(false, Relaxed);
        }
        self.settings.store(Arc::new(update.settings));
        self.refresh.notify_one();
    }

    /// How a request's backend connection is opened: by lb, when a
    /// backend marked down has its connections shut down; else by Pingora.
    pub fn tracked_connect(&self) -> Option<Arc<dyn pingora::connectors::L4Connect + Send + Sync>> {
        let (connect, _) = self.settings.load().tracked_connect.clone()?;
        Some(connect)
    }

    /// A backend was marked down: with `on_marked_down: close`, shuts down
    /// the connections of its requests in flight and says how many.
    fn marked_down(&self, addr: SocketAddr) -> Option<usize> {
        self.settings.load().tracked_connect.as_ref()?;
        Some(self.connections.shut_down(addr))
    }

    /// With `on_marked_down: close`, watches each backend that left the pool
    /// with connections open ([`cutoff::watch_departed`]).
    fn watch_departed(&self) {
        let Some((_, watch)) = self.settings.load().tracked_connect.clone() else {
            return;
        };
        for addr in self.connections.addresses() {
            if self.members.state(&addr).is_some() {
                continue;
            }
            let members = Arc::clone(&self.members);
            let probe = Arc::clone(&self.probe);
            tokio::spawn(cutoff::watch_departed(
                Arc::clone(&self.connections),
                addr,
                watch,
                move || members.state(&addr).is_some(),
                move || {
                    let probe = Arc::clone(&probe);
                    async move {
                        use pingora::lb::health_check::HealthCheck;
                        probe.check(&backend_at(addr, 1)).await.is_ok()
                    }
                },
            ));
        }
    }

    /// Asks the background service to resolve and rebuild the ring now.
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// The pool's membership (entries, states).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Passive health.
    pub fn outliers(&self) -> &OutlierDetector {
        &self.outliers
    }

    /// How it picks a backend, as configured now.
    pub fn balance(&self) -> Balance {
        self.settings.load().balance
    }

    /// Whether the active health checks find `addr` healthy.
    pub fn is_healthy(&self, addr: &SocketAddr) -> bool {
        let weight = self.members.state(addr).map_or(1, |s| s.weight);
        self.balancer.backends().ready(&backend_at(*addr, weight))
    }

    /// The backend a sticky cookie names, if it may serve: in the pool,
    /// healthy, not ejected, not draining, not tried yet.
    fn sticky_backend(
        &self,
        states: &members::StateMap,
        id: u64,
        tried: &[SocketAddr],
    ) -> Option<Arc<BackendState>> {
        let state = states.values().find(|s| s.sticky_id == id)?;
        let usable = !tried.contains(&state.addr)
            && !state.draining.load(Relaxed)
            && !self.outliers.is_ejected(state)
            && self
                .balancer
                .backends()
                .ready(&backend_at(state.addr, state.weight));
        usable.then(|| Arc::clone(state))
    }

    async fn update(&self) {
        if let Err(e) = self.balancer.update().await {
            log::warn!("cannot update the backend pool: {e}");
        }
        self.watch_departed();
        let states = self.members.states();
        let total_weight: usize = states.values().map(|s| s.weight).sum();
        self.max_steps
            .store(2 * (total_weight + states.len()), Relaxed);
        drop(states);
        self.refresh_usable().await;
    }

    /// Follows a change of health in the usable ring. Changes that come
    /// together (a whole rack going down: a thousand flips in one round)
    /// make a few rebuilds, not one each: whoever holds the rebuild goes
    /// on while changes keep coming; the others leave it to them.
    async fn health_changed(&self) {
        self.usable_stale.store(true, Relaxed);
        while self.usable_stale.load(Relaxed) {
            let Ok(_one_at_a_time) = self.usable_rebuild.try_lock() else {
                return;
            };
            self.usable_stale.store(false, Relaxed);
            self.rebuild_usable().await;
        }
    }

    /// Brings the usable ring up to date (after a discovery or a round).
    async fn refresh_usable(&self) {
        let _one_at_a_time = self.usable_rebuild.lock().await;
        self.rebuild_usable().await;
    }

    /// Rebuilds the usable ring when the backends that are healthy and not
    /// draining changed; the caller holds `usable_rebuild`.
    async fn rebuild_usable(&self) {
        let states = self.members.states();
        let checked = self.balancer.backends();
        let usable = checked
            .get_backend()
            .iter()
            .filter(|b| {
                // Selection no longer walks a down backend, where it used to
                // see its ejection end: see it here, so that a return is
                // announced once, by its health check ("up").
                let ready = checked.ready(b);
                if !ready {
                    if let Some(state) = b.addr.as_inet().and_then(|a| states.get(a)) {
                        let _ = self.outliers.is_ejected(state);
                    }
                }
                ready
            })
            .filter(|b| {
                b.addr
                    .as_inet()
                    .and_then(|addr| states.get(addr))
                    .is_some_and(|s| !s.draining.load(Relaxed))
            })
            .cloned()
            .collect();
        drop(states);
        if self.usable_set.replace(usable) {
            if let Err(e) = self.usable.update().await {
                log::warn!("cannot rebuild the usable ring of pool {}: {e}", self.name);
            }
        }
    }

    /// Picks a backend by the pool's balance that is healthy, not ejected,
    /// not draining and not in `tried`; a sticky cookie's backend first.
    /// When none is healthy, `when_all_unhealthy: try_all` picks among all
    /// backends not tried yet.
    pub fn select(&self, tried: &[SocketAddr], key: &[u8], sticky: Option<u64>) -> Selection {
        let states = self.members.states();
        if let Some(state) = sticky.and_then(|id| self.sticky_backend(&states, id, tried)) {
            return Selection::Backend(backend_at(state.addr, state.weight), state);
        }
        let settings = self.settings.load();
        let candidates = Candidates {
            pool: self,
            states: &states,
            tried,
            max_steps: self.max_steps.load(Relaxed),
        };
        let chosen = match settings.balance {
            Balance::LeastRequest | Balance::PeakEwma => candidates.two_choices(&settings),
            _ => candidates.one_choice(key, settings.slow_start),
        };
        let chosen = chosen.or_else(|| {
            (settings.when_all_unhealthy == WhenAllUnhealthy::TryAll)
                .then(|| candidates.first(b"", |_, _| true))
                .flatten()
        });
        match chosen {
            Some(state) => Selection::Backend(backend_at(state.addr, state.weight), state),
            None if tried.is_empty() => Selection::NoneHealthy,
            None => Selection::Exhausted,
        }
    }

    /// The metrics of the requests it could give no backend (503, 502).
    pub fn unanswered(&self) -> &BackendMetrics {
        self.unanswered
            .get_or_init(|| metrics().for_backend(&self.name, "none"))
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `upstream` can be applied to this pool by a reload: a
    /// balance that walks another kind of ring (round robin, random,
    /// consistent hash) makes a new pool.
    pub fn fits(&self, upstream: &PoolConfig) -> bool {
        self.balancer.kind() == RingKind::of(upstream.balancing.balance)
    }

    /// Records that `backend` answered a request without failing.
    pub fn record_success(&self, backend: &BackendState) {
        self.outliers.record_success(backend);
    }

    /// Records a failed request to `backend`; enough in a row eject it.
    pub fn record_failure(&self, backend: &BackendState, reason: &dyn std::fmt::Display) {
        backend.errors.fetch_add(1, Relaxed);
        self.outliers
            .record_failure(backend, &self.members.states(), reason);
    }
}

/// Pingora's view of the backend at `addr`.
fn backend_at(addr: SocketAddr, weight: usize) -> Backend {
    Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight,
        ext: pingora::lb::Extensions::new(),
    }
}

fn settings_of(
    config: &Config,
    upstream: &PoolConfig,
    connections: &Arc<BackendConnections>,
) -> PoolSettings {
    let close = upstream.health_check.on_marked_down == OnMarkedDown::Close;
    PoolSettings {
        tracked_connect: close.then(|| {
            let connect = TrackedConnect {
                connections: Arc::clone(connections),
                timeout: config.timeouts.connect,
            };
            let watch = DepartedWatch {
                interval: upstream.health_check.interval,
                unhealthy_threshold: upstream.health_check.unhealthy_threshold.get(),
            };
            (Arc::new(connect), watch)
        }),
        when_all_unhealthy: config.when_all_unhealthy,
        health_check_interval: upstream.health_check.interval,
        discovery_interval: config.discovery.interval,
        balance: upstream.balancing.balance,
        slow_start: upstream.balancing.slow_start,
        ewma_decay: upstream.balancing.ewma_decay,
    }
}
