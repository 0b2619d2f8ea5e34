//! The one `ProxyHttp` implementation: thin hooks that ask the [`Pool`] for a
//! backend, fail over and retry within the [`RetryBudget`], enforce the
//! request limits, add the forwarding headers and log each request.
//!
//! Hot-path cost is a stated decision here: no locks, and no allocation or
//! formatting beyond the `X-Forwarded-For` value and the boxed peer Pingora
//! asks for. Log lines are only formatted when their level is enabled.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::{ErrorSource, ErrorType};

use crate::access_log;
use crate::budget::{RequestTicket, RetryBudget};
use crate::config::{Config, HeadersConfig, LimitsConfig, TimeoutsConfig};
use crate::connection::{ClientStream, ClientTimeouts, FramingCheck, RequestFraming, StreamFault};
use crate::hop_by_hop;
use crate::metrics::metrics;
use crate::pool::members::BackendState;
use crate::pool::{Pool, Selection};
use crate::request_id;
use http::HeaderValue;

/// lb's proxy logic, shared by all worker threads.
pub struct Proxy {
    pool: Arc<Pool>,
    budget: &'static RetryBudget,
    settings: Arc<ArcSwap<ProxySettings>>,
}

/// The proxy's settings that a reload replaces.
pub struct ProxySettings {
    /// Further tries a request may make after its first.
    attempts: usize,
    timeouts: TimeoutsConfig,
    limits: LimitsConfig,
    headers: HeadersConfig,
    /// `timeouts.client_idle` in the whole seconds Pingora takes.
    client_idle_secs: u64,
}

/// A handle to change a running proxy's settings.
#[derive(Clone)]
pub struct ProxyControl {
    settings: Arc<ArcSwap<ProxySettings>>,
    budget: &'static RetryBudget,
}

impl ProxyControl {
    /// `timeouts.client_idle` as it is now: how long a client connection
    /// may wait for its next request.
    pub fn client_idle(&self) -> Duration {
        Duration::from_secs(self.settings.load().client_idle_secs)
    }

    /// The limits a new client connection gets: `header` (which needs a
    /// restart to change) and the reloadable ones as they are now.
    pub fn client_timeouts(&self, header: Duration) -> ClientTimeouts {
        let t = &self.settings.load().timeouts;
        ClientTimeouts {
            header,
            body: t.client_body,
            tunnel_idle: t.tunnel_idle,
            upgrade_response: t.upstream_response,
        }
    }

    /// Applies a reloaded config's retry, timeouts and limits; requests
    /// that start from now on use them. `limits.max_connections` and
    /// `timeouts.client_header` need a restart.
    pub fn reconfigure(&self, config: &Config) {
        self.settings.store(Arc::new(ProxySettings::of(config)));
        self.budget.set_config(&config.retry);
    }
}

impl ProxySettings {
    fn of(config: &Config) -> Self {
        ProxySettings {
            attempts: config.retry.attempts,
            timeouts: config.timeouts.clone(),
            limits: config.limits.clone(),
            headers: config.headers,
            client_idle_secs: config.timeouts.client_idle.as_secs().max(1),
        }
    }

    /// The status lb answers with when a request breaks a limit, if it does.
    fn limit_exceeded(&self, req: &RequestHeader) -> Option<u16> {
        let limits = &self.limits;
        if req.raw_path().len() > limits.max_uri_bytes {
            return Some(414);
        }
        let head_bytes = req.raw_path().len()
            + req.method.as_str().len()
            + req
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head_bytes > limits.max_header_bytes {
            return Some(431);
        }
        if limits.max_body_bytes > 0 {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|len| len > limits.max_body_bytes) {
                return Some(413);
            }
        }
        None
    }

    /// How long each read from the backend may wait: `upstream_response`, or
    /// less when the `request` limit has less time left.
    fn upstream_read_timeout(&self, ctx: &RequestCtx) -> Duration {
        let response = self.timeouts.upstream_response;
        if self.timeouts.request.is_zero() {
            return response;
        }
        let left = self.timeouts.request.saturating_sub(ctx.received.elapsed());
        response.min(left.max(Duration::from_millis(1)))
    }
}

