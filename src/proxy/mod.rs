//! The one `ProxyHttp` implementation: thin hooks that ask the [`Pool`] for a
//! backend, fail over and retry within the [`RetryBudget`], enforce the
//! request limits, add the forwarding headers and log each request.
//!
//! Hot-path cost is a stated decision here: no locks, and no allocation or
//! formatting beyond the `X-Forwarded-For` value and the boxed peer Pingora
//! asks for (with its SNI string when backends use TLS). Log lines are only formatted when their level is enabled.
//!
//! The hooks, in the order Pingora calls them for a request, and where
//! their work lives:
//! ```text
//! request_filter ─────────── limits (414/431/413, bad targets, chunk framing)
//! request_body_filter ────── limits (413 while a body streams)
//! upstream_peer ──────────── the pool's choice; transport (TLS, ALPN); peer timeouts
//! connected_to_upstream ──── metrics
//! upstream_request_filter ── hop_by_hop, forwarded, request_id
//! upstream_response_filter ─ passive health
//! response_filter ────────── request_id
//! fail_to_connect / error_while_proxy ── retry (and the budget)
//! fail_to_proxy ──────────── error_page
//! logging ────────────────── metrics, access
//! ```

mod access;
pub mod budget;
mod ctx;
mod edge;
mod error_page;
mod forwarded;
mod gate;
mod grpc;
pub mod hop_by_hop;
mod limits;
mod pools;
pub mod request_id;
mod retry;
mod settings;
mod tunnel_connect;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::{ErrorSource, ErrorType};

use crate::config::Config;
use crate::connection::{self, ClientFault};
use crate::policy::trace::TraceParent;
use crate::pool::Selection;
use crate::telemetry::metrics::metrics;
use budget::RetryBudget;
pub use ctx::{InFlight, RequestCtx};
pub use gate::ListenerGate;
use http::HeaderValue;
pub use pools::{PoolHandle, Routing};
pub use settings::ProxyControl;
use settings::ProxySettings;

/// lb's proxy logic, shared by all worker threads.
pub struct Proxy {
    /// The pools and routes, replaced whole at reload.
    routing: Arc<ArcSwap<Routing>>,
    budget: &'static RetryBudget,
    settings: Arc<ArcSwap<ProxySettings>>,
}

impl Proxy {
    /// A proxy that spreads requests over `pools` (one per upstream of
    /// `config`, in its order) as `config` says.
    pub fn new(routing: Routing, config: &Config) -> Self {
        Proxy {
            routing: Arc::new(ArcSwap::from_pointee(routing)),
            budget: RetryBudget::leak(&config.retry),
            settings: Arc::new(ArcSwap::from_pointee(ProxySettings::of(config))),
        }
    }

