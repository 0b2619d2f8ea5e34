//! Passive health (outlier detection): a backend whose requests fail several
//! times in a row is ejected for a while, even if its health checks pass.
//!
//! The state of each backend is a few atomics, so recording an outcome and
//! checking for ejection never lock. While no backend is ejected, selection
//! pays one relaxed load (`latest_ejection_end`) and nothing else.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::clock::now_ms;
use super::members::{BackendState, StateMap};
use crate::config::PassiveHealthConfig;

/// Ejection decisions for the pool's backends (their state lives in
/// [`BackendState`]).
pub struct OutlierDetector {
    config: ArcSwap<PassiveHealthConfig>,
    /// Latest end of any ejection, in [`now_ms`] time; 0 when none is active.
    latest_ejection_end: AtomicU64,
}

impl OutlierDetector {
    /// A detector with these settings.
    pub fn new(config: PassiveHealthConfig) -> Self {
        OutlierDetector {
            config: ArcSwap::from_pointee(config),
            latest_ejection_end: AtomicU64::new(0),
        }
    }

    /// Applies new settings (a reload); ejections under way keep their end.
    pub fn set_config(&self, config: PassiveHealthConfig) {
        self.config.store(std::sync::Arc::new(config));
    }

    /// Whether a 5xx response counts as a failure.
    pub fn counts_5xx(&self) -> bool {
        self.config.load().count_5xx
    }

    /// Whether `backend` is ejected now. Logs a backend's return the first
    /// time its ejection is seen to have ended.
    pub fn is_ejected(&self, backend: &BackendState) -> bool {
        if self.latest_ejection_end.load(Relaxed) == 0 {
            return false;
        }
        let until = backend.ejected_until.load(Relaxed);
        if until == 0 {
            return false;
        }
        let now = now_ms();
        if now < until {
            return true;
        }
        if backend
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok()
        {
            backend.returned_at.store(now, Relaxed);
            // A backend whose active check fails returns only when it passes
            // again, and "backend ... up" says so then: one line per return.
            if backend.last_check().is_none_or(|check| check.passed) {
                log::info!("backend {} returns after its ejection", backend.addr);
            } else {
                log::debug!(
                    "backend {}: its ejection ended while its health check fails",
                    backend.addr
                );
            }
            let _ = self
                .latest_ejection_end
                .compare_exchange(until, 0, Relaxed, Relaxed);
        }
        false
    }

    /// Whether `backend` is ejected, without side effects (for reports).
    pub fn ejected_now(&self, backend: &BackendState) -> bool {
        backend.ejected_until.load(Relaxed) > now_ms()
    }

    /// Ends `backend`'s ejection, if any: its active health check has just
    /// gone from failing to passing, and active checks decide when a backend
    /// that failed them comes back. Returns whether it was ejected (the
    /// caller logs the return, once).
    pub fn readmit(&self, backend: &BackendState) -> bool {
        backend.consecutive_failures.store(0, Relaxed);
        let ejected = backend.ejected_until.swap(0, Relaxed) != 0;
        if ejected {
            backend.returned_at.store(now_ms(), Relaxed);
        }
        ejected
    }

