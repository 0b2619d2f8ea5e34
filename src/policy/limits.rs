//! The `rate_limit:` and `connection_limit:` kinds: the key a request
//! counts under, the 429 answers with their headers, and the background
//! service that sweeps idle keys out of every rate limiter each second.
//!
//! A key is hashed from bytes borrowed from the request (a client
//! address is its octets on the stack): counting costs no allocation.
//!
//! A `scope: cluster` limit is counted in the `cluster:` section's Redis
//! ([`ClusterStore`]), shared by every replica; when the store cannot
//! decide (slow, down, or not yet back) the request is decided here by a
//! local limiter of the replica's fallback share of the limit.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::cluster_store::ClusterStore;
use super::connection_limit::{ConcurrencyGuard, ConcurrencyLimiter};
use super::rate_limit::{self, RateDecision, RateLimiter};
use super::walk::Facts;
use super::Answer;
use crate::config::{ConnectionLimitConfig, LimitKey, RateLimitConfig};

/// A compiled rate limit.
pub struct RateLimit {
    /// Counts in this process: the limit, or for a cluster-scoped one the
    /// share a replica allows alone while the store does not decide.
    limiter: Arc<RateLimiter>,
    /// Where a cluster-scoped limit counts, with the whole limit.
    shared: Option<SharedLimit>,
    key: LimitKey,
    /// The policy's name, in the `RateLimit` field.
    name: Box<str>,
    /// `RateLimit-Policy`, made once.
    policy_header: HeaderValue,
}

/// A compiled connection limit.
pub struct ConnectionLimit {
    limiter: Arc<ConcurrencyLimiter>,
    key: LimitKey,
}

/// A cluster-scoped limit's store and the limit it counts there.
struct SharedLimit {
    store: Arc<ClusterStore>,
    rate: u32,
    period: Duration,
    burst: u32,
}

/// Millionths of a limit: all of it.
const WHOLE: u64 = 1_000_000;

/// The share of `config` one replica allows alone: `(rate, period,
/// burst)`, at least one request a period.
fn fallback_settings(config: &RateLimitConfig, replicas: u32) -> (u32, Duration, u32) {
    let share = config
        .fallback_share
        .map_or(WHOLE / u64::from(replicas.max(1)), u64::from)
        .clamp(1, WHOLE);
    let part = |n: u32, round_up: bool| {
        let scaled = u64::from(n) * share + if round_up { WHOLE - 1 } else { 0 };
        u32::try_from(scaled / WHOLE).unwrap_or(n)
    };
    let rate = part(config.rate, true).max(1);
    (rate, config.period, part(config.burst, false))
}

impl RateLimit {
    /// The limit of the policy `name`; `running` (the same policy before a
    /// reload) gives its limiter when the settings are unchanged, so its
    /// counts survive. A cluster-scoped limit counts in `store`, and
    /// alone allows its fallback share (one over `replicas` unless the
    /// config says).
    pub fn new(
        name: &str,
        config: &RateLimitConfig,
        store: Option<&Arc<ClusterStore>>,
        replicas: u32,
        running: Option<&RateLimit>,
    ) -> RateLimit {
        let shared = match (config.scope, store) {
            (crate::config::LimitScope::Cluster, Some(store)) => Some(SharedLimit {
                store: Arc::clone(store),
                rate: config.rate,
                period: config.period,
                burst: config.burst,
            }),
            _ => None,
        };
        let settings = match shared {
            Some(_) => fallback_settings(config, replicas),
            None => (config.rate, config.period, config.burst),
        };
        let limiter = match running {
            Some(old) if old.limiter.settings() == settings => Arc::clone(&old.limiter),
            _ => {
                let (rate, period, burst) = settings;
                let limiter = Arc::new(RateLimiter::new(rate, period, burst, config.max_keys));
                register(&limiter);
                limiter
            }
        };
        RateLimit {
            limiter,
            shared,
            key: config.key.clone(),
            name: name.into(),
            policy_header: rate_limit::policy_header(
                name,
                config.rate,
                config.period,
                config.burst,
            ),
        }
    }

    /// Whether it counts in the cluster's store (then [`Self::check_shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// None when the request may go on; else the 429 answer. Counts here.
    pub fn check(&self, facts: &Facts<'_>) -> Option<Answer> {
        let decision = self.limiter.check(key_bytes(&self.key, facts).as_ref());
        self.answer(decision)
    }

    /// [`Self::check`] in the cluster's store, or here with the fallback
    /// share when the store does not decide within its timeout.
    pub async fn check_shared(&self, facts: &Facts<'_>) -> Option<Answer> {
        let Some(shared) = &self.shared else {
            return self.check(facts);
        };
        let key = key_bytes(&self.key, facts);
        let decided = shared
            .store
            .check(
                &self.name,
                key.as_ref(),
                shared.rate,
                shared.period,
                shared.burst,
            )
            .await;
        let decision = decided.unwrap_or_else(|| self.limiter.check(key.as_ref()));
        self.answer(decision)
    }

