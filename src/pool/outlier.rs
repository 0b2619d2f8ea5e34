//! Passive health (outlier detection): a backend whose requests fail several
//! times in a row is ejected for a while, even if its health checks pass.
//!
//! The state of each backend is a few atomics, so recording an outcome and
//! checking for ejection never lock. While no backend is ejected, selection
//! pays one relaxed load (`latest_ejection_end`) and nothing else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::PassiveHealthConfig;

/// Ejection state of every backend of the pool.
pub struct OutlierDetector {
    config: PassiveHealthConfig,
    backends: HashMap<SocketAddr, BackendOutcomes>,
    /// Latest end of any ejection, in [`now_ms`] time; 0 when none is active.
    latest_ejection_end: AtomicU64,
}

/// One backend's recent outcomes.
#[derive(Default)]
struct BackendOutcomes {
    consecutive_failures: AtomicU32,
    /// End of the current ejection in [`now_ms`] time; 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row; each doubles the next one's length.
    ejections: AtomicU32,
    /// When the backend last came back from an ejection, in [`now_ms`] time.
    returned_at: AtomicU64,
}

/// Milliseconds since the first call, from a monotonic clock; never 0.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

impl OutlierDetector {
    /// A detector for the backends at `addrs`.
    pub fn new(config: PassiveHealthConfig, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        OutlierDetector {
            config,
            backends: addrs
                .into_iter()
                .map(|a| (a, BackendOutcomes::default()))
                .collect(),
            latest_ejection_end: AtomicU64::new(0),
        }
    }

    /// Whether `addr` is ejected now. Logs a backend's return the first time
    /// its ejection is seen to have ended.
    pub fn is_ejected(&self, addr: &SocketAddr) -> bool {
        if self.latest_ejection_end.load(Relaxed) == 0 {
            return false;
        }
        let Some(outcomes) = self.backends.get(addr) else {
            return false;
        };
        let until = outcomes.ejected_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        let now = now_ms();
        if now < until {
            return true;
        }
        if outcomes
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            outcomes.returned_at.store(now, Relaxed);
            log::info!("backend {addr} returns after its ejection");
            let _ = self
                .latest_ejection_end
                .compare_exchange(until, 0, Relaxed, Relaxed);
        }
        false
    }

    /// Ends `addr`'s ejection, if any: its active health check has just gone
    /// from failing to passing, and active checks decide when a backend that
    /// failed them comes back.
    pub fn readmit(&self, addr: &SocketAddr) {
        let Some(outcomes) = self.backends.get(addr) else {
            return;
        };
        outcomes.consecutive_failures.store(0, Relaxed);
        if outcomes.ejected_until.swap(0, Relaxed) != 0 {
            outcomes.returned_at.store(now_ms(), Relaxed);
            log::info!("backend {addr} returns: its health check passes again");
        }
    }

    /// Records a request that `addr` served without failing.
    pub fn record_success(&self, addr: &SocketAddr) {
        if let Some(outcomes) = self.backends.get(addr) {
            // Load first: most requests succeed, and a store would dirty a shared cache line.
            if outcomes.consecutive_failures.load(Relaxed) != 0 {
                outcomes.consecutive_failures.store(0, Relaxed);
            }
        }
    }

    /// Records a failed request to `addr` (`reason` is for the log) and ejects
    /// the backend when it has failed `consecutive_failures` times in a row.
    pub fn record_failure(&self, addr: &SocketAddr, reason: &dyn std::fmt::Display) {
        let threshold = self.config.consecutive_failures;
        let Some(outcomes) = self.backends.get(addr) else {
            return;
        };
        let failures = outcomes.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if threshold == 0 || failures < threshold || outcomes.ejected_until.load(Relaxed) != 0 {
            return;
        }
        let now = now_ms();
        if !self.may_eject_one_more(now) {
            log::warn!(
                "backend {addr} failed {failures} requests in a row (last: {reason}) but stays: \
                 max_ejected_percent ({}%) of the pool is already ejected",
                self.config.max_ejected_percent
            );
            return;
        }
        let duration = self.next_ejection_length(outcomes, now);
        let until = now + duration.as_millis() as u64;
        outcomes.ejected_until.store(until, Relaxed);
        outcomes.consecutive_failures.store(0, Relaxed);
        self.latest_ejection_end.fetch_max(until, Relaxed);
        log::warn!(
            "backend {addr} ejected for {} after {failures} failed requests in a row (last: {reason})",
            humantime::format_duration(duration)
        );
    }

    /// Whether ejecting one more backend keeps the ejected share within
    /// `max_ejected_percent`.
    fn may_eject_one_more(&self, now: u64) -> bool {
        let ejected = self
            .backends
            .values()
            .filter(|o| o.ejected_until.load(Relaxed) > now)
            .count();
        (ejected + 1) * 100 <= self.config.max_ejected_percent * self.backends.len()
    }

    /// The length of a backend's next ejection: `ejection_time`, doubled for
    /// each ejection in a row, at most `max_ejection_time`. A backend that
    /// stayed in for `max_ejection_time` since its last return starts over.
    fn next_ejection_length(&self, outcomes: &BackendOutcomes, now: u64) -> Duration {
        let returned_at = outcomes.returned_at.load(Relaxed);
        let calm = self.config.max_ejection_time.as_millis() as u64;
        if returned_at != 0 && now.saturating_sub(returned_at) > calm {
            outcomes.ejections.store(0, Relaxed);
        }
        let repeats = outcomes.ejections.fetch_add(1, Relaxed).min(30);
        self.config
            .ejection_time
            .saturating_mul(1 << repeats)
            .min(self.config.max_ejection_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(backends: usize, max_ejected_percent: usize) -> OutlierDetector {
        let config = PassiveHealthConfig {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            max_ejected_percent,
            count_5xx: false,
        };
        OutlierDetector::new(
            config,
            (0..backends).map(|i| SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16))),
        )
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8000 + i))
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let d = detector(4, 50);
        d.record_failure(&addr(0), &"reset");
        d.record_failure(&addr(0), &"reset");
        d.record_success(&addr(0));
        d.record_failure(&addr(0), &"reset");
        d.record_failure(&addr(0), &"reset");
        assert!(!d.is_ejected(&addr(0)));
        d.record_failure(&addr(0), &"reset");
        assert!(d.is_ejected(&addr(0)));
        assert!(!d.is_ejected(&addr(1)));
    }

    #[test]
    fn never_ejects_more_than_the_percentage() {
        let d = detector(4, 50);
        for i in 0..4 {
            for _ in 0..3 {
                d.record_failure(&addr(i), &"reset");
            }
        }
        let ejected = (0..4).filter(|&i| d.is_ejected(&addr(i))).count();
        assert_eq!(ejected, 2);
    }

    #[test]
    fn ejections_double_up_to_the_maximum() {
        let d = detector(2, 100);
        let outcomes = &d.backends[&addr(0)];
        let now = now_ms();
        assert_eq!(
            d.next_ejection_length(outcomes, now),
            Duration::from_secs(10)
        );
        assert_eq!(
            d.next_ejection_length(outcomes, now),
            Duration::from_secs(20)
        );
        assert_eq!(
            d.next_ejection_length(outcomes, now),
            Duration::from_secs(35)
        );
    }
}
