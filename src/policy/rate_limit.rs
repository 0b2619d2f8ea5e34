//! Keyed request-rate limiting (issue 25, "Rate limits"), shared by all worker threads.
//!
//! One [`RateLimiter`] per configured limit holds a GCRA state (an `AtomicU64`) per key in
//! `governor`'s dashmap store; checking a known key is a shard read lock and a CAS, no alloc.
//!
//! **Semantics.** `rate` requests per `period` are credited continuously (one every
//! `period / rate`); `burst` extra requests may arrive at once on top of that: the GCRA
//! bucket capacity (`governor`'s `allow_burst`, which is the *whole* capacity) is `burst + 1`.
//! Under overload a key is accepted `burst + 1` times at the start and then once per
//! `period / rate`, so over a window `[0, T)` it gets exactly `burst + rate * T / period`
//! acceptances (the `+ 1` is used up by the request at `t = 0`; the last credit lands at `T`).
//! This matches nginx `limit_req burst=N nodelay`, which also accepts `N + 1` at once.
//!
//! **Keys.** Key bytes are never stored: [`key_hash`] maps them to a `u64` with SipHash under
//! a per-process random seed (std `RandomState`), so an attacker cannot aim collisions, and a
//! map entry is just `(u64, AtomicU64)`. The map rehashes that `u64` with an identity hasher
//! (it is already uniformly random), saving a second SipHash per request.
//!
//! **Memory.** A dashmap entry is 16 bytes plus one hashbrown control byte, at a load of 7/16
//! to 7/8: 19.4 to 38.9 bytes per key. Measured with a counting allocator while inserting
//! 1,000,000 keys: 19.6 to 38.4 bytes per key, 28 on average, plus about 1 KB per limiter.
//! Keys stay bounded whatever many distinct ones arrive: [`RateLimiter::sweep`] (every second)
//! drops keys whose state equals a fresh one, and if more than `max_keys` are still recent it
//! forgets all of them: `governor`'s store cannot evict by age or least-recent use, and
//! forgetting is lenient (a forgotten key starts again with a full bucket: never a wrong
//! refusal, at worst one extra burst). Between sweeps the hot path counts new keys (one
//! relaxed load per check; a write only when a key is new) and sweeps inline once `max_keys`
//! new keys arrived, so the map holds at most about `2 * max_keys` keys: under 80 bytes per
//! unit of `max_keys` (8 MB for `max_keys = 100_000`).
use bytes::{BufMut, BytesMut};
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};
use governor::Quota;
use http::HeaderValue;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Per-process random seed of [`key_hash`], drawn on first use.
static KEY_SEED: OnceLock<RandomState> = OnceLock::new();

/// Hashes a limit key (client address bytes, API key, ...) to the `u64` stored in limiter maps.
///
/// std SipHash under a random per-process seed: stable within the process, unpredictable to
/// clients, so distinct keys collide with probability 2^-64 and collisions cannot be aimed.
pub fn key_hash(key: &[u8]) -> u64 {
    KEY_SEED.get_or_init(RandomState::new).hash_one(key)
}

/// `BuildHasher` for maps keyed by a [`key_hash`] value: passes the `u64` through unchanged,
/// since it is already uniformly distributed and seeded (no second SipHash per lookup).
pub type PrehashedKeys = BuildHasherDefault<PrehashedKeyHasher>;

/// The `Hasher` of [`PrehashedKeys`]: the last `u64` written is the hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrehashedKeyHasher(u64);

impl Hasher for PrehashedKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are used; fold other input in anyway so the hasher stays total.
        self.0 = bytes
            .iter()
            .fold(self.0, |hash, &b| hash.rotate_left(8) ^ u64::from(b));
    }
    fn write_u64(&mut self, hashed_key: u64) {
        self.0 = hashed_key;
    }
}

/// The key map plus a count of keys inserted since the last sweep (racing inserts may recount).
struct KeyTable {
    map: DashMapStateStore<u64, PrehashedKeys>,
    inserted_since_sweep: AtomicUsize,
}

/// `governor` state store over a shared [`KeyTable`]: `governor` owns its store and offers no
/// way to empty it, so the limiter keeps a second handle to clear the map and count inserts.
struct SharedKeys(Arc<KeyTable>);

impl StateStore for SharedKeys {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, decide: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.0.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, decide);
        }
        self.0.inserted_since_sweep.fetch_add(1, Ordering::Relaxed);
        let state = self.0.map.entry(*key).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, decide)
    }
}

impl ShrinkableKeyedStateStore<u64> for SharedKeys {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.map.retain_recent(drop_below);
    }
    fn len(&self) -> usize {
        self.0.map.len()
    }
    fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

/// `governor`'s limiter over our key table, reporting the remaining burst on acceptance.
type Governor<C> = governor::RateLimiter<u64, SharedKeys, C, StateInformationMiddleware>;

