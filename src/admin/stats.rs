//! Per-second statistics for the status page: each backend's requests per
//! second, error rate and p50/p99 latency over the last second, and a
//! minute of history for the chart.
//!
//! A background service samples the counters and latency histograms of
//! the backends of every current pool once a second (the pools of the
//! routing requests use, so pools a reload adds are sampled and removed
//! ones forgotten); the status page's JSON endpoint reads the samples.
//! Nothing here touches the request path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::core::Metric;
use serde::Serialize;

use crate::pool::members::BackendState;
use crate::proxy::Routing;
use crate::sync::lock;

/// Samples kept per backend: a minute at one a second.
const HISTORY: usize = 60;

/// One second of one backend.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub rps: f64,
    /// Failed requests (connect, reset, timeout, 5xx) per request, 0 to 1.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Counters as they were at the last sample.
#[derive(Default)]
struct Previous {
    requests: u64,
    failures: u64,
    buckets: Vec<(f64, u64)>,
}

#[derive(Default)]
struct BackendHistory {
    previous: Previous,
    samples: VecDeque<Sample>,
}

/// The samples of one pool's backends, by address.
type PoolHistory = HashMap<SocketAddr, BackendHistory>;

/// The samples of every backend, by pool name: one address in two pools
/// has two histories, as it has two metric series.
#[derive(Default)]
pub struct Stats {
    pools: Mutex<HashMap<String, PoolHistory>>,
}

impl Stats {
    /// The latest sample and the history (oldest first) of `addr` in the
    /// pool `upstream`.
    pub fn of(&self, upstream: &str, addr: &SocketAddr) -> (Sample, Vec<f64>) {
        let pools = lock(&self.pools);
        pools
            .get(upstream)
            .and_then(|backends| backends.get(addr))
            .map_or_else(Default::default, |h| {
                (
                    h.samples.back().copied().unwrap_or_default(),
                    h.samples.iter().map(|s| s.rps).collect(),
                )
            })
    }

    /// Takes one sample of every backend of `pools`, `elapsed` after the
    /// last; forgets the pools and backends no longer there.
    fn sample(&self, routing: &Routing, elapsed: Duration) {
        let mut histories = lock(&self.pools);
        histories.retain(|name, _| routing.pool_named(name).is_some());
        for pool in routing.pools() {
            let backends = histories.entry(pool.name().to_string()).or_default();
            sample_pool(backends, &pool.members().states(), elapsed);
        }
    }
}

/// Takes one sample of every backend in `states` into `backends`.
fn sample_pool(
    backends: &mut PoolHistory,
    states: &HashMap<SocketAddr, Arc<BackendState>>,
    elapsed: Duration,
) {
    backends.retain(|addr, _| states.contains_key(addr));
    for (addr, state) in states {
        let history = backends.entry(*addr).or_default();
        let (requests, responses_5xx) = state.metrics.totals();
        let failures = responses_5xx + state.errors.load(Relaxed);
        let buckets = cumulative_buckets(state);
        let new_requests = requests.saturating_sub(history.previous.requests);
        let new_failures = failures.saturating_sub(history.previous.failures);
        let window: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            .map(|(i, &(bound, count))| {
                let before = history.previous.buckets.get(i).map_or(0, |b| b.1);
                (bound, count.saturating_sub(before))
            })
            .collect();
        let sample = Sample {
            rps: new_requests as f64 / elapsed.as_secs_f64().max(0.001),
            error_rate: if new_requests == 0 {
                0.0
            } else {
                (new_failures as f64 / new_requests as f64).min(1.0)
            },
            p50_ms: quantile(&window, 0.50).map(|s| s * 1000.0),
            p99_ms: quantile(&window, 0.99).map(|s| s * 1000.0),
        };
        history.previous = Previous {
            requests,
            failures,
            buckets,
        };
        if history.samples.len() == HISTORY {
            history.samples.pop_front();
        }
        history.samples.push_back(sample);
    }
}

/// The backend's latency histogram: (upper bound in seconds, cumulative count).
fn cumulative_buckets(state: &BackendState) -> Vec<(f64, u64)> {
    let metric = state.metrics.duration().metric();
    metric
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect()
}

/// Estimates quantile `q` from cumulative bucket counts, interpolating
/// linearly inside the bucket that holds it. `None` without samples.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let in_bucket = (count - lower_count) as f64;
            let fraction = if in_bucket > 0.0 {
                (rank - lower_count as f64) / in_bucket
            } else {
                1.0
            };
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        lower_bound = bound;
        lower_count = count;
    }
    // Beyond the last bound: report the last bound.
    Some(lower_bound)
}

/// The background service that samples once a second.
pub struct Sampler {
    /// The routing requests use now, whose pools are sampled.
    pub routing: Arc<ArcSwap<Routing>>,
    pub stats: Arc<Stats>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let now = tokio::time::Instant::now();
                    self.stats.sample(&self.routing.load(), now - last);
                    last = now;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let buckets = [(0.001, 0), (0.01, 50), (0.1, 100)];
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((p99 - 0.0982).abs() < 1e-6, "{p99}");
        assert_eq!(quantile(&[(0.1, 0)], 0.5), None);
    }
}
