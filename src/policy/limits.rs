//! The `rate_limit:` and `connection_limit:` kinds: the key a request
//! counts under, the 429 answers with their headers, and the background
//! service that sweeps idle keys out of every rate limiter each second.
//!
//! A key is hashed from bytes borrowed from the request (a client
//! address is its octets on the stack): counting costs no allocation.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::connection_limit::{ConcurrencyGuard, ConcurrencyLimiter};
use super::rate_limit::{self, RateDecision, RateLimiter};
use super::walk::Facts;
use super::Answer;
use crate::config::{ConnectionLimitConfig, LimitKey, RateLimitConfig};

/// A compiled rate limit.
pub struct RateLimit {
    limiter: Arc<RateLimiter>,
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

impl RateLimit {
    /// The limit of the policy `name`; `running` (the same policy before a
    /// reload) gives its limiter when the settings are unchanged, so its
    /// counts survive.
    pub fn new(name: &str, config: &RateLimitConfig, running: Option<&RateLimit>) -> RateLimit {
        let settings = (config.rate, config.period, config.burst);
        let limiter = match running {
            Some(old) if old.limiter.settings() == settings => Arc::clone(&old.limiter),
            _ => {
                let limiter = Arc::new(RateLimiter::new(
                    config.rate,
                    config.period,
                    config.burst,
                    config.max_keys,
                ));
                register(&limiter);
                limiter
            }
        };
        RateLimit {
            limiter,
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

    /// None when the request may go on; else the 429 answer.
    pub fn check(&self, facts: &Facts<'_>) -> Option<Answer> {
        let decision = with_key(&self.key, facts, |key| self.limiter.check(key));
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
        with_key(&self.key, facts, |key| self.limiter.try_acquire(key)).ok_or_else(|| Answer {
            status: 429,
            headers: vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
            body: Bytes::from_static(b"429 Too Many Requests: too many open requests\n"),
            close: true,
        })
    }
}

/// Calls `f` with the bytes of the request's key.
fn with_key<R>(key: &LimitKey, facts: &Facts<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
    match key {
        LimitKey::ClientIp => match facts.client {
            IpAddr::V4(ip) => f(&ip.octets()),
            IpAddr::V6(ip) => f(&ip.octets()),
        },
        LimitKey::Header(name) => f(facts
            .req
            .headers
            .get(name)
            .map_or(&[][..], |v| v.as_bytes())),
        LimitKey::Cookie(name) => f(super::cookie(facts.req, name).unwrap_or_default()),
        LimitKey::Route => f(facts.route.unwrap_or("").as_bytes()),
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
