//! The admin API: JSON over HTTP on its own listener.
//!
//! - `GET /healthz`: 200 while lb serves (no token needed: probes use it).
//! - `GET /`: the live status page (static; its data comes from `/api/stats`).
//! - `GET /api/stats`: per-backend rates, latencies and a minute of
//!   history, grouped by pool (`upstreams`), and the default pool's alone
//!   (`backends`, the key older clients read).
//! - `GET /metrics`: Prometheus metrics.
//! - `GET /api/status`: version, pid, the hash of the config running and
//!   whether cluster rate limits are shared (to compare replicas).
//! - `GET /api/upstreams`: every pool with its name, balance and backends;
//!   `GET /api/upstreams/{name}`: one.
//! - `GET /api/upstreams/{name}/backends`: every backend of the pool with
//!   its health, ejection, draining, in-flight and total requests, errors
//!   and last health check.
//! - `POST /api/upstreams/{name}/backends` (`{"address": "host:port",
//!   "weight": 1}`): adds one.
//! - `DELETE /api/upstreams/{name}/backends/{address}`: removes it; its
//!   requests in flight finish.
//! - `POST /api/upstreams/{name}/backends/{address}/drain` and `.../enable`.
//! - `/api/backends...`: the same as `/api/upstreams/default/backends...`,
//!   or, with no pool named `default`, as for the first pool.
//! - `POST /api/reload`: what `SIGHUP` does.
//!
//! Every endpoint reads the pools requests use now (the routing the proxy
//! swaps at reload), so a pool a reload adds is there at once and a removed
//! one is gone. Path segments are percent-decoded (`127.0.0.1%3A8080`, a
//! pool name with a space). Runtime changes last until the next reload.
//! `HEAD` is answered as `GET`, without the body.
//!
//! What a request must show before it reaches an endpoint (the token, a
//! `Host` of this listener, no other origin, a JSON body) is in
//! [`guard`]; the connections (their cap and time limits) in `server.rs`.

mod backends;
pub mod guard;
mod server;
pub mod stats;
mod views;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::json;
use views::{BackendStatsView, BackendView, CheckView, StatsView, UpstreamView};

use crate::admin::guard::{Guard, Refusal, WWW_AUTHENTICATE};
use crate::admin::stats::Stats;
use crate::config::AdminConfig;
use crate::pool::members::BackendState;
use crate::pool::Pool;
use crate::proxy::{ProxyControl, Routing};
use crate::reload::Reloader;
use crate::telemetry::metrics::{metrics, BackendGauges};
pub use server::{AdminServer, MAX_CONNECTIONS};

/// The status page, embedded so lb needs no files or network to show it:
/// its path, content type and bytes. The script and style are files of
/// their own so the page's Content-Security-Policy can forbid inline ones.
const STATUS_PAGE: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("status.html")),
    (
        "/status.js",
        "text/javascript; charset=utf-8",
        include_str!("status.js"),
    ),
    (
        "/status.css",
        "text/css; charset=utf-8",
        include_str!("status.css"),
    ),
];

/// The admin API's application.
pub struct AdminApp {
    /// The pools and routes requests use now, swapped whole at reload.
    routing: Arc<ArcSwap<Routing>>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
    guard: Guard,
}

/// The admin API as a Pingora service on `config.listen`, showing the
/// pools of `routing` as they are at each request. Its connections have
/// the limits of the proxy's (`proxy`'s `timeouts.client_body` and
/// `client_idle` as they are now, and `client_header`).
pub fn service(
    config: &AdminConfig,
    routing: Arc<ArcSwap<Routing>>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
    proxy: ProxyControl,
    client_header: Duration,
) -> Service<AdminServer> {
    let app = AdminApp {
        routing,
        reloader,
        stats,
        guard: Guard {
            listen: config.listen,
            token: config.token.clone(),
        },
    };
    let server = AdminServer {
        app,
        proxy,
        client_header,
        open: Default::default(),
        refused: Default::default(),
    };
    let mut service = Service::new("admin API".to_string(), server);
    service.add_tcp(&config.listen.to_string());
    service
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(bytes)
        .unwrap_or_default()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": message.into() }))
}

