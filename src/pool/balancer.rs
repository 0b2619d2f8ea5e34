//! The three kinds of Pingora `LoadBalancer` a pool may hold: weighted
//! round robin (`round_robin`), weighted random (`random`, and the two
//! random choices of `least_request` and `peak_ewma`) and Ketama consistent
//! hashing (`consistent_hash`). All share lb's discovery and health check;
//! only the ring and how it is walked differ.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{BackendSelection, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;

use crate::config::Balance;

/// Which ring a balance needs; a reload that changes it makes a new pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RingKind {
    RoundRobin,
    Random,
    Hash,
}

impl RingKind {
    /// The ring `balance` walks.
    pub(super) fn of(balance: Balance) -> RingKind {
        match balance {
            Balance::RoundRobin => RingKind::RoundRobin,
            Balance::Random | Balance::LeastRequest | Balance::PeakEwma => RingKind::Random,
            Balance::ConsistentHash => RingKind::Hash,
        }
    }
}

/// A pool's ring.
pub(super) enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<KetamaHashing>),
}

/// A Pingora balancer over `backends`, checked by `health_check`.
fn checked<S>(
    backends: Backends,
    health_check: Box<dyn HealthCheck + Send + Sync>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut balancer = LoadBalancer::from_backends(backends);
    balancer.set_health_check(health_check);
    balancer
}

/// The backends a pool's usable ring holds: those healthy and not draining
/// when it was last refreshed.
#[derive(Default)]
pub(super) struct UsableSet(ArcSwap<BTreeSet<Backend>>);

impl UsableSet {
    /// Replaces the set; false when it was the same.
    pub(super) fn replace(&self, usable: BTreeSet<Backend>) -> bool {
        if **self.0.load() == usable {
            return false;
        }
        self.0.store(Arc::new(usable));
        true
    }
}

/// The usable ring's discovery: the set as it is.
pub(super) struct UsableDiscovery(pub Arc<UsableSet>);

#[async_trait]
impl ServiceDiscovery for UsableDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.0 .0.load()).clone(), HashMap::new()))
    }
}

impl Balancer {
    /// A ring of `kind` over `backends` with no health check of its own:
    /// the usable ring, whose backends were healthy when it was built.
    pub(super) fn unchecked(kind: RingKind, backends: Backends) -> Self {
        match kind {
            RingKind::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends)),
            RingKind::Random => Balancer::Random(LoadBalancer::from_backends(backends)),
            RingKind::Hash => Balancer::Hash(LoadBalancer::from_backends(backends)),
        }
    }

    /// A ring of `kind` over `backends`, checked by `health_check`.
    pub(super) fn new(
        kind: RingKind,
        backends: Backends,
        health_check: Box<dyn HealthCheck + Send + Sync>,
    ) -> Self {
        match kind {
            RingKind::RoundRobin => Balancer::RoundRobin(checked(backends, health_check)),
            RingKind::Random => Balancer::Random(checked(backends, health_check)),
            RingKind::Hash => Balancer::Hash(checked(backends, health_check)),
        }
    }

    /// Which kind of ring it is.
    pub(super) fn kind(&self) -> RingKind {
        match self {
            Balancer::RoundRobin(_) => RingKind::RoundRobin,
            Balancer::Random(_) => RingKind::Random,
            Balancer::Hash(_) => RingKind::Hash,
        }
    }

    /// The backends and their health.
    pub(super) fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(b) => b.backends(),
            Balancer::Random(b) => b.backends(),
            Balancer::Hash(b) => b.backends(),
        }
    }

    /// Discovers the backends again and rebuilds the ring.
    pub(super) async fn update(&self) -> Result<()> {
        match self {
            Balancer::RoundRobin(b) => b.update().await,
            Balancer::Random(b) => b.update().await,
            Balancer::Hash(b) => b.update().await,
        }
    }

    /// The first backend `accept` takes, walking the ring from `key` (the
    /// key is ignored by round robin and random).
    pub(super) fn select_with<F>(&self, key: &[u8], max_steps: usize, accept: F) -> Option<Backend>
    where
        F: Fn(&Backend, bool) -> bool,
    {
        match self {
            Balancer::RoundRobin(b) => b.select_with(key, max_steps, accept),
            Balancer::Random(b) => b.select_with(key, max_steps, accept),
            Balancer::Hash(b) => b.select_with(key, max_steps, accept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::lb::discovery::Static;
    use pingora::lb::health_check::TcpHealthCheck;

    /// A ring of `kind` over three backends, discovered.
    fn ring(kind: RingKind) -> Balancer {
        let discovery =
            Static::try_from_iter(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])
                .expect("three addresses");
        let balancer = Balancer::new(kind, Backends::new(discovery), TcpHealthCheck::new());
        futures::executor::block_on(balancer.update()).expect("discover the backends");
        balancer
    }

    fn pick(ring: &Balancer, key: &[u8], refused: &[String]) -> String {
        ring.select_with(key, 256, |b, _| !refused.contains(&b.addr.to_string()))
            .expect("a backend")
            .addr
            .to_string()
    }

    #[test]
    fn the_two_choice_balances_share_the_random_ring() {
        for (balance, kind) in [
            (Balance::RoundRobin, RingKind::RoundRobin),
            (Balance::Random, RingKind::Random),
            (Balance::LeastRequest, RingKind::Random),
            (Balance::PeakEwma, RingKind::Random),
            (Balance::ConsistentHash, RingKind::Hash),
        ] {
            assert_eq!(RingKind::of(balance), kind, "{balance:?}");
            assert_eq!(ring(kind).kind(), kind);
        }
    }

    #[test]
    fn a_hash_ring_keeps_a_key_on_one_backend_and_walks_past_a_refused_one() {
        let hash = ring(RingKind::Hash);
        let first = pick(&hash, b"user-42", &[]);
        for _ in 0..10 {
            assert_eq!(pick(&hash, b"user-42", &[]), first);
        }
        let next = pick(&hash, b"user-42", std::slice::from_ref(&first));
        assert_ne!(next, first);
        assert_eq!(
            pick(&hash, b"user-42", std::slice::from_ref(&first)),
            next,
            "the walk past a refused backend is the same each time"
        );
    }

    #[test]
    fn round_robin_takes_every_backend_in_turn() {
        let rr = ring(RingKind::RoundRobin);
        let mut seen: Vec<String> = (0..3).map(|_| pick(&rr, b"ignored", &[])).collect();
        seen.sort();
        assert_eq!(seen, ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]);
        assert_eq!(rr.backends().get_backend().len(), 3);
    }
}