/// The outcome of [`RateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The request is accepted; `remaining` more could be accepted right now (0..=burst).
    Allowed { remaining: u32 },
    /// The request is refused; one more request for this key conforms after `retry_after`.
    Limited { retry_after: Duration },
}

/// A keyed GCRA rate limiter: `rate` requests per `period` per key, plus `burst` at once.
///
/// Shared by all worker threads (`Send + Sync`); the clock is a type parameter so tests can
/// drive `governor`'s `FakeRelativeClock`.
pub struct RateLimiter<C: Clock = MonotonicClock> {
    governor: Governor<C>,
    table: Arc<KeyTable>,
    max_keys: usize,
    settings: (u32, Duration, u32),
    replenish_interval: Duration,
    sweeping: AtomicBool,
}

impl RateLimiter<MonotonicClock> {
    /// A limiter of `rate` requests per `period` per key, `burst` more accepted at once, holding
    /// about `max_keys` keys (at most about twice that between sweeps).
    ///
    /// The config layer should reject `rate == 0`, a zero `period` and `max_keys == 0`; here
    /// they are clamped (to 1, 1 ns and 1) rather than panicking.
    pub fn new(rate: u32, period: Duration, burst: u32, max_keys: usize) -> RateLimiter {
        RateLimiter::with_clock(rate, period, burst, max_keys, MonotonicClock)
    }
}