/// 405 for a path that takes other methods.
fn not_allowed(method: &Method, path: &str) -> Response<Vec<u8>> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {path}"),
    )
}

/// 404 for a path that is no endpoint.
fn no_endpoint(path: &str) -> Response<Vec<u8>> {
    error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
}

/// The answer to a request [`guard`] refused; a 401 names the scheme.
fn refused(refusal: Refusal) -> Response<Vec<u8>> {
    let mut response = error(refusal.status, refusal.message);
    if refusal.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(WWW_AUTHENTICATE),
        );
    }
    response
}

/// The status page's file at `path`, if it is one.
fn status_page_file(path: &str) -> Option<Response<Vec<u8>>> {
    let (_, content_type, text) = STATUS_PAGE.iter().find(|(at, _, _)| *at == path)?;
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, *content_type)
        .header(http::header::CONTENT_LENGTH, text.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(text.as_bytes().to_vec())
        .ok()
}

/// `segment` with its `%XX` escapes decoded; None when an escape is cut
/// short or not hex, or the bytes are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let (hex, after) = after.split_at_checked(2)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = after;
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The states of `pool`'s backends, by address.
fn sorted_states(pool: &Pool) -> Vec<Arc<BackendState>> {
    let mut states: Vec<Arc<BackendState>> = pool.members().states().values().cloned().collect();
    states.sort_by_key(|s| s.addr);
    states
}

/// `state`, a backend of `pool`, as the API shows it.
fn backend_view(pool: &Pool, state: &BackendState) -> BackendView {
    BackendView {
        address: state.addr.to_string(),
        entry: state.entry.clone(),
        weight: state.weight,
        healthy: pool.is_healthy(&state.addr),
        ejected: pool.outliers().ejected_now(state),
        draining: state.draining.load(Relaxed),
        in_flight: state.in_flight.load(Relaxed),
        requests: state.requests.load(Relaxed),
        errors: state.errors.load(Relaxed),
        last_health_check: state.last_check().map(CheckView::from),
    }
}

/// `pool` with each of its backends, by address, shown by `view`.
fn upstream_view<B>(pool: &Pool, view: impl Fn(&Pool, &BackendState) -> B) -> UpstreamView<'_, B> {
    UpstreamView {
        name: pool.name(),
        balance: pool.balance().as_str(),
        backends: sorted_states(pool)
            .iter()
            .map(|state| view(pool, state))
            .collect(),
    }
}

/// Every pool of `routing`, in config order, shown by [`upstream_view`].
fn upstream_views<B>(
    routing: &Routing,
    view: impl Fn(&Pool, &BackendState) -> B,
) -> Vec<UpstreamView<'_, B>> {
    routing
        .pools()
        .map(|pool| upstream_view(pool, &view))
        .collect()
}

impl AdminApp {
    /// `GET /api/stats`: every pool's backends with their last second.
    fn stats(&self, routing: &Routing) -> Response<Vec<u8>> {
        let upstreams = upstream_views(routing, |pool, state| {
            let (sample, history) = self.stats.of(pool.name(), &state.addr);
            let backend = backend_view(pool, state);
            BackendStatsView::new(backend, state.health_since(), sample, history)
        });
        let default = routing
            .default_pool()
            .and_then(|pool| upstreams.iter().find(|u| u.name == pool.name()));
        let view = StatsView {
            backends: default.map_or(&[], |u| u.backends.as_slice()),
            upstreams: &upstreams,
            connections: views::ConnectionsView::now(),
            policies: routing
                .policies()
                .counts()
                .into_iter()
                .map(|(name, counts)| views::PolicyView::new(name, counts))
                .collect(),
        };
        json_response(StatusCode::OK, &view)
    }

    /// `GET /api/status`: version, pid and the config running.
    fn status(&self, routing: &Routing) -> Response<Vec<u8>> {
        let view = views::StatusView {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            config_hash: routing.config_hash(),
            config_file: self.reloader.path().map(|p| p.display().to_string()),
            cluster_limits: routing.policies().cluster_limits_shared().map(|shared| {
                if shared {
                    "shared"
                } else {
                    "local"
                }
            }),
        };
        json_response(StatusCode::OK, &view)
    }

