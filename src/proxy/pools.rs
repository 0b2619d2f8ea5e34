//! What serves a request: the pools, the routes to them and how to reach
//! each pool's backends, made together from one config and swapped whole
//! at reload. Each request holds the snapshot it started with, so a reload
//! in the middle of it never mixes an old route with a new pool list.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::RequestCtx;
use crate::config::{Config, HashKey, PoolConfig, Sticky, DEFAULT_POOL};
use crate::policy::rewrite::{Redirect, Rewrite};
use crate::policy::{cookie, Chain, Policies};
use crate::pool::members::BackendState;
use crate::pool::transport::PeerTemplate;
use crate::pool::Pool;
use crate::routing::{Route, RouteError, RouteTable};
use crate::telemetry::metrics::metrics;
use pingora::proxy::Session;

/// A pool as requests use it under one config: the pool, and how its
/// backends are reached and balanced over. Routes resolve to it.
pub struct PoolHandle {
    /// The backends, their health and their selection; a reload that
    /// keeps the pool keeps this.
    pool: Arc<Pool>,
    /// How to connect to its backends.
    transport: PeerTemplate,
    /// What a `consistent_hash` pool hashes.
    hash_key: Option<HashKey>,
    /// Its sticky cookie.
    sticky: Option<Sticky>,
    /// A `peak_ewma` pool's decay time.
    ewma_decay: Option<Duration>,
}

/// Where a route sends its requests, what it does to them first, and its
/// request counter.
pub struct RouteTarget {
    /// The pool that serves the route; None for a redirect.
    pub handle: Option<Arc<PoolHandle>>,
    /// Its policies, after the listener's.
    pub policies: Option<Chain>,
    /// Its path rewrite.
    pub rewrite: Option<Rewrite>,
    /// Its redirect: lb answers, no pool.
    pub redirect: Option<Redirect>,
    /// `lb_route_requests_total` of the route.
    requests: IntCounter,
}

/// What a listener believes of its clients and applies to their requests.
pub struct ListenerPolicies {
    /// The listener's address as configured (`0.0.0.0:8000`).
    pub addr: std::net::SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted: Vec<ipnet::IpNet>,
    /// Its policies, before routing.
    pub policies: Option<Chain>,
}

/// The pools and routes of one config.
pub struct Routing {
    /// Every pool, in the order of `config.pools`.
    pools: Vec<Arc<PoolHandle>>,
    /// Which pool serves which request; empty: the first pool serves all.
    routes: RouteTable<RouteTarget>,
    /// `lb_route_requests_total{route="none"}`.
    unmatched: IntCounter,
    /// The listeners that have trusted proxies or policies.
    listeners: Vec<ListenerPolicies>,
    /// Every policy, for the counts.
    policies: Policies,
    /// The hash of the config this routing was built from.
    config_hash: Box<str>,
}

impl Routing {
    /// The routing of `config` over `pools`, one for each of
    /// `config.pools`, found by name.
    pub fn new(
        config: &Config,
        pools: &[Arc<Pool>],
        policies: Policies,
    ) -> Result<Routing, Vec<RouteError>> {
        let by_name: HashMap<&str, &Arc<Pool>> = pools.iter().map(|p| (p.name(), p)).collect();
        let handles: Vec<Arc<PoolHandle>> = config
            .pools
            .iter()
            .filter_map(|c| {
                let pool = by_name.get(c.name.as_str())?;
                Some(Arc::new(PoolHandle::new(Arc::clone(pool), c)))
            })
            .collect();
        let handle_named: HashMap<&str, &Arc<PoolHandle>> =
            handles.iter().map(|h| (h.pool.name(), h)).collect();
        let routes = RouteTable::new(&config.routes, |route| {
            let handle = match &route.pool {
                Some(name) => Some(Arc::clone(handle_named.get(name.as_str())?)),
                None => None,
            };
            Some(RouteTarget {
                handle,
                policies: policies.chain(&route.policies),
                rewrite: route.rewrite.as_ref().and_then(Rewrite::new),
                redirect: route
                    .redirect
                    .as_ref()
                    .map(|r| Redirect::new(r, &route.name)),
                requests: metrics().protocols.route_counter(&route.name),
            })
        })?;
        let listeners = config
            .listeners
            .iter()
            .filter(|l| !l.edge.trusted_proxies.is_empty() || !l.edge.policies.is_empty())
            .map(|l| ListenerPolicies {
                addr: l.addr,
                trusted: l.edge.trusted_proxies.clone(),
                policies: policies.chain(&l.edge.policies),
            })
            .collect();
        Ok(Routing {
            pools: handles,
            routes,
            unmatched: metrics().protocols.route_counter("none"),
            listeners,
            policies,
            config_hash: config.hash.as_str().into(),
        })
    }

    /// The policies of the listener a connection reached on `local`
    /// (its local address): by address, or by port for a listener on
    /// an unspecified address. None when that listener has none.
    pub fn listener(&self, local: std::net::SocketAddr) -> Option<&ListenerPolicies> {
        let local_ip = crate::policy::client::canonical(local.ip());
        self.listeners.iter().find(|l| {
            l.addr.port() == local.port()
                && (l.addr.ip().is_unspecified() || l.addr.ip() == local_ip)
        })
    }

