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
mod clock;
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

use crate::config::{Balance, Config, PoolConfig, WhenAllUnhealthy};
use crate::telemetry::metrics::{metrics, BackendMetrics};
use balancer::{Balancer, RingKind};
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
    health_check_interval: Duration,
    discovery_interval: Duration,
}

/// A reloaded config's changes to a running pool, built and checked by
/// [`Pool::prepare`], applied by [`Pool::apply`].
pub struct PoolUpdate {
    probe: health::PreparedProbe,
    passive_health: crate::config::PassiveHealthConfig,
    backends: Vec<crate::config::BackendConfig>,
    resolver: Option<SocketAddr>,
    settings: PoolSettings,
}

/// The backends lb spreads requests over.
pub struct Pool {
    /// The upstream's name (`default` for the top-level backends).
    name: String,
    balancer: Balancer,
    members: Arc<Members>,
    outliers: Arc<OutlierDetector>,
    probe: Arc<Probe>,
    settings: ArcSwap<PoolSettings>,
    /// How many ring steps a selection may take before giving up; enough to
    /// visit every backend even when the weights repeat some of them.
    max_steps: AtomicUsize,
    /// Wakes [`PoolService`] to resolve and rebuild the ring now.
    refresh: Notify,
    /// The series of requests it answered with no backend (`backend="none"`).
    unanswered: BackendMetrics,
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
            config.discovery.resolver,
        ));
        let outliers = Arc::new(OutlierDetector::new(config.passive_health.clone()));
        let probe = Arc::new(Probe::new(
            &upstream.health_check,
            &upstream.backend_transport,
            Arc::clone(&members),
            Arc::clone(&outliers),
        )?);
        let balancer = Balancer::new(
            RingKind::of(upstream.balancing.balance),
            Backends::new(Box::new(Discovery(Arc::clone(&members)))),
            Box::new(SharedProbe(Arc::clone(&probe))),
        );
        let pool = Arc::new(Pool {
            name: upstream.name.clone(),
            balancer,
            members,
            outliers,
            probe,
            settings: ArcSwap::from_pointee(settings_of(config, upstream)),
            max_steps: AtomicUsize::new(0),
            refresh: Notify::new(),
            unanswered: metrics().for_backend(&upstream.name, "none"),
        });
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
            resolver: config.discovery.resolver,
            settings: settings_of(config, pool),
        })
    }

    /// Applies a reloaded config's backends, health check, passive health
    /// and `when_all_unhealthy`, then resolves and rebuilds the ring at
    /// once. Cannot fail: [`Pool::prepare`] checked it.
    pub fn apply(&self, update: PoolUpdate) {
        self.probe.apply(update.probe);
        self.outliers.set_config(update.passive_health);
        self.members.set_config(&update.backends, update.resolver);
        // Runtime changes last until the next reload: drained backends come back.
        for state in self.members.states().values() {
            state.draining.store(false, Relaxed);
        }
        self.settings.store(Arc::new(update.settings));
        self.refresh.notify_one();
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
        let states = self.members.states();
        let total_weight: usize = states.values().map(|s| s.weight).sum();
        self.max_steps
            .store(2 * (total_weight + states.len()), Relaxed);
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
        &self.unanswered
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

/// What `peak_ewma` charges a backend that has requests in flight and no
/// answer yet to measure (Finagle's penalty): more than any real latency,
/// so a new backend gets one request at a time until it has answered one.
const UNMEASURED_BUSY_COST: f64 = 1e15;

/// What sending one more request to `state` costs, per unit of weight:
/// the requests in flight (`least_request`), times the latency estimate
/// for `peak_ewma`. A backend without a latency sample and nothing in
/// flight costs 0 there, so it is tried and measured. A backend in slow
/// start costs more by the share it has not reached yet.
///
/// `least_request` counts the requests already in flight, not with this
/// one: `(in_flight + 1) / weight` made an idle weight-2 backend always
/// cheaper than an idle weight-1 one, and one request at a time sent all
/// 300 of a test to the weight-2 backend. Idle backends now tie, and a tie
/// goes to the first choice, drawn by weight: 1:2 as the weights say.
fn cost(state: &BackendState, settings: &PoolSettings) -> f64 {
    let in_flight = state.in_flight.load(Relaxed);
    let per_weight = |n: usize| n as f64 / state.weight.max(1) as f64;
    let cost = match (settings.balance, settings.ewma_decay) {
        (Balance::PeakEwma, Some(decay)) => match state.latency.estimate(decay) {
            0.0 if in_flight > 0 => UNMEASURED_BUSY_COST,
            latency => latency * per_weight(in_flight + 1),
        },
        _ => per_weight(in_flight),
    };
    settings
        .slow_start
        .map_or(cost, |ramp| cost / state.ramp_share(ramp))
}

/// Whether `state`, in slow start, takes this request: with the chance of
/// the share it has reached. A hashed pool decides by the key, so a key
/// moves to a returning backend once and stays; the others decide at
/// random.
fn takes_its_turn(state: &BackendState, slow_start: Duration, hashed_key: Option<&[u8]>) -> bool {
    let share = state.ramp_share(slow_start);
    if share >= 1.0 {
        return true;
    }
    let draw = match hashed_key {
        Some(key) => members::fnv1a(key) as f64 / u64::MAX as f64,
        None => rand::random::<f64>(),
    };
    draw < share
}

/// The backends one request may go to: those of `pool` in `states` not
/// yet `tried`, not draining and not ejected.
struct Candidates<'a> {
    pool: &'a Pool,
    states: &'a members::StateMap,
    tried: &'a [SocketAddr],
    max_steps: usize,
}

