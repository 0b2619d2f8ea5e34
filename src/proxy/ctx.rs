//! What lb knows of one request while it is proxied: Pingora's `CTX`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::budget::RequestTicket;
use crate::pool::members::BackendState;

/// A request in flight to a backend: counted in the backend's `in_flight`
/// until dropped.
pub struct InFlight(pub(super) Arc<BackendState>);

impl InFlight {
    pub(super) fn new(state: Arc<BackendState>) -> Self {
        state.in_flight.fetch_add(1, Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What lb knows of one request while it is proxied.
pub struct RequestCtx {
    /// This request's place in the retry budget.
    pub(super) ticket: RequestTicket,
    /// The pools and routes as they were when the request started.
    pub(super) routing: std::sync::Arc<super::Routing>,
    /// Bytes of request body seen so far (counted only with a body limit).
    pub(super) body_bytes: u64,
    /// When the request's headers had been read.
    pub(super) received: Instant,
    /// The backend serving this attempt, counted in its `in_flight`.
    pub(super) backend: Option<InFlight>,
    /// Backends that failed this request; never chosen again for it. Empty
    /// (and unallocated) in the common case.
    pub(super) tried: Vec<std::net::SocketAddr>,
    /// When the current attempt picked its backend.
    pub(super) upstream_started: Option<Instant>,
    /// Time from picking the backend to its response headers.
    pub(super) upstream_elapsed: Option<Duration>,
    /// Time from picking the backend to a connection to it.
    pub(super) connect_elapsed: Option<Duration>,
    /// The request's `X-Request-Id`: the client's, or one lb made.
    pub(super) request_id: Option<HeaderValue>,
    /// Tries on another backend after a failed one.
    pub(super) retries: usize,
    /// The request asks to upgrade the connection (WebSocket).
    pub(super) upgrade: bool,
    /// A body was announced and has not been received whole yet.
    pub(super) body_pending: bool,
    /// The pool the request's route chose, when routes chose one; else
    /// [`RequestCtx::pool`] is the routing's first, with no reference
    /// counted per request.
    pub(super) route_pool: Option<Arc<super::PoolHandle>>,
    /// The sticky backend id to give the client in a cookie, when its
    /// cookie named none or another backend than the one that served.
    pub(super) set_sticky: Option<u64>,
    /// The route it matched, by id, when there are routes.
    pub(super) route: Option<usize>,
    /// A gRPC call's own deadline (`grpc-timeout`), which replaces
    /// `timeouts.upstream_response`.
    pub(super) grpc_timeout: Option<Duration>,
    /// The status to answer a failed request with when the failure was the
    /// client's, not the backend's (408 for a body that never came).
    pub(super) client_fault: Option<u16>,
    /// The request got as far as its pool's selection: lb's own answer
    /// after that (503 none healthy, 502 none left) counts on the pool.
    pub(super) pool_reached: bool,
    /// The status lb answered with itself, for the access log and metrics:
    /// a gRPC call gets it as a `grpc-status` in a 200.
    pub(super) own_answer: Option<u16>,
    /// The real client address (`policy::client`), once the request's
    /// head is in.
    pub(super) client: Option<std::net::IpAddr>,
    /// The connection's peer is one of the listener's trusted proxies.
    pub(super) trusted_peer: bool,
    /// What the policies of the request's listener and route need from
    /// one hook to the next; None when it has none (no allocation).
    pub(super) edge: Option<Box<super::edge::EdgeState>>,
    /// Its W3C `traceparent`, and whether lb started it
    /// (`headers.trace_context`).
    /// Boxed: most configs have none, and the context is moved whole.
    pub(super) trace: Option<Box<(crate::policy::trace::TraceParent, bool)>>,
}

impl RequestCtx {
    /// A request's context, before its head is read.
    pub(super) fn new(ticket: RequestTicket, routing: Arc<super::Routing>) -> Self {
        RequestCtx {
            ticket,
            routing,
            body_bytes: 0,
            received: Instant::now(),
            backend: None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_elapsed: None,
            connect_elapsed: None,
            request_id: None,
            retries: 0,
            upgrade: false,
            body_pending: false,
            grpc_timeout: None,
            route_pool: None,
            route: None,
            set_sticky: None,
            client_fault: None,
            pool_reached: false,
            own_answer: None,
            client: None,
            trusted_peer: false,
            edge: None,
            trace: None,
        }
    }

    /// The pool serving this request: its route's, else the routing's
    /// first; None when the config has no pool.
    pub(super) fn pool(&self) -> Option<&super::PoolHandle> {
        match &self.route_pool {
            Some(pool) => Some(pool),
            None => self.routing.unrouted().map(|pool| &**pool),
        }
    }

    /// The current attempt was refused before the backend processed it (an
    /// HTTP/2 connection closing): the request goes out again, to any
    /// backend, the same one included.
    pub(super) fn retry_anywhere(&mut self) {
        self.backend = None;
        self.retries += 1;
    }

    /// The current attempt failed and the request goes to another backend:
    /// the failed one is never chosen again for it.
    pub(super) fn retry_elsewhere(&mut self) {
        if let Some(attempt) = self.backend.take() {
            self.tried.push(attempt.0.addr);
        }
        self.retries += 1;
    }
}
