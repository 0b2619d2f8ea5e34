//! What serves a request: the pools, the routes to them and how to reach
//! each pool's backends, made together from one config and swapped whole
//! at reload. Each request holds the snapshot it started with, so a reload
//! in the middle of it never mixes an old route with a new pool list.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::config::Config;
use crate::pool::transport::PeerTemplate;
use crate::pool::Pool;
use crate::routing::{AmbiguousRoutes, Route, RouteTable};
use crate::telemetry::metrics::metrics;

/// The pools and routes of one config.
pub struct Routing {
    /// Every upstream's pool, in the order of `config.upstreams`.
    pools: Vec<Arc<Pool>>,
    /// Which pool serves which request; empty: the first pool serves all.
    routes: RouteTable,
    /// How to connect to each pool's backends, in the same order.
    transports: Vec<PeerTemplate>,
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

    /// How to reach the backends of upstream `index`.
    pub fn transport(&self, index: usize) -> &PeerTemplate {
        &self.transports[index]
    }
}
