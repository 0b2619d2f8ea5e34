//! Cluster-scoped rate limits (`scope: cluster`): every lb replica decides a key's request in
//! one shared Redis, so "100/s" is 100/s for the fleet, not per replica.
//!
//! # Layout
//! - this file: [`ClusterStore`], the per-request [`ClusterStore::check`].
//! - `gcra`: the Lua GCRA script (the local limiter's rule, on Redis' clock) and its arguments.
//! - `health`: the Shared / Local state machine with hysteresis.
//! - `supervisor`: the `lb-redis` thread that connects, probes and switches back to Shared.
//!
//! # Behaviour
//! While Redis answers, a decision is one `EVALSHA` over one multiplexed connection shared by
//! all concurrent checks (pipelined by the `redis` crate's driver task). Any failure makes
//! `check` return `None` (the caller decides with its local limiter) after at most
//! `timeout`; a connection refused or closed, or two timeouts/errors in a row, switch to
//! Local, where `check` returns `None` at once without touching Redis. A background PING every
//! `supervisor::PROBE_INTERVAL` (200 ms) switches back after `health::RECOVERY_WINDOW` (1 s)
//! of unbroken answers. Each switch is logged once; failures are counted through `on_error`.
//!
//! # Runtimes
//! `check` is called from several tokio runtimes (one per Pingora service). The connection and
//! its driver task live on the store's own current-thread runtime, on a thread named
//! `lb-redis`; a caller only sends into the driver's channel and awaits a oneshot, which works
//! from any runtime. The caller's runtime must have its timer enabled (Pingora's do): the
//! per-check deadline runs there. Dropping the store stops the thread, its runtime and the
//! connection.
mod gcra;
mod health;
mod supervisor;
#[cfg(test)]
mod test_redis;
#[cfg(test)]
mod tests;

use super::rate_limit::RateDecision;
use crate::config::redis_without_password;
use arc_swap::ArcSwapOption;
use gcra::{parse_reply, script_command, script_params, LimitKey, GCRA_LUA};
use health::{Change, Failure, HealthCell};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// The config's `cluster:` section, as the store needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host[:port][/db]` (or `redis+unix:///path`).
    pub url: String,
    /// Longest wait for one Redis answer (a check, a connect, a probe); also the probe's.
    pub timeout: Duration,
    /// Prepended to every Redis key (`prefix + limit + ":" + key`), e.g. `lb:rl:`.
    pub prefix: String,
}

impl fmt::Debug for ClusterSettings {
    /// Shows the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("url", &redis_without_password(&self.url))
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Why a Redis call failed, for `lb_rate_limit_store_errors_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// Connection refused or closed, an error reply, or a malformed reply.
    Error,
}

impl StoreErrorKind {
    /// The metric's `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Error => "error",
        }
    }
}

/// Called once per failed Redis call (requests and probes); must be cheap (a counter).
pub type ErrorHook = Arc<dyn Fn(StoreErrorKind) + Send + Sync>;

/// One Redis shared by every `scope: cluster` limit of a config's `cluster:` section.
pub struct ClusterStore {
    state: Arc<StoreState>,
    settings: ClusterSettings,
    /// The client the `lb-redis` thread connects with.
    client: redis::Client,
    /// Dropping it stops the `lb-redis` thread; set when the store is
    /// first used (see [`ClusterStore::new`]).
    stop_supervisor: OnceLock<Option<oneshot::Sender<()>>>,
}

/// What the request path and the `lb-redis` thread share.
struct StoreState {
    health: HealthCell,
    /// The connection to use while Shared; replaced by the supervisor only.
    connection: ArcSwapOption<MultiplexedConnection>,
    script: redis::Script,
    timeout: Duration,
    prefix: Box<[u8]>,
    /// The URL for log lines, password replaced by `***`.
    shown_url: String,
    on_error: ErrorHook,
}

impl ClusterStore {
    /// Checks the settings (the error names what is wrong); returns at once. The `lb-redis`
    /// thread, which connects in the background, starts when the store is first used
    /// ([`ClusterStore::check`], [`ClusterStore::is_shared`]): not for `lb -t`, and not
    /// before Pingora forks into a daemon (a thread started before the fork would be lost).
    pub fn new(settings: ClusterSettings, on_error: ErrorHook) -> Result<Arc<Self>, String> {
        let shown_url = redis_without_password(&settings.url);
        if settings.timeout.is_zero() {
            return Err("timeout: must be more than 0 (e.g. 25ms)".to_owned());
        }
        let client = redis::Client::open(settings.url.as_str()).map_err(|err| {
            format!("url {shown_url:?}: {err} (expected redis://[user:password@]host[:port][/db])")
        })?;
        let state = Arc::new(StoreState {
            health: HealthCell::new(),
            connection: ArcSwapOption::empty(),
            script: redis::Script::new(GCRA_LUA),
            timeout: settings.timeout,
            prefix: settings.prefix.as_bytes().into(),
            shown_url,
            on_error,
        });
        Ok(Arc::new(ClusterStore {
            state,
            settings,
            client,
            stop_supervisor: OnceLock::new(),
        }))
    }

