//! The pool's monotonic clock: time since the process's first reading, as
//! plain integers that fit in atomics (ejection ends, latency stamps, slow
//! start). One origin for all of them.

use std::sync::OnceLock;
use std::time::Instant;

/// The process's time origin.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the origin; never 0, so 0 can mean "unset".
pub fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// Nanoseconds since the origin.
pub fn now_nanos() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}