impl Proxy {
    /// A proxy that spreads requests over `pool` as `config` says.
    pub fn new(pool: Arc<Pool>, config: &Config) -> Self {
        Proxy {
            pool,
            budget: RetryBudget::leak(&config.retry),
            settings: Arc::new(ArcSwap::from_pointee(ProxySettings::of(config))),
        }
    }

    /// A handle to reconfigure this proxy once it runs.
    pub fn control(&self) -> ProxyControl {
        ProxyControl {
            settings: Arc::clone(&self.settings),
            budget: self.budget,
        }
    }

    /// Whether a request that failed after reaching `ctx.backend` may go to
    /// another backend: nothing of the response reached the client, the
    /// method is idempotent, its body can be replayed, an attempt is left
    /// and, for a connection opened for this request, the budget allows it.
    ///
    /// A kept-alive connection found dead (`reused`) is retried outside the
    /// budget, as every HTTP client does (RFC 9110 9.2.2): it says the
    /// backend went away, not that it is overloaded, and a killed backend
    /// takes all its pooled connections with it at once, more than the budget
    /// admits at 16 clients.
    fn may_retry(&self, session: &Session, e: &Error, ctx: &mut RequestCtx, reused: bool) -> bool {
        let safe = e.esource() == &ErrorSource::Upstream
            && !matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            )
            && session.response_written().is_none()
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        safe && ctx.retries < self.settings.load().attempts && (reused || ctx.ticket.try_retry())
    }
}

/// A request in flight to a backend: counted in the backend's `in_flight`
/// until dropped.
pub struct InFlight(Arc<BackendState>);

impl InFlight {
    fn new(state: Arc<BackendState>) -> Self {
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
    ticket: RequestTicket,
    /// Bytes of request body seen so far (counted only with a body limit).
    body_bytes: u64,
    /// When the request's headers had been read.
    received: Instant,
    /// The backend serving this attempt, counted in its `in_flight`.
    backend: Option<InFlight>,
    /// Backends that failed this request; never chosen again for it. Empty
    /// (and unallocated) in the common case.
    tried: Vec<std::net::SocketAddr>,
    /// When the current attempt picked its backend.
    upstream_started: Option<Instant>,
    /// Time from picking the backend to its response headers.
    upstream_elapsed: Option<Duration>,
    /// Time from picking the backend to a connection to it.
    connect_elapsed: Option<Duration>,
    /// The request's `X-Request-Id`: the client's, or one lb made.
    request_id: Option<HeaderValue>,
    /// Tries on another backend after a failed one.
    retries: usize,
    /// The request asks to upgrade the connection (WebSocket).
    upgrade: bool,
    /// A body was announced and has not been received whole yet.
    body_pending: bool,
    /// The status to answer a failed request with when the failure was the
    /// client's, not the backend's (408 for a body that never came).
    client_fault: Option<u16>,
}

impl RequestCtx {
    /// The current attempt failed and the request goes to another backend:
    /// the failed one is never chosen again for it.
    fn retry_elsewhere(&mut self) {
        if let Some(attempt) = self.backend.take() {
            self.tried.push(attempt.0.addr);
        }
        self.retries += 1;
    }
}

/// Tells the client stream what follows this request's head, and returns
/// the status to refuse it with when its chunked framing is bad or cannot
/// be checked.
fn check_framing(session: &Session, ctx: &mut RequestCtx) -> Option<u16> {
    let req = session.req_header();
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let framing = RequestFraming {
        chunked,
        body: chunked
            || req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|len| len.as_bytes() != b"0"),
        upgrade: session.is_upgrade_req(),
    };
    ctx.upgrade = framing.upgrade;
    ctx.body_pending = framing.body && !framing.upgrade;
    if !(framing.body || framing.upgrade) {
        return None;
    }
    let stream = session.stream().and_then(ClientStream::of)?;
    match stream.expect(framing) {
        FramingCheck::Sound => None,
        FramingCheck::Bad | FramingCheck::Unplaced => Some(400),
    }
}