    /// The policies of the listener configured on `addr`.
    pub fn listener_at(&self, addr: std::net::SocketAddr) -> Option<&ListenerPolicies> {
        self.listeners.iter().find(|l| l.addr == addr)
    }

    /// Whether some listener has trusted proxies or policies.
    pub fn has_listener_policies(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// Every policy.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The hash of the config running (`lb -t`, `lb_config_info`).
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// Whether requests are routed (else the first pool serves all).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The route for `host` and `path`, counted; None (counted too) when
    /// none matches.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route<RouteTarget>> {
        let route = self.routes.find(host, path);
        match route {
            Some(route) => route.pool.requests.inc(),
            None => self.unmatched.inc(),
        }
        route
    }

    /// The route with this id.
    pub fn route(&self, id: usize) -> Option<&Route<RouteTarget>> {
        self.routes.routes().get(id)
    }

    /// Every pool, in the order of the config's pools (`default`, the
    /// top-level backends, first when there is one).
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.iter().map(|h| &h.pool)
    }

    /// The pool named `name`, if there is one.
    pub fn pool_named(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools().find(|p| p.name() == name)
    }

    /// The pool the admin API's unnamed paths (`/api/backends`) act on:
    /// the one named `default`, else the first.
    pub fn default_pool(&self) -> Option<&Arc<Pool>> {
        self.pool_named(DEFAULT_POOL)
            .or_else(|| self.pools().next())
    }

    /// The pool that serves a request no route chose: the first.
    pub fn unrouted(&self) -> Option<&Arc<PoolHandle>> {
        self.pools.first()
    }
}

impl PoolHandle {
    fn new(pool: Arc<Pool>, config: &PoolConfig) -> Self {
        PoolHandle {
            pool,
            transport: PeerTemplate::new(&config.backend_transport),
            hash_key: config.balancing.hash_key.clone(),
            sticky: config.balancing.sticky.clone(),
            ewma_decay: config.balancing.ewma_decay,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The bytes this pool hashes for the request: empty unless it
    /// balances by consistent hashing. Borrowed from the request, except
    /// the client's address, which is hashed as its text.
    pub fn hash_input<'s>(
        &self,
        session: &'s Session,
        client: Option<std::net::IpAddr>,
    ) -> Cow<'s, [u8]> {
        let Some(key) = &self.hash_key else {
            return Cow::Borrowed(&[]);
        };
        let request = session.req_header();
        match key {
            HashKey::ClientIp => client.map_or(Cow::Borrowed(&[][..]), |ip| {
                Cow::Owned(ip.to_string().into_bytes())
            }),
            HashKey::Path => Cow::Borrowed(request.uri.path().as_bytes()),
            HashKey::Uri => Cow::Borrowed(
                request
                    .uri
                    .path_and_query()
                    .map_or(&[][..], |p| p.as_str().as_bytes()),
            ),
            HashKey::Header(name) => {
                Cow::Borrowed(request.headers.get(name).map_or(&[][..], |v| v.as_bytes()))
            }
            HashKey::Cookie(name) => Cow::Borrowed(cookie(request, name).unwrap_or_default()),
        }
    }

    /// Records a response time of `backend`, if the pool balances by peak
    /// EWMA.
    pub fn observe_latency(&self, backend: &BackendState, elapsed: Duration) {
        if let Some(decay) = self.ewma_decay {
            backend.latency.observe(elapsed, decay);
        }
    }

    /// The pool's sticky cookie settings, if it has them.
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// The backend id the request's sticky cookie names, if it has one
    /// that parses.
    pub fn sticky_choice(&self, session: &Session) -> Option<u64> {
        let sticky = self.sticky()?;
        let value = cookie(session.req_header(), &sticky.cookie)?;
        u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
    }

    /// How to reach the pool's backends.
    pub fn transport(&self) -> &PeerTemplate {
        &self.transport
    }
}

/// Finds the request's route and pool; false when none matches.
pub(super) fn route(session: &Session, ctx: &mut RequestCtx) -> bool {
    let request = session.req_header();
    let host = request
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.host());
    let Some(route) = ctx.routing.find(host, request.uri.path()) else {
        return false;
    };
    ctx.route_pool = route.pool.handle.clone();
    ctx.route = Some(route.id);
    true
}

/// The path and query to send upstream when the request's route strips
/// its prefix.
pub(super) fn stripped_uri(ctx: &RequestCtx, uri: &http::Uri) -> Option<http::Uri> {
    let route = ctx.routing.route(ctx.route?)?;
    let path = route.upstream_path(uri.path())?;
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    target.parse().ok()
}

/// The `Set-Cookie` value that sends a client back to backend `id`.
pub(super) fn sticky_cookie(sticky: &Sticky, id: u64) -> String {
    match sticky.max_age {
        Some(age) => format!(
            "{}={id:016x}; Path=/; Max-Age={}; HttpOnly",
            sticky.cookie,
            age.as_secs()
        ),
        None => format!("{}={id:016x}; Path=/; HttpOnly", sticky.cookie),
    }
}