    /// Records a request that `backend` served without failing.
    pub fn record_success(&self, backend: &BackendState) {
        // Load first: most requests succeed, and a store would dirty a shared cache line.
        if backend.consecutive_failures.load(Relaxed) != 0 {
            backend.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Records a failed request to `backend` (`reason` is for the log) and
    /// ejects it when it has failed `consecutive_failures` times in a row
    /// and `pool` has room for one more ejection.
    pub fn record_failure(
        &self,
        backend: &BackendState,
        pool: &StateMap,
        reason: &dyn std::fmt::Display,
    ) {
        let config = self.config.load();
        let threshold = config.consecutive_failures;
        let failures = backend.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if threshold == 0 || failures < threshold || backend.ejected_until.load(Relaxed) != 0 {
            return;
        }
        let addr = backend.addr;
        let now = now_ms();
        if !may_eject_one_more(pool, config.max_ejected_percent, now) {
            log::warn!(
                "backend {addr} failed {failures} requests in a row (last: {reason}) but stays: \
                 max_ejected_percent ({}%) of the pool is already ejected",
                config.max_ejected_percent
            );
            return;
        }
        let duration = next_ejection_length(&config, backend, now);
        let until = now + duration.as_millis() as u64;
        backend.ejected_until.store(until, Relaxed);
        backend.consecutive_failures.store(0, Relaxed);
        self.latest_ejection_end.fetch_max(until, Relaxed);
        log::warn!(
            "backend {addr} ejected for {} after {failures} failed requests in a row (last: {reason})",
            humantime::format_duration(duration)
        );
    }
}

/// Whether ejecting one more backend of `pool` keeps the ejected share within
/// `max_percent`.
fn may_eject_one_more(pool: &StateMap, max_percent: usize, now: u64) -> bool {
    let ejected = pool
        .values()
        .filter(|s| s.ejected_until.load(Relaxed) > now)
        .count();
    (ejected + 1) * 100 <= max_percent * pool.len()
}

/// The length of a backend's next ejection: `ejection_time`, doubled for each
/// ejection in a row, at most `max_ejection_time`. A backend that stayed in
/// for `max_ejection_time` since its last return starts over.
fn next_ejection_length(
    config: &PassiveHealthConfig,
    backend: &BackendState,
    now: u64,
) -> Duration {
    let returned_at = backend.returned_at.load(Relaxed);
    let calm = config.max_ejection_time.as_millis() as u64;
    if returned_at != 0 && now.saturating_sub(returned_at) > calm {
        backend.ejections.store(0, Relaxed);
    }
    let repeats = backend.ejections.fetch_add(1, Relaxed).min(30);
    config
        .ejection_time
        .saturating_mul(1 << repeats)
        .min(config.max_ejection_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn config(max_ejected_percent: usize) -> PassiveHealthConfig {
        PassiveHealthConfig {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(35),
            max_ejected_percent,
            count_5xx: false,
        }
    }

    fn pool(backends: u16) -> StateMap {
        (0..backends)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 8000 + i));
                (addr, Arc::new(BackendState::for_test(addr)))
            })
            .collect::<HashMap<_, _>>()
    }

    fn at(pool: &StateMap, i: u16) -> &BackendState {
        &pool[&SocketAddr::from(([127, 0, 0, 1], 8000 + i))]
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let d = OutlierDetector::new(config(50));
        let p = pool(4);
        let b = at(&p, 0);
        d.record_failure(b, &p, &"reset");
        d.record_failure(b, &p, &"reset");
        d.record_success(b);
        d.record_failure(b, &p, &"reset");
        d.record_failure(b, &p, &"reset");
        assert!(!d.is_ejected(b));
        d.record_failure(b, &p, &"reset");
        assert!(d.is_ejected(b));
        assert!(!d.is_ejected(at(&p, 1)));
        assert!(d.readmit(b));
        assert!(!d.is_ejected(b));
    }

    #[test]
    fn never_ejects_more_than_the_percentage() {
        let d = OutlierDetector::new(config(50));
        let p = pool(4);
        for i in 0..4 {
            for _ in 0..3 {
                d.record_failure(at(&p, i), &p, &"reset");
            }
        }
        let ejected = (0..4).filter(|&i| d.is_ejected(at(&p, i))).count();
        assert_eq!(ejected, 2);
    }

    #[test]
    fn ejections_double_up_to_the_maximum() {
        let c = config(100);
        let p = pool(1);
        let b = at(&p, 0);
        let now = now_ms();
        assert_eq!(next_ejection_length(&c, b, now), Duration::from_secs(10));
        assert_eq!(next_ejection_length(&c, b, now), Duration::from_secs(20));
        assert_eq!(next_ejection_length(&c, b, now), Duration::from_secs(35));
    }

    /// Fails `b` three times in a row: the configured threshold.
    fn fail_three_times(d: &OutlierDetector, b: &BackendState, p: &StateMap) {
        for _ in 0..3 {
            d.record_failure(b, p, &"reset");
        }
    }

    /// How long `b`'s ejection has left, rounded to the second.
    fn ejection_left(b: &BackendState) -> Duration {
        let left = b.ejected_until.load(Relaxed).saturating_sub(now_ms());
        Duration::from_secs((left + 500) / 1000)
    }

    #[test]
    fn a_backend_whose_ejection_ended_returns_and_is_ejected_twice_as_long_next() {
        let d = OutlierDetector::new(config(100));
        let p = pool(2);
        let b = at(&p, 0);
        fail_three_times(&d, b, &p);
        assert!(d.is_ejected(b));
        assert_eq!(ejection_left(b), Duration::from_secs(10));
        // Its ejection ends now.
        b.ejected_until.store(now_ms(), Relaxed);
        assert!(!d.is_ejected(b), "back once its time is up");
        assert!(!d.ejected_now(b));
        assert_ne!(b.returned_at.load(Relaxed), 0, "its return is noted");
        // The failures before its ejection count no more: two do not eject.
        d.record_failure(b, &p, &"reset");
        d.record_failure(b, &p, &"reset");
        assert!(!d.is_ejected(b));
        d.record_failure(b, &p, &"reset");
        assert!(d.is_ejected(b));
        assert_eq!(ejection_left(b), Duration::from_secs(20));
    }

    #[test]
    fn a_backend_that_stayed_in_for_the_longest_ejection_starts_over() {
        let c = config(100);
        let p = pool(1);
        let b = at(&p, 0);
        let now = 100_000;
        next_ejection_length(&c, b, now);
        next_ejection_length(&c, b, now);
        // Back 36 s ago, more than max_ejection_time (35 s): a first ejection again.
        b.returned_at.store(now - 36_000, Relaxed);
        assert_eq!(next_ejection_length(&c, b, now), Duration::from_secs(10));
        // Back 20 s ago: still a repeat offender.
        b.returned_at.store(now - 20_000, Relaxed);
        assert_eq!(next_ejection_length(&c, b, now), Duration::from_secs(20));
    }

    #[test]
    fn zero_consecutive_failures_turns_ejection_off_and_a_reload_turns_it_on() {
        let d = OutlierDetector::new(PassiveHealthConfig {
            consecutive_failures: 0,
            ..config(100)
        });
        let p = pool(2);
        let b = at(&p, 0);
        for _ in 0..50 {
            d.record_failure(b, &p, &"reset");
        }
        assert!(!d.is_ejected(b), "never ejected with the check off");
        d.set_config(PassiveHealthConfig {
            consecutive_failures: 1,
            ..config(100)
        });
        d.record_failure(b, &p, &"reset");
        assert!(d.is_ejected(b), "one failure ejects after the reload");
    }

    #[test]
    fn a_passing_health_check_readmits_and_forgets_the_failures() {
        let d = OutlierDetector::new(config(100));
        let p = pool(2);
        let b = at(&p, 0);
        d.record_failure(b, &p, &"reset");
        d.record_failure(b, &p, &"reset");
        assert!(!d.readmit(b), "it was not ejected");
        d.record_failure(b, &p, &"reset");
        d.record_failure(b, &p, &"reset");
        assert!(!d.is_ejected(b), "two failures since the readmission");
        d.record_failure(b, &p, &"reset");
        assert!(d.is_ejected(b));
    }
}
