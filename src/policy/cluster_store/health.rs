//! Whether cluster limits are decided in Redis or locally: a small pure state machine with
//! hysteresis, so one slow moment does not flap every replica between the two.
//!
//! ```text
//!  Connecting --probe ok--> Shared <--probe ok for RECOVERY_WINDOW-- Local
//!      |                      |                                      ^
//!      +----probe failed------+--Redis down, or FAILURES_TO_LOCAL----+
//!                                 consecutive timeouts/errors
//! ```
//!
//! The machine only counts and compares instants handed to it; [`HealthCell`] puts it behind a
//! mutex taken only when something changes, with an atomic copy of the mode for the hot path.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Consecutive timeouts or errors (Redis still connected) that switch Shared to Local.
///
/// Two, not one: a single request that meets a GC pause or a slow fork should be decided
/// locally without moving every other request off Redis; two in a row without any success in
/// between is no longer a moment.
pub const FAILURES_TO_LOCAL: u8 = 2;

/// How long the background probe must succeed without a failure before Local goes back to
/// Shared: five probe intervals, long enough that a Redis which answers every other second
/// (restarting, swapping, overloaded) stays Local, short enough that a recovered fleet shares
/// its limits again within about a second.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(1);

/// Why a Redis call failed, as far as the state machine cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused, reset or closed: Redis is down, no point in a second try.
    Down,
    /// No answer within the timeout.
    Timeout,
    /// Any other error (a Redis error reply, a malformed reply).
    Error,
}

/// Where decisions are made now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Redis never answered since the store started; decisions are local.
    Connecting,
    /// Decisions are made in Redis; `failure_streak` consecutive requests failed just now.
    Shared { failure_streak: u8 },
    /// Decisions are local; the probe has succeeded without a break since `answering_since`.
    Local { answering_since: Option<Instant> },
}

/// A change of where decisions are made: the only events that are logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Redis answers (first time or again): limits are shared.
    ToShared { first_time: bool },
    /// Redis does not answer: limits are decided locally.
    ToLocal,
}

impl Health {
    /// True while decisions are made in Redis.
    pub fn is_shared(&self) -> bool {
        matches!(self, Health::Shared { .. })
    }

    /// A request's Redis call succeeded: ends a failure streak.
    pub fn request_succeeded(&mut self) {
        if let Health::Shared { failure_streak } = self {
            *failure_streak = 0;
        }
    }

    /// A request's Redis call failed with `failure`.
    pub fn request_failed(&mut self, failure: Failure) -> Option<Change> {
        let Health::Shared { failure_streak } = self else {
            return None; // Already local: a call that was in flight when another one failed.
        };
        let streak = failure_streak.saturating_add(1);
        if failure == Failure::Down || streak >= FAILURES_TO_LOCAL {
            *self = Health::Local {
                answering_since: None,
            };
            return Some(Change::ToLocal);
        }
        *failure_streak = streak;
        None
    }

    /// The background probe got an answer at `now`.
    pub fn probe_succeeded(&mut self, now: Instant) -> Option<Change> {
        match *self {
            Health::Connecting => {
                *self = Health::Shared { failure_streak: 0 };
                Some(Change::ToShared { first_time: true })
            }
            Health::Shared { .. } => None,
            Health::Local {
                answering_since: None,
            } => {
                *self = Health::Local {
                    answering_since: Some(now),
                };
                None
            }
            Health::Local {
                answering_since: Some(since),
            } => {
                if now.saturating_duration_since(since) < RECOVERY_WINDOW {
                    return None;
                }
                *self = Health::Shared { failure_streak: 0 };
                Some(Change::ToShared { first_time: false })
            }
        }
    }

    /// The background probe got no answer (or an error).
    pub fn probe_failed(&mut self) -> Option<Change> {
        let change = match self {
            Health::Connecting => Some(Change::ToLocal),
            Health::Shared { .. } => None, // Probes only run while not shared.
            Health::Local { .. } => None,
        };
        if !self.is_shared() {
            *self = Health::Local {
                answering_since: None,
            };
        }
        change
    }
}

/// Mode codes mirrored in [`HealthCell::mode`].
const MODE_NOT_SHARED: u8 = 0;
const MODE_SHARED: u8 = 1;
/// Shared, but the last request failed: the next success must take the lock to reset the streak.
const MODE_SHARED_FAILING: u8 = 2;

/// [`Health`] shared by request handlers and the background task.
///
/// The hot path reads `mode` (one relaxed load) and takes the mutex only when a call failed
/// or succeeded right after a failure. The mutex is never held across an await.
pub struct HealthCell {
    machine: Mutex<Health>,
    mode: AtomicU8,
}

impl HealthCell {
    /// A cell in [`Health::Connecting`].
    pub fn new() -> Self {
        HealthCell {
            machine: Mutex::new(Health::Connecting),
            mode: AtomicU8::new(MODE_NOT_SHARED),
        }
    }

