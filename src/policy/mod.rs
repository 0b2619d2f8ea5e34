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
pub mod client;
pub mod forward_auth;
pub mod headers;
pub mod rewrite;
mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{PolicyConfig, Problem};
use crate::telemetry::metrics::metrics;
use crate::telemetry::policies::PolicyCounters;
pub use walk::{admit, on_response, on_upstream_request, Admitted, Facts};

/// An answer lb gives itself instead of proxying: a refusal, a
/// redirect, a CORS preflight's.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    /// A plain answer whose body names the status and says why.
    pub fn plain(status: u16, why: &'static str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::from_static(why.as_bytes()),
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
    forward_auth: Option<forward_auth::ForwardAuth>,
    request_headers: Option<headers::HeaderEdits>,
    response_headers: Option<headers::HeaderEdits>,
    counters: PolicyCounters,
}

/// The policies a listener or route applies, in order.
pub type Chain = Arc<[Arc<Policy>]>;

/// Every policy of a config, by name.
#[derive(Default)]
pub struct Policies {
    by_name: HashMap<String, Arc<Policy>>,
}

impl Policies {
    /// Compiles `configs`; a policy of `running` with the same config is
    /// kept as it is (with its counters and limits). Reads the users files
    /// of `basic_auth`: each one that cannot be read is a problem named by
    /// its key.
    pub fn build(configs: &[PolicyConfig], running: &Policies) -> Result<Policies, Vec<Problem>> {
        let mut by_name = HashMap::with_capacity(configs.len());
        let problems = Vec::new();
        for config in configs {
            let policy = match running.by_name.get(&config.name) {
                Some(same) if same.config == *config => Arc::clone(same),
                _ => Arc::new(Policy::new(config)),
            };
            by_name.insert(config.name.clone(), policy);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policies { by_name })
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

impl Policy {
    fn new(config: &PolicyConfig) -> Policy {
        Policy {
            name: config.name.as_str().into(),
            access: config.access.as_ref().map(access::Access::new),
            forward_auth: config
                .forward_auth
                .as_ref()
                .map(forward_auth::ForwardAuth::new),
            request_headers: config.request_headers.as_ref().map(headers::HeaderEdits::new),
            response_headers: config
                .response_headers
                .as_ref()
                .map(headers::HeaderEdits::new),
            counters: metrics().policies.counters(&config.name),
            config: config.clone(),
        }
    }

    /// Whether its access rule (if any) lets `client` in: the listener's
    /// check at accept, before any TLS work.
    pub fn admits_connection(&self, client: std::net::IpAddr) -> bool {
        let allowed = self.access.as_ref().map_or(true, |a| a.allows(client));
        if !allowed {
            self.counters
                .count(crate::telemetry::policies::Outcome::Denied);
        }
        allowed
    }
}
