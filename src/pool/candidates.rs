//! The backends one request may go to, and how a pick is made among them:
//! the usable ring first, then the whole ring; one or two random choices;
//! the slow start's turns; what a backend costs `least_request` and
//! `peak_ewma`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::Backend;

use super::balancer::RingKind;
use super::members::{self, BackendState};
use super::{backend_at, Pool, PoolSettings};
use crate::config::Balance;

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
pub(super) struct Candidates<'a> {
    pub(super) pool: &'a Pool,
    pub(super) states: &'a members::StateMap,
    pub(super) tried: &'a [SocketAddr],
    pub(super) max_steps: usize,
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
    pub(super) fn first(
        &self,
        key: &[u8],
        accept: impl Fn(&BackendState, bool) -> bool,
    ) -> Option<Arc<BackendState>> {
        let take = |backend: &Backend, healthy: bool| {
            self.usable(backend)
                .is_some_and(|state| accept(state, healthy))
        };
        let ring = &self.pool.balancer;
        // The usable ring first; its backends' health is read from the
        // checked ring, since a check may have failed since it was built.
        let usable = self
            .pool
            .usable
            .select_with(key, self.max_steps, |b, _| {
                take(b, ring.backends().ready(b))
            })
            .and_then(|backend| self.usable(&backend).cloned());
        if usable.is_some() {
            return usable;
        }
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
    pub(super) fn one_choice(
        &self,
        key: &[u8],
        slow_start: Option<Duration>,
    ) -> Option<Arc<BackendState>> {
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
    pub(super) fn two_choices(&self, settings: &PoolSettings) -> Option<Arc<BackendState>> {
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
