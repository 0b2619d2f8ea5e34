//! The one assembly path: from a checked [`Config`] to everything that
//! serves traffic and may change at reload (pools, routes, certificates).
//! Start-up and reload both call [`Runtime::build`].
//!
//! Building changes nothing that serves: a pool that runs already is given
//! a prepared update, not changed; a new pool is resolved but gets no
//! traffic; certificates are read, not installed. Only
//! [`Runtime::put_in_service`] changes the running lb, and it cannot fail,
//! so a reload that fails at any step of the build leaves lb serving the
//! old config unchanged. State that must survive a reload (health,
//! ejections, in-flight counts, sticky ids) lives in the pools, which a
//! reload keeps by name.
//!
//! What Pingora fixes at start (listening addresses, threads, the
//! runtime, the admin listener) is not here: see [`crate::app`], and
//! [`RestartOnly`] for what a reload says needs a restart.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;

use crate::config::{Config, ConfigError, ListenerConfig, Problem};
use crate::policy::Policies;
use crate::pool::{Pool, PoolUpdate};
use crate::proxy::{ProxyControl, Routing};
use crate::telemetry::metrics::metrics;
use crate::tls::{ListenerCertificates, TlsListener};

/// What serves traffic under one config, built and not yet in service.
pub struct Runtime {
    /// The pools and the routes to them.
    pub routing: Routing,
    /// Each TLS listener's certificates.
    pub certificates: ListenerCertificates,
    /// Every pool, in the order of `config.pools`.
    pools: Vec<Arc<Pool>>,
    /// The updates of the pools that run already.
    updates: Vec<(Arc<Pool>, PoolUpdate)>,
    /// The pools that do not run yet.
    added: Vec<Arc<Pool>>,
    /// Warnings found while building (expired certificates).
    pub warnings: Vec<String>,
}

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A pool could not be made (its health check's transport).
    #[error("cannot build the pool {name}")]
    Pool {
        name: String,
        #[source]
        source: pingora::BError,
    },
    /// The new pools' backends could not be resolved (no runtime to do it).
    #[error("cannot resolve the backends of the new pools")]
    Resolve(#[source] pingora::BError),
    /// Routes or certificates are wrong: each problem names its key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl Runtime {
    /// Builds what `config` serves with. A pool of `running` with the same
    /// name and a ring of the same kind is kept and given an update; the
    /// others are made anew. A policy of `policies` (the running ones)
    /// with the same settings is kept with its state. Nothing running
    /// changes.
    pub fn build(
        config: &Config,
        running: &[Arc<Pool>],
        policies: &Policies,
    ) -> Result<Runtime, BuildError> {
        let pools = BuiltPools::build(config, running)?;
        let built_policies =
            match Policies::build(&config.policies, config.cluster.as_ref(), policies) {
                Ok(built) => built,
                Err(problems) => {
                    pools.forget_added(running);
                    return Err(invalid(problems.into_iter()));
                }
            };
        let routing_and_certificates = Routing::new(config, &pools.pools, built_policies.clone())
            .map_err(|errors| {
                invalid(errors.into_iter().map(|e| Problem {
                    key: "routes".into(),
                    message: e.to_string(),
                }))
            })
            .and_then(|routing| {
                // The last step: a failure here must leave everything as it was.
                let certificates = ListenerCertificates::load(&config.listeners)
                    .map_err(|problems| invalid(problems.into_iter()))?;
                Ok((routing, certificates))
            });
        let (routing, certificates) = match routing_and_certificates {
            Ok(built) => built,
            Err(e) => {
                pools.forget_added(running);
                // The series of the policies this build made go with it.
                built_policies.forget_removed(policies);
                return Err(e);
            }
        };
        Ok(Runtime {
            routing,
            warnings: certificates.expired(),
            certificates,
            pools: pools.pools,
            updates: pools.updates,
            added: pools.added,
        })
    }

    /// Every pool, in the order of the config's pools.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The certificates of the TLS listener on `addr`, as a listener
    /// serving them.
    pub fn tls_listener(&self, addr: SocketAddr) -> Option<Arc<TlsListener>> {
        let certificates = self.certificates.of(addr)?;
        Some(TlsListener::new(addr.to_string(), Arc::clone(certificates)))
    }

    /// Puts a reloaded runtime in service, all at once: the running pools
    /// take their updates, `start` runs each new pool's checks, requests
    /// from now on get the new routing and settings, handshakes the new
    /// certificates. `running` becomes the new pools. Returns how many
    /// TLS listeners got new certificates.
    pub fn put_in_service(
        self,
        config: &Config,
        running: &mut Vec<Arc<Pool>>,
        control: &ProxyControl,
        tls_listeners: &[Arc<TlsListener>],
        start: impl Fn(&Arc<Pool>),
    ) -> usize {
        log_pool_changes(running, &self.pools, &self.added);
        for (pool, update) in self.updates {
            pool.apply(update);
        }
        for pool in &self.added {
            start(pool);
        }
        control
            .routing()
            .load()
            .policies()
            .forget_removed(self.routing.policies());
        control.set_routing(self.routing);
        control.reconfigure(config);
        let mut replaced = 0;
        for (addr, certificates) in self.certificates.iter() {
            let name = addr.to_string();
            if let Some(listener) = tls_listeners.iter().find(|l| l.name() == name) {
                listener.replace(Arc::clone(certificates));
                replaced += 1;
            }
        }
        let kept: HashSet<*const Pool> = self.pools.iter().map(Arc::as_ptr).collect();
        let by_name: HashMap<&str, &Arc<Pool>> = self.pools.iter().map(|p| (p.name(), p)).collect();
        for old in running
            .iter()
            .filter(|old| !kept.contains(&Arc::as_ptr(old)))
        {
            let successor = by_name.get(old.name());
            forget_backends(old, successor.map(|n| &***n));
        }
        *running = self.pools;
        replaced
    }
}

/// The pools of a config, each kept with its update or made anew.
#[derive(Default)]
struct BuiltPools {
    pools: Vec<Arc<Pool>>,
    updates: Vec<(Arc<Pool>, PoolUpdate)>,
    added: Vec<Arc<Pool>>,
}

impl BuiltPools {
    fn build(config: &Config, running_pools: &[Arc<Pool>]) -> Result<Self, BuildError> {
        let mut built = BuiltPools::default();
        let running: HashMap<&str, &Arc<Pool>> =
            running_pools.iter().map(|p| (p.name(), p)).collect();
        for pool_config in &config.pools {
            let failed = |source| BuildError::Pool {
                name: pool_config.name.clone(),
                source,
            };
            let same = running
                .get(pool_config.name.as_str())
                .filter(|p| p.fits(pool_config));
            let pool = match same {
                Some(pool) => {
                    let update = pool.prepare(config, pool_config).map_err(failed)?;
                    built.updates.push((Arc::clone(pool), update));
                    Arc::clone(pool)
                }
                None => {
                    let pool = Pool::new(config, pool_config).map_err(failed)?;
                    built.added.push(Arc::clone(&pool));
                    pool
                }
            };
            built.pools.push(pool);
        }
        if let Err(e) = Pool::resolve_all(&built.added) {
            built.forget_added(running_pools);
            return Err(BuildError::Resolve(e));
        }
        Ok(built)
    }

    /// Removes the metric series of the pools this build made, for a build
    /// that failed: it leaves nothing in `/metrics`. A pool rebuilt under a
    /// running pool's name shares that pool's series, which stay.
    fn forget_added(&self, running: &[Arc<Pool>]) {
        for pool in &self.added {
            let namesake = running.iter().find(|p| p.name() == pool.name());
            forget_backends(pool, namesake.map(|p| &**p));
        }
    }
}

/// A build error as the config error it is to the user.
fn invalid(problems: impl Iterator<Item = Problem>) -> BuildError {
    BuildError::Invalid(ConfigError::Invalid(problems.collect()))
}

/// Logs each pool a reload adds, rebuilds (a balance that needs another
/// ring) or removes.
fn log_pool_changes(running: &[Arc<Pool>], pools: &[Arc<Pool>], added: &[Arc<Pool>]) {
    let running_names: HashSet<&str> = running.iter().map(|p| p.name()).collect();
    let names: HashSet<&str> = pools.iter().map(|p| p.name()).collect();
    for pool in added {
        if running_names.contains(pool.name()) {
            log::info!(
                "reload: pool {} rebuilt: its new balance needs another ring",
                pool.name()
            );
        } else {
            log::info!("reload: pool {} added", pool.name());
        }
    }
    for gone in running.iter().filter(|p| !names.contains(p.name())) {
        log::info!("reload: pool {} removed", gone.name());
    }
}

/// Removes the metric series of `old`'s backends, a pool the reload
/// replaced: all of them when its name is gone, else those its successor
/// (the pool of the same name, rebuilt) does not have, whose series its
/// own handles share.
fn forget_backends(old: &Pool, successor: Option<&Pool>) {
    if successor.is_none() {
        metrics().remove_backend(old.name(), "none");
    }
    let kept = successor.map(|pool| pool.members().states());
    for addr in old.members().states().keys() {
        if !kept.as_ref().is_some_and(|kept| kept.contains_key(addr)) {
            metrics().remove_backend(old.name(), &addr.to_string());
        }
    }
}

/// The settings only a restart changes, as they were at start.
#[derive(Debug, PartialEq)]
pub struct RestartOnly {
    server: ServerConf,
    /// Each listener's address and protocols, without certificate files.
    listeners: Vec<ListenerConfig>,
    admin: Option<SocketAddr>,
    max_connections: usize,
    client_header: Duration,
    watch_config: bool,
}

impl RestartOnly {
    /// The restart-only settings of `config`.
    pub fn of(config: &Config) -> Self {
        RestartOnly {
            server: copy_of(&config.server),
            listeners: config.listeners.iter().map(ListenerConfig::shape).collect(),
            admin: config.admin.as_ref().map(|a| a.listen),
            max_connections: config.limits.max_connections,
            client_header: config.timeouts.client_header,
            watch_config: config.watch_config,
        }
    }

    /// The keys whose values differ in `other`, by their config names.
    pub fn changed(&self, other: &RestartOnly) -> Vec<&'static str> {
        let differs = [
            ("server", self.server != other.server),
            ("listeners", self.listeners != other.listeners),
            ("admin", self.admin != other.admin),
            (
                "limits.max_connections",
                self.max_connections != other.max_connections,
            ),
            (
                "timeouts.client_header",
                self.client_header != other.client_header,
            ),
            ("watch_config", self.watch_config != other.watch_config),
        ];
        differs
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }
}

/// A copy of Pingora's server settings, which are not `Clone` but are
/// serde: a copy through YAML. Should that fail (it cannot for plain
/// fields), the defaults stand in, and a reload reports `server` changed.
fn copy_of(server: &ServerConf) -> ServerConf {
    serde_yaml_ng::to_value(server)
        .and_then(serde_yaml_ng::from_value)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
