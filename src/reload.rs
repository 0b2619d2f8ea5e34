//! Live reload: `SIGHUP` (or `POST /api/reload`) reads the config file
//! again and applies it in place, without dropping a connection.
//!
//! Backends, weights, health checks, passive health, retries, timeouts,
//! limits, upstreams and routes, and the TLS listeners' certificates change
//! at once: a new pool is resolved before the routes that use it serve,
//! requests in flight finish with the pools and routes they started with,
//! and handshakes after the reload get the new certificates while open
//! connections go on. Settings that need a restart (the `server:` section,
//! listeners, the admin listener, `limits.max_connections`,
//! `timeouts.client_header`) are logged as such and left as they are. A
//! file that fails validation changes nothing; the error is logged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Config, ConfigError, ListenerKind, Overrides};
use crate::pool::{Pool, PoolService};
use crate::proxy::ProxyControl;
use crate::proxy::Routing;
use crate::telemetry::metrics::metrics;
use crate::tls::TlsListener;

/// Re-reads the config and applies what can change while running.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// Every upstream's pool, in the order of the running config's upstreams.
    pools: Mutex<Vec<Arc<Pool>>>,
    /// Never sent: the shutdown watch of the services that keep pools
    /// added by a reload current (the runtime's end stops them).
    pools_running: tokio::sync::watch::Sender<bool>,
    proxy: ProxyControl,
    /// The TLS listeners, whose certificates a reload replaces.
    tls_listeners: Vec<Arc<TlsListener>>,
    /// The running values of the settings a reload cannot change.
    restart_only: Mutex<Vec<(&'static str, String)>>,
}

/// The settings only a restart changes, each with its value as text.
fn restart_only(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("server", format!("{:?}", config.server)),
        (
            "listeners",
            config
                .listeners
                .iter()
                .map(|l| l.shape())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "admin",
            format!("{:?}", config.admin.as_ref().map(|a| a.listen)),
        ),
        (
            "limits.max_connections",
            config.limits.max_connections.to_string(),
        ),
        (
            "timeouts.client_header",
            format!("{:?}", config.timeouts.client_header),
        ),
    ]
}

impl Reloader {
    /// A reloader for the process started with `config`.
    pub fn new(
        path: Option<PathBuf>,
        overrides: Overrides,
        config: &Config,
        pools: Vec<Arc<Pool>>,
        proxy: ProxyControl,
        tls_listeners: Vec<Arc<TlsListener>>,
    ) -> Self {
        Reloader {
            path,
            overrides,
            pools: Mutex::new(pools),
            pools_running: tokio::sync::watch::Sender::new(false),
            proxy,
            tls_listeners,
            restart_only: Mutex::new(restart_only(config)),
        }
    }

