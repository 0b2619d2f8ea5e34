//! Live reload: `SIGHUP`, `POST /api/reload` or a change of the config
//! file or a file it names ([`ReloadOnChange`]) reads the config file
//! again and applies it in place, without dropping a connection.
//!
//! Backends, weights, health checks, passive health, retries, timeouts,
//! limits, pools and routes, and the TLS listeners' certificates change
//! at once: the whole new [`Runtime`] is built first (a new pool resolved,
//! certificates read), then put in service in one step; requests in
//! flight finish with the pools and routes they started with, and
//! handshakes after the reload get the new certificates while open
//! connections go on. Settings that need a restart ([`RestartOnly`]: the
//! `server:` section, listeners, the admin listener,
//! `limits.max_connections`, `timeouts.client_header`) are logged as such
//! and left as they are. A file that fails validation, or a runtime that
//! fails to build at any step, changes nothing; the error is logged.

mod on_change;
mod watch;

pub use on_change::ReloadOnChange;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Config, ConfigError, Overrides};
use crate::pool::{Pool, PoolTasks};
use crate::proxy::ProxyControl;
use crate::runtime::{BuildError, RestartOnly, Runtime};
use crate::telemetry::metrics::metrics;
use crate::tls::TlsListener;

/// Re-reads the config and applies what can change while running.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// Every pool, in the order of the running config's pools.
    pools: Mutex<Vec<Arc<Pool>>>,
    /// Where the tasks that keep pools current run.
    pool_tasks: Arc<PoolTasks>,
    proxy: ProxyControl,
    /// The TLS listeners, whose certificates a reload replaces.
    tls_listeners: Vec<Arc<TlsListener>>,
    /// The settings a reload cannot change, as lb started with them.
    restart_only: RestartOnly,
}

impl Reloader {
    /// A reloader for the process started with `config`.
    pub fn new(
        path: Option<PathBuf>,
        overrides: Overrides,
        config: &Config,
        pools: Vec<Arc<Pool>>,
        pool_tasks: Arc<PoolTasks>,
        proxy: ProxyControl,
        tls_listeners: Vec<Arc<TlsListener>>,
    ) -> Self {
        Reloader {
            path,
            overrides,
            pools: Mutex::new(pools),
            pool_tasks,
            proxy,
            tls_listeners,
            restart_only: RestartOnly::of(config),
        }
    }

    /// The config file, when lb runs with one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
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

    /// Reads the file, builds the whole new runtime, and only then puts it
    /// in service: a failure at any step changes nothing.
    fn apply(&self) -> Result<Reloaded, ReloadError> {
        let config =
            Config::load(self.path.as_deref(), &self.overrides).map_err(ReloadError::Rejected)?;
        let needs_restart = self.restart_only.changed(&RestartOnly::of(&config));
        for key in &needs_restart {
            log::warn!("reload: {key} changed; that needs a restart and is not applied");
        }
        let mut running = self.pools.lock().map_err(|_| ReloadError::Poisoned)?;
        let policies = self.proxy.routing().load_full();
        let runtime =
            Runtime::build(&config, &running, policies.policies()).map_err(ReloadError::Build)?;
        for warning in config.warnings.iter().chain(&runtime.warnings) {
            log::warn!("reload: {warning}");
        }
        let certificates = runtime.put_in_service(
            &config,
            &mut running,
            &self.proxy,
            &self.tls_listeners,
            |pool| self.pool_tasks.spawn(pool),
        );
        metrics().config_running(&config.hash);
        Ok(Reloaded {
            hash: config.hash.clone(),
            files_named: config.files_named(),
            backends: config.backends.len(),
            certificates,
            needs_restart,
        })
    }
}

/// What a reload applied.
#[derive(Debug)]
pub struct Reloaded {
    /// The hash of the config now running.
    pub hash: String,
    /// The files it names (certificates, CA, users files).
    pub files_named: Vec<PathBuf>,
    /// Backend entries in the new config.
    pub backends: usize,
    /// TLS listeners whose certificates were read again.
    pub certificates: usize,
    /// Changed settings that wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reloaded config {}: {} backend entr(ies)",
            self.hash, self.backends
        )?;
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
    /// The new config's pools, routes or certificates could not be built.
    #[error("reload failed, the running config stays")]
    Build(#[source] BuildError),
    /// A reload panicked while holding the running pools.
    #[error("reload failed: its state was poisoned by an earlier failure")]
    Poisoned,
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