    /// True while decisions are made in Redis (hot path: one atomic load).
    pub fn is_shared(&self) -> bool {
        self.mode.load(Ordering::Acquire) != MODE_NOT_SHARED
    }

    /// The current state (tests).
    #[cfg(test)]
    pub fn get(&self) -> Health {
        *self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a successful request; takes the lock only after a failure.
    pub fn request_succeeded(&self) {
        if self.mode.load(Ordering::Relaxed) == MODE_SHARED_FAILING {
            self.update(|health| {
                health.request_succeeded();
                None
            });
        }
    }

    /// Applies `event` to the machine and refreshes the mode mirror, under the lock.
    pub fn update(&self, event: impl FnOnce(&mut Health) -> Option<Change>) -> Option<Change> {
        let mut health = self.machine.lock().unwrap_or_else(PoisonError::into_inner);
        let change = event(&mut health);
        let mode = match *health {
            Health::Shared { failure_streak: 0 } => MODE_SHARED,
            Health::Shared { .. } => MODE_SHARED_FAILING,
            Health::Connecting | Health::Local { .. } => MODE_NOT_SHARED,
        };
        self.mode.store(mode, Ordering::Release);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: Health = Health::Shared { failure_streak: 0 };
    const LOCAL: Health = Health::Local {
        answering_since: None,
    };

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn the_first_answer_shares_at_once_and_a_first_failure_goes_local() {
        let mut health = Health::Connecting;
        assert_eq!(
            health.probe_succeeded(Instant::now()),
            Some(Change::ToShared { first_time: true })
        );
        assert_eq!(health, SHARED);
        let mut health = Health::Connecting;
        assert_eq!(health.probe_failed(), Some(Change::ToLocal));
        assert_eq!(health, LOCAL);
    }

    #[test]
    fn redis_down_goes_local_on_the_first_failure() {
        let mut health = SHARED;
        assert_eq!(health.request_failed(Failure::Down), Some(Change::ToLocal));
        assert!(!health.is_shared());
    }

    #[test]
    fn one_timeout_stays_shared_and_two_in_a_row_go_local() {
        let mut health = SHARED;
        assert_eq!(health.request_failed(Failure::Timeout), None);
        assert!(health.is_shared());
        assert_eq!(health.request_failed(Failure::Error), Some(Change::ToLocal));
        assert_eq!(health.request_failed(Failure::Timeout), None, "logged once");
    }

    #[test]
    fn a_success_between_two_timeouts_keeps_it_shared() {
        let mut health = SHARED;
        for _ in 0..10 {
            assert_eq!(health.request_failed(Failure::Timeout), None);
            health.request_succeeded();
        }
        assert_eq!(health, SHARED);
    }

    #[test]
    fn local_goes_back_to_shared_only_after_a_second_of_unbroken_answers() {
        let start = Instant::now();
        let mut health = LOCAL;
        for probe in 0..5 {
            assert_eq!(health.probe_succeeded(start + ms(200 * probe)), None);
        }
        assert!(!health.is_shared());
        assert_eq!(
            health.probe_succeeded(start + ms(1000)),
            Some(Change::ToShared { first_time: false })
        );
        assert_eq!(health, SHARED);
    }

    #[test]
    fn a_failed_probe_restarts_the_recovery_window() {
        let start = Instant::now();
        let mut health = LOCAL;
        for probe in 0..5 {
            assert_eq!(health.probe_succeeded(start + ms(200 * probe)), None);
        }
        assert_eq!(health.probe_failed(), None);
        for probe in 6..11 {
            assert_eq!(health.probe_succeeded(start + ms(200 * probe)), None);
        }
        let change = health.probe_succeeded(start + ms(2200));
        assert_eq!(change, Some(Change::ToShared { first_time: false }));
    }

    #[test]
    fn a_redis_answering_every_other_probe_never_flaps_back() {
        let start = Instant::now();
        let mut health = LOCAL;
        for probe in 0..50 {
            let change = if probe % 2 == 0 {
                health.probe_succeeded(start + ms(200 * probe))
            } else {
                health.probe_failed()
            };
            assert_eq!(change, None);
        }
        assert!(!health.is_shared());
    }

    #[test]
    fn the_cell_mirrors_the_machine_for_the_hot_path() {
        let cell = HealthCell::new();
        assert!(!cell.is_shared());
        cell.update(|health| health.probe_succeeded(Instant::now()));
        assert!(cell.is_shared());
        cell.update(|health| health.request_failed(Failure::Timeout));
        assert_eq!(cell.get(), Health::Shared { failure_streak: 1 });
        cell.request_succeeded();
        assert_eq!(cell.get(), SHARED);
        cell.update(|health| health.request_failed(Failure::Down));
        assert!(!cell.is_shared());
    }
}