    /// A handle to reconfigure this proxy once it runs.
    pub fn control(&self) -> ProxyControl {
        ProxyControl {
            settings: Arc::clone(&self.settings),
            routing: Arc::clone(&self.routing),
            budget: self.budget,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a response-compression
    /// module that is disabled yet still costs every request a Vec, a Box
    /// and three boxed async calls. lb compresses nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.budget.admit(), self.routing.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if log::log_enabled!(log::Level::Debug) {
            access::log_received_request(session);
        }
        let settings = self.settings.load();
        if let Some(status) = limits::malformed(session.req_header())
            .or_else(|| limits::limit_exceeded(&settings.limits, session.req_header()))
        {
            error_page::respond_error(session, ctx, status).await?;
            return Ok(true);
        }
        edge::find_client(session, ctx);
        if ctx.routing.has_routes() && !pools::route(session, ctx) {
            error_page::respond_error(session, ctx, 404).await?;
            return Ok(true);
        }
        if let Some(status) = limits::check_framing(session, ctx) {
            // The bytes after a bad frame cannot be trusted to start a request.
            session.set_keepalive(None);
            error_page::respond_error(session, ctx, status).await?;
            return Ok(true);
        }
        if settings.headers.request_id {
            ctx.request_id = Some(request_id::of(session.req_header(), ctx.trusted_peer));
        }
        if settings.headers.trace_context {
            ctx.trace = Some(Box::new(TraceParent::of(session.req_header())));
        }
        // Boxed, and only when there is something to do: the walk's future
        // would otherwise grow every request's request_filter future.
        if edge::applies(ctx) && Box::pin(edge::admit(session, ctx)).await? {
            return Ok(true);
        }
        if ctx.upgrade {
            // A tunnel's reads wait as long as it is open; its limit is
            // `timeouts.tunnel_idle`, in the client stream.
            session.set_read_timeout(None);
        }
        if session.is_http2() {
            ctx.grpc_timeout = grpc::timeout(&session.req_header().headers);
        }
        // Only where keep-alive is still on: Pingora turns it off for a client
        // that asked to close, and for every request once shutdown has begun.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(settings.client_idle_secs));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if end_of_stream && ctx.body_pending {
            ctx.body_pending = false;
            connection::body_received(session);
        }
        let limit = self.settings.load().limits.max_body_bytes;
        if limit > 0 {
            ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
            if ctx.body_bytes > limit {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over limits.max_body_bytes",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.pool_reached = true;
        let Some(pool) = ctx.pool() else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no pool to serve from");
        };
        let key = pool.hash_input(session, ctx.client);
        let sticky = pool.sticky_choice(session);
        let state = match pool.pool().select(&ctx.tried, &key, sticky) {
            Selection::Backend(_, state) => state,
            Selection::NoneHealthy => {
                return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy backend")
            }
            Selection::Exhausted => {
                return Error::e_explain(ErrorType::HTTPStatus(502), "no backend left to try")
            }
        };
        let settings = self.settings.load();
        let mut peer = pool.transport().peer(state.addr, &state.host);
        let t = &settings.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        if ctx.upgrade {
            // No per-read limit: it would cut an open tunnel. The client stream
            // limits the wait for the answer (`upstream_response`) and the
            // tunnel's idle time (`tunnel_idle`).
            peer.options.read_timeout = None;
            peer.options.write_timeout = Some(t.tunnel_idle);
            // So that Pingora does not close the tunnel right after the 101
            // (cloudflare/pingora#946): see `tunnel_connect`.
            peer.options.custom_l4 = Some(Arc::new(tunnel_connect::TunnelConnect {
                timeout: t.connect,
            }));
            peer.group_key ^= tunnel_connect::GROUP_KEY_SALT;
        } else {
            peer.options.read_timeout = Some(settings.upstream_read_timeout(ctx));
            peer.options.write_timeout = Some(t.upstream_response);
            if let Some(connect) = pool.pool().tracked_connect() {
                peer.options.custom_l4 = Some(connect);
                // Only connections lb tracks: a pooled one made before a
                // reload turned `close` on could not be shut down.
                peer.group_key ^= crate::pool::cutoff::GROUP_KEY_SALT;
            }
        }
        peer.options.idle_timeout = Some(t.upstream_idle);
        // lb removes the hop-by-hop fields itself, in a pass it can skip
        // (`hop_by_hop`): the standard policy costs 3.5k instructions a
        // request whether there are any or not.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        ctx.set_sticky =
            (pool.sticky().is_some() && sticky != Some(state.sticky_id)).then_some(state.sticky_id);
        ctx.backend = Some(InFlight::new(state));
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the backend, so any request may go to another one.
        // Such a retry adds no load to any backend: neither the budget nor
        // `retry.attempts` applies (0 still turns retries off), and it goes
        // on to every backend not yet tried, as nginx's proxy_next_upstream
        // does: several backends that went away at once (a scale-down) cost
        // no request. Selection ends it once all were tried (502), and
        // Pingora after `max_retries` (16).
        let retry = self.settings.load().attempts > 0;
        log::warn!(
            "cannot connect to backend {}: {}{}",
            peer._address,
            e.root_cause(),
            if retry {
                "; trying another"
            } else {
                "; no attempt left"
            }
        );
        if let (Some(attempt), Some(pool)) = (&ctx.backend, ctx.pool()) {
            pool.pool().record_failure(&attempt.0, &e.etype().as_str());
        }
        if retry {
            ctx.retry_elsewhere();
            metrics().retry("connect_failure");
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {}", peer._address));
        let attempts = self.settings.load().attempts;
        if retry::refused_unprocessed(&e) {
            let retry = retry::may_resend_refused(session, ctx, attempts);
            if retry {
                ctx.retry_anywhere();
                metrics().retry("refused_unprocessed");
                log::debug!(
                    "backend {} refused a request unprocessed ({}); sending it again",
                    peer._address,
                    e.root_cause()
                );
            }
            e.set_retry(retry);
            return e;
        }
        ctx.client_fault = error_page::client_fault(session, &e);
        let from_backend = ctx.client_fault.is_none()
            && (e.esource() == &ErrorSource::Upstream
                || ClientFault::of(&e) == Some(ClientFault::UpgradeResponseTimeout));
        if let (Some(attempt), Some(pool), true) = (&ctx.backend, ctx.pool(), from_backend) {
            pool.pool().record_failure(&attempt.0, &e.etype().as_str());
        }
        let retry = from_backend && retry::may_retry(session, &e, ctx, client_reused, attempts);
        if retry {
            ctx.retry_elsewhere();
            metrics().retry(if client_reused {
                "dead_keepalive_connection"
            } else {
                "reset_before_response"
            });
            log::warn!(
                "request to backend {} failed: {}; retrying on another",
                peer._address,
                e.root_cause()
            );
        }
        e.set_retry(retry);
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // A client that went away mid-request is routine (a closed browser
        // tab, a load generator stopping, an HTTP/2 stream reset), not an
        // error of lb's; the access log records it with status 499. So are the client's own faults (a
        // body that stopped, bad framing, a tunnel left idle): the access
        // log records their status.
        error_page::client_went_away(error) || ctx.client_fault.is_some()
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // `fail_to_connect` already logged the failed attempt in lb's words.
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_http11 = session.req_header().version == http::Version::HTTP_11;
        hop_by_hop::remove(upstream_request, client_http11)?;
        if let Some(uri) = pools::stripped_uri(ctx, &upstream_request.uri) {
            upstream_request.set_uri(uri);
        }
        let settings = self.settings.load();
        // `TE: trailers` is the one TE HTTP/2 allows, and gRPC servers
        // refuse a call without it (grpcio resets the stream). It goes on to
        // HTTP/2 backends only: an HTTP/1.1 one would promise trailers that
        // lb's HTTP/1.1 client side does not pass on.
        if ctx
            .pool()
            .is_some_and(|p| p.transport().protocol().is_http2())
            && hop_by_hop::asks_for_trailers(session.req_header())
        {
            upstream_request.insert_header("TE", HeaderValue::from_static("trailers"))?;
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(request_id::HEADER, id.clone())?;
        }
        if let Some(trace) = &ctx.trace {
            trace.0.apply_to(upstream_request, trace.1);
        }
        if settings.headers.forwarded {
            forwarded::add_headers(session, ctx, &settings.headers, upstream_request)?;
        }
        edge::on_upstream_request(session, ctx, upstream_request);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|started| started.elapsed());
        let Some(handle) = ctx.pool() else {
            return Ok(());
        };
        if let (Some(elapsed), Some(InFlight(backend))) = (ctx.upstream_elapsed, &ctx.backend) {
            handle.observe_latency(backend, elapsed);
        }
        if let (Some(id), Some(sticky)) = (ctx.set_sticky, handle.sticky()) {
            upstream_response
                .append_header(http::header::SET_COOKIE, pools::sticky_cookie(sticky, id))?;
        }
        if let Some(InFlight(backend)) = &ctx.backend {
            backend.requests.fetch_add(1, Relaxed);
            let status = upstream_response.status.as_u16();
            let pool = handle.pool();
            if status >= 500 && pool.outliers().counts_5xx() {
                pool.record_failure(backend, &format_args!("status {status}"));
            } else {
                pool.record_success(backend);
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match ctx
            .client_fault
            .or_else(|| error_page::client_fault(session, e))
        {
            Some(code) => code,
            None => error_page::error_status(e),
        };
        if code > 0 {
            if let Err(write_error) = error_page::respond_error(session, ctx, code).await {
                log::debug!("could not send the {code} error page to the client: {write_error}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            response.insert_header(request_id::HEADER, id.clone())?;
        }
        edge::on_response(ctx, response);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        edge::on_response_body(ctx, body, end_of_stream)?;
        Ok(None)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        metrics().upstream_connection(reused);
        ctx.connect_elapsed = ctx.upstream_started.map(|started| started.elapsed());
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let (status, logged_status) = access::final_status(session, ctx, e);
        let total = ctx.received.elapsed();
        let upstream = ctx.upstream_elapsed.map(|d| d.as_secs_f64());
        let reached = ctx.pool().filter(|_| ctx.pool_reached);
        match (&ctx.backend, reached) {
            (Some(attempt), _) => attempt
                .0
                .metrics
                .observe(status, total.as_secs_f64(), upstream),
            (None, Some(pool)) => {
                pool.pool()
                    .unanswered()
                    .observe(status, total.as_secs_f64(), upstream)
            }
            (None, None) => metrics()
                .unrouted()
                .observe(status, total.as_secs_f64(), upstream),
        }
        metrics()
            .protocols
            .request(access::protocol(session.req_header().version));
        access::write_line(session, ctx, logged_status, total);
    }
}
