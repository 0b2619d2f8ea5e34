//! The proxy's settings that a reload replaces, and [`ProxyControl`], the
//! handle the connection layer, the admin API and reload change and read
//! them through.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::budget::RetryBudget;
use super::{RequestCtx, Routing};
use crate::config::{Config, HeadersConfig, LimitsConfig, TimeoutsConfig};
use crate::connection::{ClientLimits, ClientTimeouts, HeadLimits};

/// The proxy's settings that a reload replaces.
pub struct ProxySettings {
    /// Further tries a request may make after its first.
    pub(super) attempts: usize,
    pub(super) timeouts: TimeoutsConfig,
    pub(super) limits: LimitsConfig,
    pub(super) headers: HeadersConfig,
    /// `timeouts.client_idle` in the whole seconds Pingora takes.
    pub(super) client_idle_secs: u64,
}

/// A handle to change a running proxy's settings.
#[derive(Clone)]
pub struct ProxyControl {
    pub(super) settings: Arc<ArcSwap<ProxySettings>>,
    pub(super) routing: Arc<ArcSwap<Routing>>,
    pub(super) budget: &'static RetryBudget,
}

impl ProxyControl {
    /// Applies a reloaded config's retry, timeouts and limits; requests
    /// that start from now on use them. `limits.max_connections` and
    /// `timeouts.client_header` need a restart.
    pub fn reconfigure(&self, config: &Config) {
        self.settings.store(Arc::new(ProxySettings::of(config)));
        self.budget.set_config(&config.retry);
    }

    /// The pools and routes requests start with now, swapped whole at
    /// reload: the admin API reads the current pools through it.
    pub fn routing(&self) -> Arc<ArcSwap<Routing>> {
        Arc::clone(&self.routing)
    }

    /// Serves requests that start from now on with `routing`; requests in
    /// flight finish with the routing they started with.
    pub fn set_routing(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }
}

impl ProxySettings {
    pub(super) fn of(config: &Config) -> Self {
        ProxySettings {
            attempts: config.retry.attempts,
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            headers: config.headers,
            client_idle_secs: config.timeouts.client_idle.as_secs().max(1),
        }
    }

    /// How long each read from the backend may wait: `upstream_response`, or
    /// less when the `request` limit has less time left.
    pub(super) fn upstream_read_timeout(&self, ctx: &RequestCtx) -> Duration {
        let response = ctx.grpc_timeout.unwrap_or(self.timeouts.upstream_response);
        if self.timeouts.request.is_zero() {
            return response;
        }
        let left = self.timeouts.request.saturating_sub(ctx.received.elapsed());
        response.min(left.max(Duration::from_millis(1)))
    }
}

impl ClientLimits for ProxyControl {
    /// `timeouts.client_idle` as it is now: how long a client connection
    /// may wait for its next request.
    fn client_idle(&self) -> Duration {
        Duration::from_secs(self.settings.load().client_idle_secs)
    }

    /// The limits a new client connection gets: `header` (which needs a
    /// restart to change) and the reloadable ones as they are now.
    fn client_timeouts(&self, header: Duration) -> ClientTimeouts {
        let t = &self.settings.load().timeouts;
        ClientTimeouts {
            header,
            body: t.client_body,
            tunnel_idle: t.tunnel_idle,
            upgrade_response: t.upstream_response,
        }
    }

    /// What a request head is checked against before Pingora reads it, as
    /// the limits are now.
    fn head_limits(&self) -> HeadLimits {
        let l = &self.settings.load().limits;
        HeadLimits::new(l.max_request_headers, l.max_header_bytes)
    }
}