impl Candidates<'_> {
    /// The state of `backend` if it may serve this request.
    fn usable(&self, backend: &Backend) -> Option<&Arc<BackendState>> {
        let addr = backend.addr.as_inet()?;
        let state = self.states.get(addr)?;
        let usable = !self.tried.contains(addr)
            && !state.draining.load(Relaxed)
            && !self.pool.outliers.is_ejected(state);
        usable.then_some(state)
    }

    /// The first usable backend `accept` takes (given its state and its
    /// active health), walking the ring from `key`. A random ring is walked
    /// at random, so it may miss the one backend left: then every backend
    /// is looked at in turn.
    fn first(
        &self,
        key: &[u8],
        accept: impl Fn(&BackendState, bool) -> bool,
    ) -> Option<Arc<BackendState>> {
        let take = |backend: &Backend, healthy: bool| {
            self.usable(backend)
                .is_some_and(|state| accept(state, healthy))
        };
        let ring = &self.pool.balancer;
        let found = ring
            .select_with(key, self.max_steps, take)
            .and_then(|backend| self.usable(&backend).cloned());
        match found {
            None if ring.kind() == RingKind::Random => self
                .states
                .values()
                .find(|state| {
                    let backend = backend_at(state.addr, state.weight);
                    take(&backend, ring.backends().ready(&backend))
                })
                .cloned(),
            found => found,
        }
    }

    /// `round_robin`, `random` and `consistent_hash`: the first healthy
    /// backend on the ring. A backend in slow start lets some of its turns
    /// pass to the next, unless every backend would.
    fn one_choice(&self, key: &[u8], slow_start: Option<Duration>) -> Option<Arc<BackendState>> {
        let Some(ramp) = slow_start else {
            return self.first(key, |_, healthy| healthy);
        };
        let hashed_key = (self.pool.balancer.kind() == RingKind::Hash).then_some(key);
        self.first(key, |state, healthy| {
            healthy && takes_its_turn(state, ramp, hashed_key)
        })
        .or_else(|| self.first(key, |_, healthy| healthy))
    }

    /// `least_request` and `peak_ewma`: two healthy backends at random,
    /// the one that costs less by the balance.
    /// On a tie the first wins: it is drawn by weight, and a backend in
    /// slow start is drawn first only with the chance of its share (as
    /// [`Self::one_choice`] lets it take its turn), so idle backends, which
    /// tie, are chosen as the weights and the ramp say.
    fn two_choices(&self, settings: &PoolSettings) -> Option<Arc<BackendState>> {
        let first = match settings.slow_start {
            Some(ramp) => self
                .first(b"", |state, healthy| {
                    healthy && takes_its_turn(state, ramp, None)
                })
                .or_else(|| self.first(b"", |_, healthy| healthy)),
            None => self.first(b"", |_, healthy| healthy),
        }?;
        let second = self.first(b"", |state, healthy| healthy && state.addr != first.addr);
        Some(match second {
            Some(second) if cost(&second, settings) < cost(&first, settings) => second,
            _ => first,
        })
    }
}

fn settings_of(config: &Config, upstream: &PoolConfig) -> PoolSettings {
    PoolSettings {
        when_all_unhealthy: config.when_all_unhealthy,
        health_check_interval: upstream.health_check.interval,
        discovery_interval: config.discovery.interval,
        balance: upstream.balancing.balance,
        slow_start: upstream.balancing.slow_start,
        ewma_decay: upstream.balancing.ewma_decay,
    }
}