    /// The 429 answer for a refusal.
    fn answer(&self, decision: RateDecision) -> Option<Answer> {
        let RateDecision::Limited { retry_after } = decision else {
            return None;
        };
        let seconds = rate_limit::retry_after_secs(retry_after);
        Some(Answer {
            status: 429,
            headers: vec![
                (http::header::RETRY_AFTER, HeaderValue::from(seconds)),
                (
                    http::HeaderName::from_static("ratelimit-policy"),
                    self.policy_header.clone(),
                ),
                (
                    http::HeaderName::from_static("ratelimit"),
                    rate_limit::remaining_header(&self.name, 0, seconds),
                ),
            ],
            body: Bytes::from_static(b"429 Too Many Requests\n"),
            close: false,
        })
    }
}

impl ConnectionLimit {
    /// The limit; `running`'s limiter is kept when its maximum is the same,
    /// so the requests open across a reload are still counted.
    pub fn new(config: &ConnectionLimitConfig, running: Option<&ConnectionLimit>) -> Self {
        let limiter = match running {
            Some(old) if old.limiter.max() == config.max => Arc::clone(&old.limiter),
            _ => Arc::new(ConcurrencyLimiter::new(config.max)),
        };
        ConnectionLimit {
            limiter,
            key: config.key.clone(),
        }
    }

    /// A place for the request, held until it ends; else the 429 answer,
    /// which closes an HTTP/1 connection (nginx's limit_conn counts
    /// requests open at once, each HTTP/2 stream as one).
    pub fn acquire(&self, facts: &Facts<'_>) -> Result<ConcurrencyGuard, Answer> {
        let key = key_bytes(&self.key, facts);
        self.limiter
            .try_acquire(key.as_ref())
            .ok_or_else(|| Answer {
                status: 429,
                headers: vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
                body: Bytes::from_static(b"429 Too Many Requests: too many open requests\n"),
                close: true,
            })
    }
}

/// The bytes of a request's key: a client address's octets (on the
/// stack), or borrowed from the request.
enum KeyBytes<'a> {
    V4([u8; 4]),
    V6([u8; 16]),
    Borrowed(&'a [u8]),
}

impl AsRef<[u8]> for KeyBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            KeyBytes::V4(octets) => octets,
            KeyBytes::V6(octets) => octets,
            KeyBytes::Borrowed(bytes) => bytes,
        }
    }
}

/// The request's key under `key`.
fn key_bytes<'a>(key: &LimitKey, facts: &Facts<'a>) -> KeyBytes<'a> {
    match key {
        LimitKey::ClientIp => match facts.client {
            IpAddr::V4(ip) => KeyBytes::V4(ip.octets()),
            IpAddr::V6(ip) => KeyBytes::V6(ip.octets()),
        },
        LimitKey::Header(name) => KeyBytes::Borrowed(
            facts
                .req
                .headers
                .get(name)
                .map_or(&[][..], |v| v.as_bytes()),
        ),
        LimitKey::Cookie(name) => {
            KeyBytes::Borrowed(super::cookie(facts.req, name).unwrap_or_default())
        }
        LimitKey::Route => KeyBytes::Borrowed(facts.route.unwrap_or("").as_bytes()),
    }
}

/// Every rate limiter alive, for the sweep.
static LIMITERS: Mutex<Vec<Weak<RateLimiter>>> = Mutex::new(Vec::new());

fn register(limiter: &Arc<RateLimiter>) {
    let mut limiters = crate::sync::lock(&LIMITERS);
    limiters.retain(|l| l.strong_count() > 0);
    limiters.push(Arc::downgrade(limiter));
}

/// How often idle keys are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The background service that sweeps every rate limiter each second:
/// idle keys go, and a limiter over its `max_keys` forgets all.
pub struct SweepRateLimits;

#[async_trait]
impl BackgroundService for SweepRateLimits {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let live: Vec<Arc<RateLimiter>> = crate::sync::lock(&LIMITERS)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for limiter in live {
                limiter.sweep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitScope;

    fn limit(rate: u32, burst: u32, fallback_share: Option<u32>) -> RateLimitConfig {
        RateLimitConfig {
            rate,
            period: Duration::from_secs(1),
            burst,
            key: LimitKey::ClientIp,
            max_keys: 10,
            scope: LimitScope::Cluster,
            fallback_share,
        }
    }

    #[test]
    fn a_replica_alone_allows_its_share_and_never_nothing() {
        let second = Duration::from_secs(1);
        assert_eq!(fallback_settings(&limit(100, 20, None), 3), (34, second, 6));
        assert_eq!(
            fallback_settings(&limit(100, 20, None), 1),
            (100, second, 20)
        );
        assert_eq!(
            fallback_settings(&limit(100, 20, Some(500_000)), 3),
            (50, second, 10)
        );
        assert_eq!(fallback_settings(&limit(1, 0, None), 10), (1, second, 0));
    }
}