/// The status to answer with when a request failed through the client's
/// fault rather than the backend's: a body that stopped arriving, so the
/// backend waited for it and timed out (408), or that broke its framing or
/// its time limit in the client stream.
fn client_fault(session: &mut Session, e: &Error) -> Option<u16> {
    match StreamFault::of(e) {
        Some(StreamFault::BodyTimeout) => return Some(408),
        Some(StreamFault::BadFraming(_)) => return Some(400),
        Some(StreamFault::UpgradeResponseTimeout) => return None,
        Some(StreamFault::HeaderTimeout | StreamFault::TunnelIdle) => return Some(0),
        None => {}
    }
    let backend_timed_out = e.esource() == &ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
    (backend_timed_out && !session.was_upgraded() && !session.is_body_done()).then_some(408)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a response-compression
    /// module that is disabled yet still costs every request a Vec, a Box
    /// and three boxed async calls. lb compresses nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            ticket: self.budget.admit(),
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
            client_fault: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if log::log_enabled!(log::Level::Debug) {
            log_received_request(session);
        }
        let settings = self.settings.load();
        if let Some(status) = malformed(session.req_header())
            .or_else(|| settings.limit_exceeded(session.req_header()))
        {
            respond_plain_error(session, status).await?;
            return Ok(true);
        }
        if let Some(status) = check_framing(session, ctx) {
            // The bytes after a bad frame cannot be trusted to start a request.
            session.set_keepalive(None);
            respond_plain_error(session, status).await?;
            return Ok(true);
        }
        if ctx.upgrade {
            // A tunnel's reads wait as long as it is open; its limit is
            // `timeouts.tunnel_idle`, in the client stream.
            session.set_read_timeout(None);
        }
        if settings.headers.request_id {
            ctx.request_id = Some(request_id::of(session.req_header()));
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
            if let Some(stream) = session.stream().and_then(ClientStream::of) {
                stream.body_received();
            }
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
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (backend, state) = match self.pool.select(&ctx.tried) {
            Selection::Backend(backend, state) => (backend, state),
            Selection::NoneHealthy => {
                return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy backend")
            }
            Selection::Exhausted => {
                return Error::e_explain(ErrorType::HTTPStatus(502), "no backend left to try")
            }
        };
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        let settings = self.settings.load();
        let t = &settings.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        if ctx.upgrade {
            // No per-read limit: it would cut an open tunnel. The client stream
            // limits the wait for the answer (`upstream_response`) and the
            // tunnel's idle time (`tunnel_idle`).
            peer.options.read_timeout = None;
            peer.options.write_timeout = Some(t.tunnel_idle);
        } else {
            peer.options.read_timeout = Some(settings.upstream_read_timeout(ctx));
            peer.options.write_timeout = Some(t.upstream_response);
        }
        peer.options.idle_timeout = Some(t.upstream_idle);
        // lb removes the hop-by-hop fields itself, in a pass it can skip
        // (`hop_by_hop`): the standard policy costs 3.5k instructions a
        // request whether there are any or not.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
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
        // Such a retry adds no load to any backend: the budget does not apply.
        let retry = ctx.retries < self.settings.load().attempts;
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
        if let Some(attempt) = &ctx.backend {
            self.pool.record_failure(&attempt.0, &e.etype().as_str());
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
        ctx.client_fault = client_fault(session, &e);
        let from_backend = ctx.client_fault.is_none()
            && (e.esource() == &ErrorSource::Upstream
                || StreamFault::of(&e) == Some(StreamFault::UpgradeResponseTimeout));
        if let (Some(attempt), true) = (&ctx.backend, from_backend) {
            self.pool.record_failure(&attempt.0, &e.etype().as_str());
        }
        let retry = from_backend && self.may_retry(session, &e, ctx, client_reused);
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
        // tab, a load generator stopping), not an error of lb's; the access
        // log records it with status 0. So are the client's own faults (a
        // body that stopped, bad framing, a tunnel left idle): the access
        // log records their status.
        (error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            ))
            || ctx.client_fault.is_some()
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
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(request_id::HEADER, id.clone())?;
        }
        if !self.settings.load().headers.forwarded {
            return Ok(());
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded_for =
                forwarded_for(upstream_request.headers.get("x-forwarded-for"), client.ip());
            upstream_request.insert_header("X-Forwarded-For", forwarded_for)?;
        }
        upstream_request.insert_header("X-Forwarded-Proto", HeaderValue::from_static("http"))?;
        let host = upstream_request
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                let authority = upstream_request.uri.authority()?;
                http::HeaderValue::from_str(authority.as_str()).ok()
            });
        if let Some(host) = host {
            upstream_request.insert_header("X-Forwarded-Host", host)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|started| started.elapsed());
        if let Some(InFlight(backend)) = &ctx.backend {
            backend.requests.fetch_add(1, Relaxed);
            let status = upstream_response.status.as_u16();
            if status >= 500 && self.pool.outliers().counts_5xx() {
                self.pool
                    .record_failure(backend, &format_args!("status {status}"));
            } else {
                self.pool.record_success(backend);
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
        let code = match ctx.client_fault.or_else(|| client_fault(session, e)) {
            Some(code) => code,
            None => error_status(e),
        };
        if code > 0 {
            if let Err(write_error) = respond_plain_error(session, code).await {
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
        Ok(())
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let total = ctx.received.elapsed();
        let upstream = ctx.upstream_elapsed.map(|d| d.as_secs_f64());
        match &ctx.backend {
            Some(attempt) => attempt
                .0
                .metrics
                .observe(status, total.as_secs_f64(), upstream),
            None => metrics()
                .unrouted()
                .observe(status, total.as_secs_f64(), upstream),
        }
        if let Some(log) = access_log::access_log() {
            log.write(
                access_entry(session, ctx, status, total, &client_ip(session)).line(log.format()),
            );
        } else if log::log_enabled!(target: "lb::access", log::Level::Info) {
            log_access(session, ctx);
        }
    }
}

/// The access log's view of a finished request.
fn access_entry<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    status: u16,
    total: Duration,
    client: &'a str,
) -> access_log::Entry<'a> {
    let req = session.req_header();
    access_log::Entry {
        time: None,
        client,
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: version_name(req.version),
        status,
        bytes_sent: session.body_bytes_sent(),
        backend: ctx.backend.as_ref().map(|b| b.0.addr),
        connect: ctx.connect_elapsed,
        upstream: ctx.upstream_elapsed,
        total,
        retries: ctx.retries,
        request_id: ctx
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-"),
    }
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `X-Forwarded-For` with `client` appended, built in a stack buffer (this
/// runs for every request).
fn forwarded_for(previous: Option<&HeaderValue>, client: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match previous {
        // A long chain goes through the heap; the common case does not.
        Some(previous) if previous.len() > 16 => {
            let mut value = previous.as_bytes().to_vec();
            let _ = write!(value, ", {client}");
            return HeaderValue::from_bytes(&value).unwrap_or_else(|_| previous.clone());
        }
        Some(previous) => cursor
            .write_all(previous.as_bytes())
            .and_then(|()| cursor.write_all(b", "))
            .and_then(|()| write_ip(&mut cursor, client)),
        None => write_ip(&mut cursor, client),
    };
    let len = cursor.position() as usize;
    match written {
        Ok(()) => {
            HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// Writes `ip` as text; an IPv4 address digit by digit, without the
/// formatting machinery `Display` goes through (a tenth of the cost).
fn write_ip(out: &mut impl std::io::Write, ip: std::net::IpAddr) -> std::io::Result<()> {
    let std::net::IpAddr::V4(v4) = ip else {
        return write!(out, "{ip}");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    out.write_all(&text[..len])
}

/// 400 for what Pingora's parser lets through but RFC 9112 forbids: a
/// request target that is neither origin-form (`/...`), asterisk-form
/// (`OPTIONS *`) nor absolute-form (`http://...`), and an HTTP/1.1 request
/// without `Host` (section 3.2).
fn malformed(req: &RequestHeader) -> Option<u16> {
    let target = req.raw_path();
    let valid_target = target.starts_with(b"/")
        || (target == b"*" && req.method == http::Method::OPTIONS)
        || target.starts_with(b"http://")
        || target.starts_with(b"https://");
    let host_missing =
        req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST);
    (!valid_target || host_missing).then_some(400)
}

/// The status lb answers an error with: the error's own HTTP status, 502 for
/// a backend's fault, 400 for a client's, 0 when the client is gone.
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ if StreamFault::of(e) == Some(StreamFault::UpgradeResponseTimeout) => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Answers with `code` and a one-line plain-text body naming it.
async fn respond_plain_error(session: &mut Session, code: u16) -> Result<()> {
    let body = Bytes::from(error_body(code));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .as_downstream_mut()
        .write_error_response(resp, body)
        .await
}

/// The short body of an error lb answers itself.
fn error_body(code: u16) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    match code {
        502 => format!("{code} {reason}: no backend could serve this request\n"),
        503 => format!("{code} {reason}: no healthy backend\n"),
        504 => format!("{code} {reason}: the backend did not answer in time\n"),
        _ => format!("{code} {reason}\n"),
    }
}

/// The seed's debug view of a request: who sent it, its request line and headers.
fn log_received_request(session: &Session) {
    let req = session.req_header();
    let client = client_ip(session);
    let mut text = format!(
        "Received request from {client}\n{} {} {:?}",
        req.method, req.uri, req.version
    );
    for (name, value) in req.headers.iter() {
        text.push_str(&format!(
            "\n{}: {}",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    log::debug!("{text}");
}

/// One access line: client, request, status, backend and timings.
fn log_access(session: &Session, ctx: &RequestCtx) {
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let backend = ctx
        .backend
        .as_ref()
        .map_or_else(|| "-".to_string(), |b| b.0.addr.to_string());
    let upstream_ms = ctx.upstream_elapsed.map_or_else(
        || "-".to_string(),
        |d| format!("{:.3}", d.as_secs_f64() * 1000.0),
    );
    log::info!(
        target: "lb::access",
        "{} \"{} {} {:?}\" {} backend={} upstream_ms={} total_ms={:.3} retries={}",
        client_ip(session),
        req.method,
        req.uri,
        req.version,
        status,
        backend,
        upstream_ms,
        ctx.received.elapsed().as_secs_f64() * 1000.0,
        ctx.retries
    );
}

fn client_ip(session: &Session) -> String {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or_else(|| "-".to_string(), |a| a.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(forwarded_for(None, ip), "10.0.0.1");
        let short = HeaderValue::from_static("1.2.3.4");
        assert_eq!(forwarded_for(Some(&short), ip), "1.2.3.4, 10.0.0.1");
        let long = HeaderValue::from_static("203.0.113.7, 198.51.100.2, 192.0.2.44");
        assert_eq!(
            forwarded_for(Some(&long), ip),
            "203.0.113.7, 198.51.100.2, 192.0.2.44, 10.0.0.1"
        );
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(Some(&short), v6), "1.2.3.4, 2001:db8::1");
    }

    #[test]
    fn ip_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn error_body_names_the_status() {
        assert_eq!(
            error_body(502),
            "502 Bad Gateway: no backend could serve this request\n"
        );
        assert_eq!(error_body(400), "400 Bad Request\n");
    }

    #[test]
    fn upstream_errors_become_502() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(error_status(&e), 502);
        let e = Error::new(ErrorType::HTTPStatus(504));
        assert_eq!(error_status(&e), 504);
    }
}
