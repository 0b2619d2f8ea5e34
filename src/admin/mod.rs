//! The admin API: JSON over HTTP on its own listener.
//!
//! - `GET /healthz`: 200 while lb serves (no token needed: probes use it).
//! - `GET /`: the live status page (static; its data comes from `/api/stats`).
//! - `GET /api/stats`: per-backend rates, latencies and a minute of
//!   history, grouped by pool (`upstreams`), and the default pool's alone
//!   (`backends`, the key older clients read).
//! - `GET /metrics`: Prometheus metrics.
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
//! With a token configured, every other request needs `Authorization:
//! Bearer TOKEN`, else 401.

pub mod stats;
mod views;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::Deserialize;
use serde_json::json;
use views::{BackendStatsView, BackendView, CheckView, StatsView, UpstreamView};

use crate::admin::stats::Stats;
use crate::config::{AdminConfig, BackendConfig};
use crate::pool::members::BackendState;
use crate::pool::Pool;
use crate::proxy::Routing;
use crate::reload::Reloader;
use crate::telemetry::metrics::{metrics, BackendGauges};

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The status page, embedded so lb needs no files or network to show it.
const STATUS_PAGE: &str = include_str!("status.html");

/// The admin API's application.
pub struct AdminApp {
    /// The pools and routes requests use now, swapped whole at reload.
    routing: Arc<ArcSwap<Routing>>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
    token: Option<String>,
}

/// The admin API as a Pingora service on `config.listen`, showing the
/// pools of `routing` as they are at each request.
pub fn service(
    config: &AdminConfig,
    routing: Arc<ArcSwap<Routing>>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
) -> Service<AdminApp> {
    let app = AdminApp {
        routing,
        reloader,
        stats,
        token: config.token.clone(),
    };
    let mut service = Service::new("admin API".to_string(), app);
    service.add_tcp(&config.listen.to_string());
    service
}

/// `POST .../backends` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    address: String,
    weight: Option<i64>,
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

/// Compares without stopping at the first difference, so response time
/// does not tell how much of a guessed token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
        .iter()
        .map(|pool| upstream_view(pool, &view))
        .collect()
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
    }

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

    /// The requests under a pool's `backends` path: `rest` is what follows
    /// it (`[]`, `[address]`, `[address, "drain"]`).
    async fn backends(
        &self,
        pool: &Pool,
        method: &Method,
        path: &str,
        rest: &[&str],
        session: &mut ServerSession,
    ) -> Response<Vec<u8>> {
        match (method, rest) {
            (&Method::GET, []) => self.list_backends(pool),
            (&Method::POST, []) => self.add_backend(pool, session).await,
            (&Method::DELETE, [address]) => self.remove_backend(pool, address),
            (&Method::POST, [address, "drain"]) => self.set_draining(pool, address, true),
            (&Method::POST, [address, "enable"]) => self.set_draining(pool, address, false),
            (_, [] | [_] | [_, _]) => not_allowed(method, path),
            _ => no_endpoint(path),
        }
    }

    fn list_backends(&self, pool: &Pool) -> Response<Vec<u8>> {
        json_response(StatusCode::OK, &upstream_view(pool, backend_view).backends)
    }

    async fn add_backend(&self, pool: &Pool, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let new: NewBackend = match serde_json::from_slice(&body) {
            Ok(new) => new,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        };
        let backend = match BackendConfig::parse(&new.address, new.weight) {
            Ok(backend) => backend,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        if !pool.members().add(backend) {
            return error(
                StatusCode::CONFLICT,
                format!("{} is already in upstream {}", new.address, pool.name()),
            );
        }
        log::info!(
            "admin API: backend {} added to upstream {}",
            new.address,
            pool.name()
        );
        pool.refresh();
        json_response(StatusCode::CREATED, &json!({ "added": new.address }))
    }

    fn remove_backend(&self, pool: &Pool, address: &str) -> Response<Vec<u8>> {
        if !pool.members().remove(address) {
            return error(
                StatusCode::NOT_FOUND,
                format!("no backend {address} in upstream {}", pool.name()),
            );
        }
        log::info!(
            "admin API: backend {address} removed from upstream {}",
            pool.name()
        );
        pool.refresh();
        json_response(StatusCode::OK, &json!({ "removed": address }))
    }

    fn set_draining(&self, pool: &Pool, address: &str, draining: bool) -> Response<Vec<u8>> {
        let state = address
            .parse()
            .ok()
            .and_then(|addr| pool.members().state(&addr));
        let Some(state) = state else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no backend {address} in upstream {}", pool.name()),
            );
        };
        state.draining.store(draining, Relaxed);
        log::info!(
            "admin API: backend {address} of upstream {} {}",
            pool.name(),
            if draining { "drained" } else { "enabled" }
        );
        json_response(StatusCode::OK, &backend_view(pool, &state))
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

/// Reads a request body of at most [`MAX_BODY_BYTES`].
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY_BYTES {
                    return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if method == Method::GET && path == "/healthz" {
            return json_response(StatusCode::OK, &json!({ "status": "ok" }));
        }
        if method == Method::GET && path == "/" {
            // Static HTML: its data needs the token, the page does not.
            return Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(http::header::CONTENT_LENGTH, STATUS_PAGE.len())
                .header(http::header::CACHE_CONTROL, "no-store")
                .body(STATUS_PAGE.as_bytes().to_vec())
                .unwrap_or_default();
        }
        if !self.authorized(session) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
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
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }

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
