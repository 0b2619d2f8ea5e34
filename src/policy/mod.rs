//! The policies listeners and routes apply to requests: access rules,
//! rate and connection limits, authentication, CORS, header rules and
//! compression, each a named [`Policy`] compiled once from the config,
//! and walked in order by the proxy's hooks (as Traefik's middlewares and
//! Envoy's HTTP filters). Also what decides the real client address
//! ([`client`]) and a route's rewrite and redirect ([`rewrite`]).
//!
//! Where each kind runs, in the proxy's hook order:
//! ```text
//! request_filter ─────────── access, connection_limit, rate_limit,
//!                            basic_auth, forward_auth, cors (preflight)
//!                            (listener's chain, then the route's)
//! upstream_request_filter ── request_headers, forward_auth's copied headers
//! response_filter ───────── cors, response_headers, compression (start)
//! response_body_filter ──── compression
//! ```
//!
//! A chain that is empty costs a request nothing: the proxy checks for
//! one before it looks at any policy. State that must outlive a reload
//! (rate-limit counters) is kept when the policy's settings are the same.

pub mod access;
pub mod basic_auth;
pub mod client;
pub mod cluster_store;
pub mod compression;
pub mod connection_limit;
pub mod cors;
pub mod forward_auth;
pub mod headers;
pub mod limits;
pub mod rate_limit;
pub mod rewrite;
mod template;
pub mod trace;
mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{ClusterConfig, PolicyConfig, Problem};
use crate::telemetry::metrics::metrics;
use crate::telemetry::policies::PolicyCounters;
pub use headers::{Host, Vars};
pub use walk::{admit, on_response, on_upstream_request, Admitted, Facts};

/// An answer lb gives itself instead of proxying: a refusal, a
/// redirect, a CORS preflight's.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Close the connection after it (HTTP/1).
    pub close: bool,
}

impl Answer {
    /// The answer `resp` is, with no body (a CORS preflight's 204).
    pub fn of(resp: &pingora::http::ResponseHeader) -> Answer {
        Answer {
            status: resp.status.as_u16(),
            headers: resp
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            body: Bytes::new(),
            close: false,
        }
    }

    /// A plain answer whose body names the status and says why.
    pub fn plain(status: u16, why: &'static str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::from_static(why.as_bytes()),
            close: false,
        }
    }
}

/// One compiled policy.
pub struct Policy {
    /// Its name under `policies:`, the metrics' label.
    pub name: Box<str>,
    /// What it was built from, so that a reload keeps its state when
    /// unchanged.
    config: PolicyConfig,
    access: Option<access::Access>,
    connection_limit: Option<limits::ConnectionLimit>,
    rate_limit: Option<limits::RateLimit>,
    cors: Option<cors::Cors>,
    basic_auth: Option<Arc<basic_auth::BasicAuth>>,
    forward_auth: Option<forward_auth::ForwardAuth>,
    request_headers: Option<headers::HeaderEdits>,
    response_headers: Option<headers::HeaderEdits>,
    compression: Option<compression::CompressionRule>,
    counters: PolicyCounters,
}

/// The policies a listener or route applies, in order.
pub type Chain = Arc<[Arc<Policy>]>;

/// Every policy of a config, by name. A clone shares the policies.
#[derive(Default, Clone)]
pub struct Policies {
    by_name: HashMap<String, Arc<Policy>>,
    /// The `cluster:` section and the store its limits count in.
    cluster: Option<(ClusterConfig, Arc<cluster_store::ClusterStore>)>,
}

impl Policies {
    /// Compiles `configs`; a policy of `running` with the same config is
    /// kept as it is (with its counters and limits). Reads the users files
    /// of `basic_auth`: each one that cannot be read is a problem named by
    /// its key.
    pub fn build(
        configs: &[PolicyConfig],
        cluster: Option<&ClusterConfig>,
        running: &Policies,
    ) -> Result<Policies, Vec<Problem>> {
        let mut by_name = HashMap::with_capacity(configs.len());
        let mut problems = Vec::new();
        let cluster = cluster_store(cluster, running).map_err(|p| vec![p])?;
        let same_cluster = cluster.as_ref().map(|c| &c.0) == running.cluster.as_ref().map(|c| &c.0);
        let shared = cluster
            .as_ref()
            .map(|(config, store)| (store, config.replicas));
        for config in configs {
            let before = running.by_name.get(&config.name);
            // A users file is read again at every reload, so a policy
            // with basic_auth is never kept as it was; nor one that counts
            // in a cluster whose settings changed.
            let policy = match before {
                Some(same)
                    if same.config == *config
                        && config.basic_auth.is_none()
                        && (same_cluster || !same.counts_in_cluster()) =>
                {
                    Arc::clone(same)
                }
                _ => match Policy::new(config, shared, before.map(|p| &**p)) {
                    Ok(policy) => Arc::new(policy),
                    Err(problem) => {
                        problems.push(problem);
                        continue;
                    }
                },
            };
            by_name.insert(config.name.clone(), policy);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policies { by_name, cluster })
    }

    /// Whether cluster rate limits are counted in the store now (`false`:
    /// each replica decides alone); None without a `cluster:` section.
    pub fn cluster_limits_shared(&self) -> Option<bool> {
        self.cluster.as_ref().map(|(_, store)| store.is_shared())
    }

    /// The chain of the policies `names`, in their order (the config
    /// checked that each exists).
    pub fn chain(&self, names: &[String]) -> Option<Chain> {
        if names.is_empty() {
            return None;
        }
        Some(
            names
                .iter()
                .filter_map(|name| self.by_name.get(name).cloned())
                .collect(),
        )
    }

