//! Memory that comes back after a burst: a background service that asks the
//! allocator, once a second, to return to the system the free memory it
//! holds.
//!
//! mimalloc (the binary's allocator) frees a page's memory only some time
//! after the page empties (`purge_delay`, 1 s), and only when a thread calls
//! into it after that. A burst of connections (each slow upload holds
//! Pingora's 64 KiB body buffer) ends with the worker threads idle, so
//! nothing ever purges: 1,500 slow uploads left lb at 178 MB from 30, an
//! hour later still (bench/RESULTS.md, "Memory after a storm"). Purging at
//! once on every free (`purge_delay` 0) brings it back, but puts an
//! `madvise` and page faults on the request path; a periodic collect from
//! a thread of its own keeps the request path as it is.
//!
//! The library forbids `unsafe`; the binary, which chose the allocator,
//! registers the collect call with [`set_collector`].

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// How often the allocator is asked to return free memory.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// The allocator's collect call, registered by the binary.
static COLLECTOR: OnceLock<fn()> = OnceLock::new();

/// Registers `collect`, a call that makes the process's allocator return
/// the free memory whose purge delay has passed. Only the first call counts.
pub fn set_collector(collect: fn()) {
    let _ = COLLECTOR.set(collect);
}

/// The background service: calls the registered collector every second
/// until shutdown; does nothing when none is registered.
pub struct ReturnFreeMemory;

#[async_trait]
impl BackgroundService for ReturnFreeMemory {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(collect) = COLLECTOR.get().copied() else {
            return;
        };
        let mut ticks = tokio::time::interval(COLLECT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => collect(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