    /// Reloads; `Ok` says what happened, `Err` why nothing changed. Both
    /// are logged here.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let outcome = self.apply();
        metrics().reload(outcome.is_ok());
        match &outcome {
            Ok(reloaded) => log::info!("{reloaded}"),
            Err(e) => log::error!("{}", error_chain(e)),
        }
        outcome
    }

    fn apply(&self) -> Result<Reloaded, ReloadError> {
        let config =
            Config::load(self.path.as_deref(), &self.overrides).map_err(ReloadError::Rejected)?;
        let running = self
            .restart_only
            .lock()
            .map_err(|_| ReloadError::Poisoned)?;
        let mut needs_restart = Vec::new();
        for ((key, old), (_, new)) in running.iter().zip(restart_only(&config)) {
            if *old != new {
                log::warn!("reload: {key} changed; that needs a restart and is not applied");
                needs_restart.push(*key);
            }
        }
        self.apply_pools(&config)?;
        self.proxy.reconfigure(&config);
        let certificates = self.replace_certificates(&config);
        for warning in &config.warnings {
            log::warn!("reload: {warning}");
        }
        Ok(Reloaded {
            backends: config.backends.len(),
            certificates,
            needs_restart,
        })
    }

    /// Gives every upstream of `config` its pool: the running one of the
    /// same name, reconfigured, or a new one, resolved before it serves and
    /// kept current from then on. Then swaps the routing whole: requests
    /// in flight finish on the pools they started with; removed pools stop
    /// once their last request is done.
    fn apply_pools(&self, config: &Config) -> Result<(), ReloadError> {
        let mut running = self.pools.lock().map_err(|_| ReloadError::Poisoned)?;
        let mut pools = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            let same = running
                .iter()
                .find(|p| p.name() == upstream.name && p.fits(upstream));
            let pool = match same {
                Some(pool) => {
                    pool.reconfigure(config, upstream)
                        .map_err(ReloadError::Pool)?;
                    Arc::clone(pool)
                }
                None => {
                    let pool = Pool::new(config, upstream).map_err(ReloadError::Pool)?;
                    self.keep_current(&pool);
                    if running.iter().any(|p| p.name() == upstream.name) {
                        log::info!(
                            "reload: upstream {} rebuilt: its new balance needs another ring",
                            upstream.name
                        );
                    } else {
                        log::info!("reload: upstream {} added", upstream.name);
                    }
                    pool
                }
            };
            pools.push(pool);
        }
        for gone in running
            .iter()
            .filter(|p| !pools.iter().any(|n| n.name() == p.name()))
        {
            log::info!("reload: upstream {} removed", gone.name());
        }
        let routing = Routing::new(pools.clone(), config).map_err(|ties| {
            ReloadError::Routes(ties.into_iter().map(|t| t.to_string()).collect())
        })?;
        self.proxy.set_routing(routing);
        for old in running
            .iter()
            .filter(|o| !pools.iter().any(|n| Arc::ptr_eq(n, o)))
        {
            let successor = pools.iter().find(|n| n.name() == old.name());
            forget_backends(old, successor.map(|n| &**n));
        }
        *running = pools;
        Ok(())
    }

    /// Runs the service that keeps a pool added by a reload current.
    fn keep_current(&self, pool: &Arc<Pool>) {
        let service = PoolService::of(pool);
        let shutdown = self.pools_running.subscribe();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { service.run(shutdown).await });
            }
            Err(e) => log::error!(
                "reload: no runtime to run the checks of upstream {}: {e}",
                pool.name()
            ),
        }
    }

    /// Gives each running TLS listener the certificates the new config
    /// read for its address; returns how many listeners got them.
    fn replace_certificates(&self, config: &Config) -> usize {
        let mut replaced = 0;
        for listener in &config.listeners {
            let ListenerKind::Tls(tls) = &listener.kind else {
                continue;
            };
            let name = listener.addr.to_string();
            if let Some(running) = self.tls_listeners.iter().find(|l| l.name() == name) {
                running.replace(Arc::clone(&tls.certificates));
                replaced += 1;
            }
        }
        replaced
    }
}

/// What a reload applied.
#[derive(Debug)]
pub struct Reloaded {
    /// Backend entries in the new config.
    pub backends: usize,
    /// TLS listeners whose certificates were read again.
    pub certificates: usize,
    /// Changed settings that wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reloaded: {} backend entr(ies)", self.backends)?;
        if self.certificates > 0 {
            write!(f, ", certificates of {} TLS listener(s)", self.certificates)?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; not applied until a restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file fails validation.
    #[error("reload rejected, the running config stays")]
    Rejected(#[source] ConfigError),
    /// The pool could not take the new config.
    #[error("reload failed")]
    Pool(#[source] pingora::BError),
    /// The routes do not fit together (found by the config check first).
    #[error("reload failed: {}", .0.join("; "))]
    Routes(Vec<String>),
    /// A reload panicked while holding the running settings.
    #[error("reload failed: its state was poisoned by an earlier failure")]
    Poisoned,
}

/// Removes the metric series of `old`'s backends, a pool the reload
/// replaced: all of them when its name is gone, else those its successor
/// (the pool of the same name, rebuilt) does not have, whose series its
/// own handles share.
fn forget_backends(old: &Pool, successor: Option<&Pool>) {
    let kept = successor.map(|pool| pool.members().states());
    for addr in old.members().states().keys() {
        if !kept.as_ref().is_some_and(|kept| kept.contains_key(addr)) {
            metrics().remove_backend(old.name(), &addr.to_string());
        }
    }
}

/// `e` and its causes on one line, `: ` between them, as lb prints errors.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A background service that reloads on every `SIGHUP`.
pub struct ReloadOnHangup(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => signal,
                Err(e) => {
                    log::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                    return;
                }
            };
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    log::info!("SIGHUP received, reloading the config");
                    // Reload reads a file: keep it off the async workers.
                    let reloader = Arc::clone(&self.0);
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