    /// Starts the `lb-redis` thread the first time; one atomic load after.
    fn start_once(&self) {
        self.stop_supervisor.get_or_init(|| {
            supervisor::start(Arc::clone(&self.state), self.client.clone())
                .inspect_err(|why| log::error!("rate limits: {why}; cluster limits decide locally"))
                .ok()
        });
    }

    /// One decision for `key` of the limit named `limit` (`rate` per `period`, plus `burst`),
    /// made in Redis. Never waits longer than the timeout. `None`: the store could not decide
    /// (Redis slow, down, not yet connected, or Local); the caller decides locally.
    ///
    /// Hot path: no lock, no log, no formatting; the key is written straight into the
    /// command's one buffer. Failures lock the health state briefly (never across an await).
    pub async fn check(
        &self,
        limit: &str,
        key: &[u8],
        rate: u32,
        period: Duration,
        burst: u32,
    ) -> Option<RateDecision> {
        self.start_once();
        let params = script_params(rate, period, burst);
        self.check_with(limit, key, params, None).await
    }

    /// [`ClusterStore::check`] with the script's `(t_µs, burst)` given, and optionally a fixed
    /// clock (tests compare the script with the local limiter on a fake clock).
    async fn check_with(
        &self,
        limit: &str,
        key: &[u8],
        params: (u64, u32),
        fixed_now_micros: Option<u64>,
    ) -> Option<RateDecision> {
        let state = &*self.state;
        if !state.health.is_shared() {
            return None;
        }
        let mut connection = state.connection.load().as_deref().cloned()?;
        let key = LimitKey {
            prefix: &state.prefix,
            limit: limit.as_bytes(),
            key,
        };
        let call = state.run_script(&mut connection, &key, params, fixed_now_micros);
        let (failure, error) = match tokio::time::timeout(state.timeout, call).await {
            Ok(Ok(reply)) => match parse_reply(&reply) {
                Some(decision) => {
                    state.health.request_succeeded();
                    return Some(decision);
                }
                None => (Failure::Error, None),
            },
            Ok(Err(error)) => (failure_of(&error), Some(error)),
            Err(_elapsed) => (Failure::Timeout, None),
        };
        state.request_failed(failure, error.as_ref());
        None
    }

    /// The settings this store was built from: a reload keeps the store when they are equal.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// True while decisions are made in Redis (for `/api/stats`).
    pub fn is_shared(&self) -> bool {
        self.start_once();
        self.state.health.is_shared()
    }
}

impl StoreState {
    /// `EVALSHA`; on `NOSCRIPT` (Redis restarted or flushed its scripts) `EVAL`, which also
    /// caches the script again.
    async fn run_script(
        &self,
        connection: &mut MultiplexedConnection,
        key: &LimitKey<'_>,
        params: (u64, u32),
        fixed_now_micros: Option<u64>,
    ) -> RedisResult<Value> {
        let by_hash = ("EVALSHA", self.script.get_hash());
        let cmd = script_command(by_hash, key, params, fixed_now_micros);
        let reply = send(connection, &cmd).await;
        match reply {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let cmd = script_command(("EVAL", GCRA_LUA), key, params, fixed_now_micros);
                send(connection, &cmd).await
            }
            reply => reply,
        }
    }

    /// Counts a failed request call and, if it switches the store to Local, logs why (once).
    fn request_failed(&self, failure: Failure, error: Option<&RedisError>) {
        (self.on_error)(error_kind(failure));
        if let Some(change) = self.health.update(|health| health.request_failed(failure)) {
            self.log_change(change, failure, error);
        }
    }

    /// The one log line of a state change; `failure`/`error` say why when going Local.
    fn log_change(&self, change: Change, failure: Failure, error: Option<&RedisError>) {
        let url = &self.shown_url;
        match change {
            Change::ToLocal => {
                let reason = match (failure, error) {
                    (Failure::Timeout, _) => format!("timed out after {:?}", self.timeout),
                    (_, Some(error)) => error.to_string(),
                    (_, None) => "malformed reply to the rate limit script".to_owned(),
                };
                log::warn!(
                    "rate limits: Redis {url} does not answer ({reason}); \
                     cluster limits decide locally until it does"
                );
            }
            Change::ToShared { first_time: true } => {
                log::info!("rate limits: Redis {url} answers; cluster limits are shared");
            }
            Change::ToShared { first_time: false } => log::info!(
                "rate limits: Redis {url} answers again; cluster limits are shared again"
            ),
        }
    }
}

/// Sends one command; an error reply becomes an `Err`.
async fn send(connection: &mut MultiplexedConnection, cmd: &redis::Cmd) -> RedisResult<Value> {
    connection
        .send_packed_command(cmd)
        .await
        .and_then(Value::extract_error)
}

/// A refused, reset or closed connection means Redis is down; anything else may be a moment.
fn failure_of(error: &RedisError) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
    {
        Failure::Down
    } else {
        Failure::Error
    }
}

/// The metric label of a failure.
fn error_kind(failure: Failure) -> StoreErrorKind {
    match failure {
        Failure::Timeout => StoreErrorKind::Timeout,
        Failure::Down | Failure::Error => StoreErrorKind::Error,
    }
}