    /// Each policy's name and decision counts, sorted by name.
    pub fn counts(&self) -> Vec<(&str, [u64; 5])> {
        let mut counts: Vec<_> = self
            .by_name
            .values()
            .map(|p| (&*p.name, p.counters.totals()))
            .collect();
        counts.sort_by_key(|(name, _)| *name);
        counts
    }

    /// Removes the series of the policies `next` does not have.
    pub fn forget_removed(&self, next: &Policies) {
        for name in self.by_name.keys() {
            if !next.by_name.contains_key(name) {
                metrics().policies.forget(name);
            }
        }
    }
}

/// The store of `cluster`: the running one when its settings are the
/// same (its connection and state go on), else a new one.
fn cluster_store(
    cluster: Option<&ClusterConfig>,
    running: &Policies,
) -> Result<Option<(ClusterConfig, Arc<cluster_store::ClusterStore>)>, Problem> {
    let Some(config) = cluster else {
        return Ok(None);
    };
    let settings = cluster_store::ClusterSettings {
        url: config.redis.clone(),
        timeout: config.timeout,
        prefix: config.prefix.clone(),
    };
    if let Some((_, store)) = &running.cluster {
        if *store.settings() == settings {
            return Ok(Some((config.clone(), Arc::clone(store))));
        }
    }
    let errors = &metrics().policies.store_errors;
    let (timeouts, failures) = (errors[0].clone(), errors[1].clone());
    let on_error = Arc::new(move |kind| match kind {
        cluster_store::StoreErrorKind::Timeout => timeouts.inc(),
        cluster_store::StoreErrorKind::Error => failures.inc(),
    });
    let store = cluster_store::ClusterStore::new(settings, on_error).map_err(|why| Problem {
        key: "cluster.redis".into(),
        message: why,
    })?;
    Ok(Some((config.clone(), store)))
}

impl Policy {
    /// Whether it has a rate limit counted in the cluster's store.
    fn counts_in_cluster(&self) -> bool {
        self.rate_limit
            .as_ref()
            .is_some_and(limits::RateLimit::is_shared)
    }

    /// Whether its response rules read the request's `Origin` (CORS).
    pub fn reads_origin(&self) -> bool {
        self.cors.is_some()
    }

    /// Whether its response rules read the request's `Host` (`{host}`).
    pub fn reads_host(&self) -> bool {
        self.response_headers
            .as_ref()
            .is_some_and(headers::HeaderEdits::uses_host)
    }

    /// Compiles `config`; `before` is the policy of the same name that
    /// runs, whose limits' state is kept where their settings are the same.
    fn new(
        config: &PolicyConfig,
        shared: Option<(&Arc<cluster_store::ClusterStore>, u32)>,
        before: Option<&Policy>,
    ) -> Result<Policy, Problem> {
        let problem = |kind: &str, message: String| Problem {
            key: format!("policies.{}.{kind}", config.name),
            message,
        };
        let basic_auth = match &config.basic_auth {
            Some(auth) => Some(Arc::new(
                basic_auth::BasicAuth::load(&auth.realm, &auth.users_file)
                    .map_err(|why| problem("basic_auth.users_file", why))?,
            )),
            None => None,
        };
        let cors = match &config.cors {
            Some(c) => {
                cors::check_config(
                    &c.allow_origins,
                    &c.allow_methods,
                    &c.allow_headers,
                    &c.expose_headers,
                    c.allow_credentials,
                )
                .map_err(|why| problem("cors", why))?;
                Some(cors::Cors::new(
                    &c.allow_origins,
                    &c.allow_methods,
                    &c.allow_headers,
                    &c.expose_headers,
                    c.allow_credentials,
                    c.max_age,
                ))
            }
            None => None,
        };
        Ok(Policy {
            name: config.name.as_str().into(),
            access: config.access.as_ref().map(access::Access::new),
            connection_limit: config.connection_limit.as_ref().map(|c| {
                limits::ConnectionLimit::new(c, before.and_then(|b| b.connection_limit.as_ref()))
            }),
            rate_limit: config.rate_limit.as_ref().map(|c| {
                let before = before.and_then(|b| b.rate_limit.as_ref());
                let (store, replicas) = shared.map_or((None, 1), |(s, r)| (Some(s), r));
                limits::RateLimit::new(&config.name, c, store, replicas, before)
            }),
            forward_auth: config
                .forward_auth
                .as_ref()
                .map(forward_auth::ForwardAuth::new),
            request_headers: config
                .request_headers
                .as_ref()
                .map(headers::HeaderEdits::new),
            response_headers: config
                .response_headers
                .as_ref()
                .map(headers::HeaderEdits::new),
            compression: config.compression.as_ref().map(|c| {
                let algorithms: Vec<_> = c
                    .algorithms
                    .iter()
                    .filter_map(|a| compression::Algorithm::parse(a))
                    .collect();
                compression::CompressionRule::new(&algorithms, c.min_size, &c.types)
            }),
            cors,
            basic_auth,
            counters: metrics().policies.counters(&config.name),
            config: config.clone(),
        })
    }

    /// Whether its access rule (if any) lets `client` in: the listener's
    /// check at accept, before any TLS work.
    pub fn admits_connection(&self, client: std::net::IpAddr) -> bool {
        let allowed = self.access.as_ref().is_none_or(|a| a.allows(client));
        if !allowed {
            self.counters
                .count(crate::telemetry::policies::Outcome::Denied);
        }
        allowed
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'r>(request: &'r pingora::http::RequestHeader, name: &str) -> Option<&'r [u8]> {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value.as_bytes())
        })
}
