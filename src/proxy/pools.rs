//! What serves a request: the pools, the routes to them and how to reach
//! each pool's backends, made together from one config and swapped whole
//! at reload. Each request holds the snapshot it started with, so a reload
//! in the middle of it never mixes an old route with a new pool list.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::RequestCtx;
use crate::config::{Config, HashKey, Sticky, DEFAULT_UPSTREAM};
use crate::pool::members::BackendState;
use crate::pool::transport::PeerTemplate;
use crate::pool::Pool;
use crate::routing::{AmbiguousRoutes, Route, RouteTable};
use crate::telemetry::metrics::metrics;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// The pools and routes of one config.
pub struct Routing {
    /// Every upstream's pool, in the order of `config.upstreams`.
    pools: Vec<Arc<Pool>>,
    /// Which pool serves which request; empty: the first pool serves all.
    routes: RouteTable,
    /// How to connect to each pool's backends, in the same order.
    transports: Vec<PeerTemplate>,
    /// What each `consistent_hash` pool hashes, in the same order.
    hash_keys: Vec<Option<HashKey>>,
    /// Each pool's sticky cookie, in the same order.
    sticky: Vec<Option<Sticky>>,
    /// Each `peak_ewma` pool's decay time, in the same order.
    ewma_decay: Vec<Option<Duration>>,
    /// `lb_route_requests_total` of each route, by id.
    route_counters: Vec<IntCounter>,
    /// `lb_route_requests_total{route="none"}`.
    unmatched: IntCounter,
}

impl Routing {
    /// The routing of `config` over `pools` (one per `config.upstreams`,
    /// in its order).
    pub fn new(pools: Vec<Arc<Pool>>, config: &Config) -> Result<Routing, Vec<AmbiguousRoutes>> {
        let routes = RouteTable::new(&config.routes)?;
        let route_counters = routes
            .routes()
            .iter()
            .map(|r| metrics().protocols.route_counter(&r.name))
            .collect();
        Ok(Routing {
            transports: config
                .upstreams
                .iter()
                .map(|u| PeerTemplate::new(&u.backend_transport))
                .collect(),
            hash_keys: config
                .upstreams
                .iter()
                .map(|u| u.balancing.hash_key.clone())
                .collect(),
            sticky: config
                .upstreams
                .iter()
                .map(|u| u.balancing.sticky.clone())
                .collect(),
            ewma_decay: config
                .upstreams
                .iter()
                .map(|u| u.balancing.ewma_decay)
                .collect(),
            pools,
            routes,
            route_counters,
            unmatched: metrics().protocols.route_counter("none"),
        })
    }

    /// Whether requests are routed (else the first pool serves all).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The route for `host` and `path`, counted; None (counted too) when
    /// none matches.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let route = self.routes.find(host, path);
        match route {
            Some(route) => self.route_counters[route.id].inc(),
            None => self.unmatched.inc(),
        }
        route
    }

    /// The route with this id.
    pub fn route(&self, id: usize) -> Option<&Route> {
        self.routes.routes().get(id)
    }

    /// The pool of upstream `index`.
    pub fn pool(&self, index: usize) -> &Arc<Pool> {
        &self.pools[index]
    }

    /// Every pool, in the order of the config's upstreams (`default`, the
    /// top-level backends, first when there is one).
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The pool named `name`, if there is one.
    pub fn pool_named(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name() == name)
    }

    /// The pool the admin API's unnamed paths (`/api/backends`) act on:
    /// the one named `default`, else the first.
    pub fn default_pool(&self) -> Option<&Arc<Pool>> {
        self.pool_named(DEFAULT_UPSTREAM)
            .or_else(|| self.pools.first())
    }

    /// The bytes upstream `index` hashes for this request: empty unless
    /// it balances by consistent hashing. Borrowed from the request, except
    /// the client's address, which is hashed as its text.
    pub fn hash_input<'s>(&self, index: usize, session: &'s Session) -> Cow<'s, [u8]> {
        let Some(key) = self.hash_keys.get(index).and_then(Option::as_ref) else {
            return Cow::Borrowed(&[]);
        };
        let request = session.req_header();
        match key {
            HashKey::ClientIp => session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map_or(Cow::Borrowed(&[][..]), |a| {
                    Cow::Owned(a.ip().to_string().into_bytes())
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

    /// Records a response time of `backend` in upstream `index`, if that
    /// pool balances by peak EWMA.
    pub fn observe_latency(&self, index: usize, backend: &BackendState, elapsed: Duration) {
        if let Some(decay) = self.ewma_decay.get(index).copied().flatten() {
            backend.latency.observe(elapsed, decay);
        }
    }

    /// Upstream `index`'s sticky cookie settings, if it has them.
    pub fn sticky(&self, index: usize) -> Option<&Sticky> {
        self.sticky.get(index).and_then(Option::as_ref)
    }

    /// The backend id the request's sticky cookie for upstream `index`
    /// names, if it has one that parses.
    pub fn sticky_choice(&self, index: usize, session: &Session) -> Option<u64> {
        let sticky = self.sticky(index)?;
        let value = cookie(session.req_header(), &sticky.cookie)?;
        u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
    }

    /// How to reach the backends of upstream `index`.
    pub fn transport(&self, index: usize) -> &PeerTemplate {
        &self.transports[index]
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
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
    ctx.upstream = route.upstream;
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
