//! Concurrent-request limit per key (issue 25, "Connection limit per client"), like nginx
//! `limit_conn`: a key counts only while one of its requests is being processed, so an idle
//! keep-alive connection costs nothing, and over HTTP/2 every concurrent stream counts.
//!
//! [`ConcurrencyLimiter::try_acquire`] hands out a [`ConcurrencyGuard`] that gives its place
//! back when dropped (keep it in the request context until the response is done). A key's
//! entry is removed when its count reaches zero, so memory is proportional to the keys with
//! requests in flight (16 bytes plus a control byte per key), never to the keys ever seen.
//!
//! Keys are hashed with [`key_hash`] (seeded SipHash, see `rate_limit`): key bytes are never
//! stored. The table is split into [`SHARD_COUNT`] shards of `Mutex<HashMap<u64, u32>>`, each
//! on its own cache line: every critical section is one lookup and an increment or decrement,
//! so a plain mutex (one uncontended CAS to take) is cheaper than a reader-writer lock, and
//! sharding keeps workers on different keys from contending. No dependency beyond std.
use super::rate_limit::{key_hash, PrehashedKeys};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Number of shards of the in-flight table (a power of two).
pub const SHARD_COUNT: usize = 64;

/// One shard, aligned to a cache line so that two shards never share one.
#[repr(align(64))]
struct Shard(Mutex<HashMap<u64, u32, PrehashedKeys>>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u32, PrehashedKeys>> {
        // A panic while holding the lock cannot leave a half-made update (each critical
        // section is one map operation), so a poisoned shard is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts requests in flight per key and refuses a key's request beyond `max` of them.
///
/// Shared by all worker threads in an `Arc` (guards hold a clone of it).
pub struct ConcurrencyLimiter {
    max: u32,
    shards: Box<[Shard]>,
}

/// One request's place in its key's count; dropping it gives the place back.
#[must_use = "the place is given back as soon as the guard is dropped"]
pub struct ConcurrencyGuard {
    limiter: Arc<ConcurrencyLimiter>,
    hashed_key: u64,
}

impl ConcurrencyLimiter {
    /// A limiter allowing at most `max` requests in flight per key (`max == 0` refuses all).
    pub fn new(max: u32) -> Self {
        let shards = (0..SHARD_COUNT)
            .map(|_| Shard(Mutex::new(HashMap::with_hasher(PrehashedKeys::default()))))
            .collect();
        ConcurrencyLimiter { max, shards }
    }

    /// Takes a place for one request of `key`, or `None` when `max` are already in flight.
    ///
    /// Hot path: one SipHash, one shard lock held for a map lookup and increment, and an `Arc`
    /// clone; allocates only when the shard's map grows.
    pub fn try_acquire(self: &Arc<Self>, key: &[u8]) -> Option<ConcurrencyGuard> {
        let hashed_key = key_hash(key);
        {
            let mut in_flight = self.shard(hashed_key).lock();
            let count = in_flight.entry(hashed_key).or_insert(0);
            if *count >= self.max {
                if *count == 0 {
                    // Only with max == 0: do not leave the entry just made.
                    in_flight.remove(&hashed_key);
                }
                return None;
            }
            *count += 1;
        }
        Some(ConcurrencyGuard {
            limiter: Arc::clone(self),
            hashed_key,
        })
    }

    /// The configured maximum of requests in flight per key, so a reload can keep this
    /// limiter (and the counts of requests in flight) when it did not change.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Number of keys with at least one request in flight (locks every shard: metrics only).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    /// Requests in flight for `key` (locks one shard: metrics and tests).
    pub fn in_flight(&self, key: &[u8]) -> u32 {
        let hashed_key = key_hash(key);
        let in_flight = self.shard(hashed_key).lock();
        in_flight.get(&hashed_key).copied().unwrap_or(0)
    }

    /// The shard of a hashed key, from bits 32.. of the hash: hashbrown places entries by the
    /// low bits and filters by the top 7, so the shard index uses neither.
    fn shard(&self, hashed_key: u64) -> &Shard {
        &self.shards[(hashed_key >> 32) as usize % SHARD_COUNT]
    }

    fn release(&self, hashed_key: u64) {
        let mut in_flight = self.shard(hashed_key).lock();
        if let Some(count) = in_flight.get_mut(&hashed_key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&hashed_key);
            }
        }
    }
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        self.limiter.release(self.hashed_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn the_request_past_the_maximum_is_refused() {
        let limiter = Arc::new(ConcurrencyLimiter::new(2));
        let first = limiter.try_acquire(b"client");
        let second = limiter.try_acquire(b"client");
        assert!(first.is_some() && second.is_some());
        assert!(limiter.try_acquire(b"client").is_none());
        assert_eq!(limiter.in_flight(b"client"), 2);
    }

    #[test]
    fn dropping_a_guard_frees_its_place() {
        let limiter = Arc::new(ConcurrencyLimiter::new(1));
        let guard = limiter.try_acquire(b"client");
        assert!(limiter.try_acquire(b"client").is_none());
        drop(guard);
        assert!(limiter.try_acquire(b"client").is_some());
    }

    #[test]
    fn a_full_key_does_not_block_another_key() {
        let limiter = Arc::new(ConcurrencyLimiter::new(1));
        let _busy = limiter.try_acquire(b"busy");
        assert!(limiter.try_acquire(b"other").is_some());
    }

    #[test]
    fn a_key_entry_is_removed_when_its_count_reaches_zero() {
        let limiter = Arc::new(ConcurrencyLimiter::new(3));
        let guards: Vec<_> = (0..3).filter_map(|_| limiter.try_acquire(b"k")).collect();
        let other = limiter.try_acquire(b"other");
        assert_eq!(limiter.keys(), 2);
        drop(guards);
        assert_eq!(limiter.keys(), 1);
        drop(other);
        assert_eq!(limiter.keys(), 0);
        assert_eq!(limiter.in_flight(b"k"), 0);
    }

    #[test]
    fn a_zero_maximum_refuses_everything_and_stores_nothing() {
        let limiter = Arc::new(ConcurrencyLimiter::new(0));
        assert!(limiter.try_acquire(b"k").is_none());
        assert_eq!(limiter.keys(), 0);
        assert_eq!(limiter.max(), 0);
    }

    #[test]
    fn threads_hammering_the_limiter_end_at_zero() {
        let max = 3;
        let limiter = Arc::new(ConcurrencyLimiter::new(max));
        let workers: Vec<_> = (0..4u8)
            .map(|worker| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..5_000u32 {
                        let key = [(round % 7) as u8, worker % 2];
                        if let Some(guard) = limiter.try_acquire(&key) {
                            assert!(limiter.in_flight(&key) <= max);
                            held.push(guard);
                        }
                        if round % 3 == 0 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            assert!(worker.join().is_ok());
        }
        assert_eq!(limiter.keys(), 0);
        assert_eq!(Arc::strong_count(&limiter), 1);
    }
}