    /// Prometheus text, with the current pools' gauges read now.
    fn metrics(&self, routing: &Routing) -> Response<Vec<u8>> {
        let mut backends = Vec::new();
        for pool in routing.pools() {
            for state in pool.members().states().values() {
                let gauges = BackendGauges {
                    healthy: pool.is_healthy(&state.addr),
                    ejected: pool.outliers().ejected_now(state),
                    draining: state.draining.load(Relaxed),
                    in_flight: state.in_flight.load(Relaxed),
                };
                backends.push((pool.name(), state.addr.to_string(), gauges));
            }
        }
        let m = metrics();
        m.set_backend_gauges(backends);
        let body = m.render();
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }

    /// `GET /api/upstreams`: every pool with its backends.
    fn upstreams(&self, routing: &Routing) -> Response<Vec<u8>> {
        json_response(StatusCode::OK, &upstream_views(routing, backend_view))
    }

    /// `GET /api/upstreams/{name}`.
    fn upstream(&self, pool: &Pool) -> Response<Vec<u8>> {
        json_response(StatusCode::OK, &upstream_view(pool, backend_view))
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let reloader = Arc::clone(&self.reloader);
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(reloaded)) => {
                json_response(StatusCode::OK, &json!({ "result": reloaded.to_string() }))
            }
            Ok(Err(e)) => error(StatusCode::BAD_REQUEST, crate::reload::error_chain(&e)),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload task failed: {e}"),
            ),
        }
    }
}

impl AdminApp {
    /// The answer to the request `session` holds (its head read).
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        // HEAD is GET; the server leaves the body out.
        let method = match &req.method {
            &Method::HEAD => Method::GET,
            other => other.clone(),
        };
        let path = req.uri.path().to_string();
        if method == Method::GET && path == "/healthz" {
            return json_response(StatusCode::OK, &json!({ "status": "ok" }));
        }
        // The status page's files are static: its data needs the token,
        // the page does not.
        let page = (method == Method::GET)
            .then(|| status_page_file(&path))
            .flatten();
        if let Err(refusal) = self.guard.check(&req.method, &req.headers, page.is_none()) {
            return refused(refusal);
        }
        if let Some(page) = page {
            return page;
        }
        let Some(segments) = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect::<Option<Vec<String>>>()
        else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{path}: a %-escape is not two hex digits or not UTF-8"),
            );
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let routing = self.routing.load_full();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["api", "stats"]) => self.stats(&routing),
            (&Method::GET, ["api", "status"]) => self.status(&routing),
            (&Method::GET, ["metrics"]) => self.metrics(&routing),
            (&Method::GET, ["api", "upstreams"]) => self.upstreams(&routing),
            (&Method::POST, ["api", "reload"]) => self.reload().await,
            (_, ["api", "backends", rest @ ..]) => match routing.default_pool() {
                Some(pool) => self.backends(pool, &method, &path, rest, session).await,
                None => error(StatusCode::NOT_FOUND, "lb has no pool"),
            },
            (_, ["api", "upstreams", name, rest @ ..]) => {
                let Some(pool) = routing.pool_named(name) else {
                    return error(StatusCode::NOT_FOUND, format!("no upstream named {name:?}"));
                };
                match (&method, rest) {
                    (&Method::GET, []) => self.upstream(pool),
                    (_, ["backends", rest @ ..]) => {
                        self.backends(pool, &method, &path, rest, session).await
                    }
                    (_, []) => not_allowed(&method, &path),
                    _ => no_endpoint(&path),
                }
            }
            (_, ["api", "upstreams"] | ["api", "reload"]) => not_allowed(&method, &path),
            _ => no_endpoint(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            percent_decode("127.0.0.1%3A8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            percent_decode("%5B%3a%3A1%5D:80").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(percent_decode("my%20pool").as_deref(), Some("my pool"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%zz", "%+f", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
