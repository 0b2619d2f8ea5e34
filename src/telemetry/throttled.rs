//! Warnings that clients can cause at will (a refused connection, say): at
//! most one line per interval, which says how many it stands for, so that a
//! flood cannot fill the log or hide lb's own faults.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often one throttled warning may be written.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One throttled warning: the time of its last line and what came since.
#[derive(Debug, Default)]
pub struct Throttled {
    /// Milliseconds since the process's first throttled event, plus one,
    /// of the last line written; 0 before the first.
    last_written: AtomicU64,
    /// Events since the last line written.
    unwritten: AtomicU64,
}

impl Throttled {
    /// A warning not yet written.
    pub const fn new() -> Throttled {
        Throttled {
            last_written: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
        }
    }

    /// Counts one event and writes `message(count)` at warn when the last
    /// line is older than [`INTERVAL`]; `count` is the events it stands for.
    pub fn warn(&self, message: impl FnOnce(u64) -> String) {
        self.unwritten.fetch_add(1, Relaxed);
        let now = elapsed_ms() + 1;
        let last = self.last_written.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= INTERVAL.as_millis() as u64;
        if due
            && self
                .last_written
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let line = message(self.unwritten.swap(0, Relaxed));
            log::warn!("{line}");
        }
    }
}

/// Milliseconds since the first call.
fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_writes_one_line_and_counts_the_rest() {
        let warning = Throttled::new();
        let mut lines = Vec::new();
        for _ in 0..100 {
            warning.warn(|count| {
                lines.push(count);
                String::new()
            });
        }
        assert_eq!(lines, vec![1]);
        assert_eq!(warning.unwritten.load(Relaxed), 99);
    }
}