impl<C: Clock> RateLimiter<C> {
    /// [`RateLimiter::new`] reading time from `clock` (tests pass a `FakeRelativeClock`).
    pub fn with_clock(rate: u32, period: Duration, burst: u32, max_keys: usize, clock: C) -> Self {
        let replenish_interval = (period / rate.max(1)).max(Duration::from_nanos(1));
        // Keep capacity * interval far below u64 nanoseconds, where governor's sums would wrap.
        let interval_nanos = u64::try_from(replenish_interval.as_nanos()).unwrap_or(u64::MAX);
        let capacity_cap = u32::try_from((1u64 << 62) / interval_nanos).unwrap_or(u32::MAX);
        let capacity = NonZeroU32::MIN
            .saturating_add(burst)
            .min(NonZeroU32::new(capacity_cap).unwrap_or(NonZeroU32::MIN));
        let quota = Quota::with_period(replenish_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(capacity);
        let table = Arc::new(KeyTable {
            map: DashMapStateStore::with_hasher(PrehashedKeys::default()),
            inserted_since_sweep: AtomicUsize::new(0),
        });
        let store = SharedKeys(Arc::clone(&table));
        let governor = governor::RateLimiter::new(quota, store, clock);
        RateLimiter {
            governor,
            table,
            max_keys: max_keys.max(1),
            settings: (rate, period, burst),
            replenish_interval,
            sweeping: AtomicBool::new(false),
        }
    }

    /// Counts one request for `key` and says whether it is accepted.
    ///
    /// Hot path: one SipHash of the key, a dashmap shard read lock and a CAS; a new key takes
    /// the shard write lock once. Sweeps inline (at most once per `max_keys` new keys) so the
    /// map stays bounded under a flood of distinct keys.
    pub fn check(&self, key: &[u8]) -> RateDecision {
        let decision = match self.governor.check_key(&key_hash(key)) {
            Ok(state) => RateDecision::Allowed {
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => RateDecision::Limited {
                retry_after: not_until.wait_time_from(self.governor.clock().now()),
            },
        };
        if self.table.inserted_since_sweep.load(Ordering::Relaxed) > self.max_keys {
            self.forget_stale_keys();
        }
        decision
    }

    /// Drops keys whose state equals a fresh key's; if more than `max_keys` remain, forgets all
    /// keys (see the module doc for why), then returns spare memory. Call about once a second.
    pub fn sweep(&self) {
        self.forget_stale_keys();
        let (keys, capacity) = (self.table.map.len(), self.table.map.capacity());
        // Hysteresis: shrink only when mostly empty, so a steady key count never reallocates.
        if keys.saturating_mul(4) < capacity {
            self.table.map.shrink_to_fit();
        }
    }

    /// The sweep shared by [`RateLimiter::sweep`] and the hot-path guard; a caller arriving
    /// while another thread sweeps returns at once (that sweep serves both).
    fn forget_stale_keys(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        // Reset first: keys inserted while this sweep runs count toward the next one.
        self.table.inserted_since_sweep.store(0, Ordering::Relaxed);
        self.governor.retain_recent();
        if self.table.map.len() > self.max_keys {
            self.table.map.clear();
        }
        self.sweeping.store(false, Ordering::Release);
    }

    /// Number of keys currently held (locks each dashmap shard briefly: metrics, not per request).
    pub fn keys(&self) -> usize {
        self.table.map.len()
    }

    /// `(rate, period, burst)` as given to the constructor, so a reload can keep a limiter whose
    /// settings did not change (and with it every key's state).
    pub fn settings(&self) -> (u32, Duration, u32) {
        self.settings
    }

    /// Seconds (rounded up, at least 1) within which one more request is credited to a key:
    /// the `t` of [`remaining_header`] on accepted responses. Constant per limiter.
    pub fn replenish_secs(&self) -> u64 {
        retry_after_secs(self.replenish_interval)
    }
}

/// `Retry-After` seconds for a wait of `wait`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let partial_second = u64::from(wait.subsec_nanos() > 0);
    wait.as_secs().saturating_add(partial_second).max(1)
}

/// `RateLimit-Policy` value (draft-ietf-httpapi-ratelimit-headers-10):
/// `"name";q=<rate>;w=<period secs>`, plus `;lb-burst=<burst>` when `burst > 0` (a vendor
/// parameter, as the draft asks for extensions). Build once at config load.
///
/// `w` must be whole seconds: a period that is not is widened to whole seconds `w` and `q`
/// becomes the requests credited in `w`, rounded down (5 per 500 ms gives `q=10;w=1`). Name
/// bytes outside printable ASCII become `_`; `"` and `\` are escaped.
pub fn policy_header(name: &str, rate: u32, period: Duration, burst: u32) -> HeaderValue {
    let window_secs = retry_after_secs(period);
    let quota = if period.subsec_nanos() == 0 {
        u64::from(rate)
    } else {
        let credited = u128::from(rate) * u128::from(window_secs) * 1_000_000_000;
        u64::try_from(credited / period.as_nanos().max(1)).unwrap_or(u64::MAX)
    };
    let params: [(&[u8], u64); 3] = [
        (b"q", quota),
        (b"w", window_secs),
        (b"lb-burst", u64::from(burst)),
    ];
    structured_item(name, &params[..if burst > 0 { 3 } else { 2 }])
}

/// `RateLimit` value (draft-ietf-httpapi-ratelimit-headers-10): `"name";r=<remaining>;t=<secs>`.
///
/// Per request: one allocation (the value's own buffer), no `format!`. Use `t` =
/// [`RateLimiter::replenish_secs`] on accepted responses and [`retry_after_secs`] of the wait
/// on refused ones (then equal to `Retry-After`, as the draft recommends).
pub fn remaining_header(name: &str, remaining: u32, reset_secs: u64) -> HeaderValue {
    structured_item(name, &[(b"r", u64::from(remaining)), (b"t", reset_secs)])
}

/// An RFC 9651 Item: the sanitized name as a String, then `;key=value` Integer parameters.
///
/// Written straight into the `Bytes` the `HeaderValue` keeps (`from_maybe_shared` takes
/// `Bytes` without copying): exactly one allocation, no `format!` and no `String`.
fn structured_item(name: &str, params: &[(&[u8], u64)]) -> HeaderValue {
    // Upper bound: every name byte escaped, two quotes, `;` `=` and 20 digits per parameter.
    let bound = 2 + 2 * name.len() + params.iter().map(|(k, _)| k.len() + 22).sum::<usize>();
    let mut out = BytesMut::with_capacity(bound);
    out.put_u8(b'"');
    for &byte in name.as_bytes() {
        match byte {
            b'"' | b'\\' => out.put_slice(&[b'\\', byte]),
            0x20..=0x7e => out.put_u8(byte),
            _ => out.put_u8(b'_'),
        }
    }
    out.put_u8(b'"');
    for (key, value) in params {
        out.put_u8(b';');
        out.put_slice(key);
        out.put_u8(b'=');
        put_decimal(&mut out, *value);
    }
    // Cannot fail: only printable ASCII is written. The fallback keeps this panic-free.
    HeaderValue::from_maybe_shared(out.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends `value` in decimal (what `itoa` does, without the dependency or `fmt`).
fn put_decimal(out: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    type FakeLimiter = RateLimiter<FakeRelativeClock>;

    fn fake_limiter(rate: u32, burst: u32, max_keys: usize) -> (FakeLimiter, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let second = Duration::from_secs(1);
        let limiter = RateLimiter::with_clock(rate, second, burst, max_keys, clock.clone());
        (limiter, clock)
    }

    fn accepted(limiter: &FakeLimiter, key: &[u8]) -> bool {
        matches!(limiter.check(key), RateDecision::Allowed { .. })
    }

    #[test]
    fn twice_the_rate_for_ten_seconds_accepts_rate_times_ten_plus_burst() {
        let (limiter, clock) = fake_limiter(100, 20, 1000);
        let mut accepted_count = 0u32;
        for _ in 0..2000 {
            accepted_count += u32::from(accepted(&limiter, b"client"));
            clock.advance(Duration::from_millis(5));
        }
        let expected = 100 * 10 + 20;
        assert!(accepted_count.abs_diff(expected) * 20 <= expected);
        assert_eq!(accepted_count, expected);
    }

    #[test]
    fn remaining_counts_down_from_burst_then_the_key_is_limited() {
        let (limiter, _clock) = fake_limiter(10, 3, 1000);
        let decisions: Vec<_> = (0..5).map(|_| limiter.check(b"k")).collect();
        assert_eq!(decisions[0], RateDecision::Allowed { remaining: 3 });
        assert_eq!(decisions[3], RateDecision::Allowed { remaining: 0 });
        assert!(matches!(decisions[4], RateDecision::Limited { .. }));
    }

    #[test]
    fn a_limited_key_does_not_starve_another_key() {
        let (limiter, _clock) = fake_limiter(5, 2, 1000);
        while accepted(&limiter, b"noisy") {}
        assert!(!accepted(&limiter, b"noisy"));
        assert_eq!(
            limiter.check(b"quiet"),
            RateDecision::Allowed { remaining: 2 }
        );
    }

    #[test]
    fn retry_after_is_the_wait_until_the_next_credit_in_whole_seconds_rounded_up() {
        let (limiter, clock) = fake_limiter(1, 0, 1000);
        let wait = |ms| RateDecision::Limited {
            retry_after: Duration::from_millis(ms),
        };
        assert!(accepted(&limiter, b"k"));
        assert_eq!(limiter.check(b"k"), wait(1000));
        clock.advance(Duration::from_millis(400));
        assert_eq!(limiter.check(b"k"), wait(600));
        clock.advance(Duration::from_millis(600));
        assert!(accepted(&limiter, b"k"));
        let secs = |ms| retry_after_secs(Duration::from_millis(ms));
        assert_eq!([secs(0), secs(600), secs(2000), secs(2001)], [1, 1, 2, 3]);
    }

    #[test]
    fn sweep_forgets_idle_keys_and_keeps_busy_ones() {
        let (limiter, clock) = fake_limiter(10, 4, 1000);
        for key in 0u32..50 {
            assert!(accepted(&limiter, &key.to_le_bytes()));
        }
        clock.advance(Duration::from_secs(1));
        while accepted(&limiter, b"busy") {}
        limiter.sweep();
        assert_eq!(limiter.keys(), 1);
        assert!(!accepted(&limiter, b"busy"));
    }

    #[test]
    fn a_million_distinct_keys_keep_the_map_bounded() {
        let max_keys = 10_000;
        let (limiter, clock) = fake_limiter(100, 10, max_keys);
        let mut largest = 0;
        for key in 0u64..1_000_000 {
            assert!(accepted(&limiter, &key.to_le_bytes()));
            if key % 997 == 0 {
                largest = largest.max(limiter.keys());
                clock.advance(Duration::from_millis(1));
            }
        }
        assert!(largest <= 2 * max_keys + 1, "{largest}");
        limiter.sweep();
        assert!(limiter.keys() <= max_keys);
    }

    #[test]
    fn settings_are_kept_and_absurd_ones_are_clamped_instead_of_panicking() {
        let limiter = RateLimiter::new(7, Duration::from_secs(60), 3, 100);
        assert_eq!(limiter.settings(), (7, Duration::from_secs(60), 3));
        assert_eq!(limiter.replenish_secs(), 9);
        let absurd = RateLimiter::new(0, Duration::ZERO, u32::MAX, 0);
        assert!(matches!(absurd.check(b"k"), RateDecision::Allowed { .. }));
        let slow = RateLimiter::new(1, Duration::from_secs(86_400 * 365), u32::MAX, 1);
        assert!(matches!(slow.check(b"k"), RateDecision::Allowed { .. }));
    }

    #[test]
    fn policy_header_follows_the_draft_with_whole_second_windows() {
        let policy = |rate, ms, burst| policy_header("p", rate, Duration::from_millis(ms), burst);
        assert_eq!(policy(100, 1000, 20), "\"p\";q=100;w=1;lb-burst=20");
        assert_eq!(policy(100, 60_000, 0), "\"p\";q=100;w=60");
        assert_eq!(policy(5, 500, 0), "\"p\";q=10;w=1");
        assert_eq!(policy(3, 1500, 0), "\"p\";q=4;w=2");
    }

    #[test]
    fn remaining_header_escapes_and_sanitizes_the_name() {
        assert_eq!(remaining_header("api", 42, 1), "\"api\";r=42;t=1");
        assert_eq!(remaining_header("a\"b\\", 0, 0), "\"a\\\"b\\\\\";r=0;t=0");
        let extremes = "\"___\";r=4294967295;t=18446744073709551615";
        assert_eq!(remaining_header("é\n", u32::MAX, u64::MAX), extremes);
    }
}
