//! The admin API: JSON over HTTP on its own listener.
//!
//! - `GET /healthz`: 200 while lb serves (no token needed: probes use it).
//! - `GET /`: the live status page (static; its data comes from `/api/stats`).
//! - `GET /api/stats`: per-backend rates, latencies and a minute of history.
//! - `GET /metrics`: Prometheus metrics.
//! - `GET /api/backends`: every backend with its health, ejection, draining,
//!   in-flight and total requests, errors and last health check.
//! - `POST /api/backends` (`{"address": "host:port", "weight": 1}`): adds one.
//! - `DELETE /api/backends/{address}`: removes it; its requests in flight finish.
//! - `POST /api/backends/{address}/drain` and `.../enable`.
//! - `POST /api/reload`: what `SIGHUP` does.
//!
//! Runtime changes last until the next reload. With a token configured,
//! every other request needs `Authorization: Bearer TOKEN`, else 401.

pub mod stats;
mod views;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::Deserialize;
use serde_json::json;
use views::{BackendStatsView, BackendView, CheckView};

use crate::admin::stats::Stats;
use crate::config::{AdminConfig, BackendConfig};
use crate::pool::members::BackendState;
use crate::pool::Pool;
use crate::reload::Reloader;
use crate::telemetry::metrics::{metrics, BackendGauges};

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The status page, embedded so lb needs no files or network to show it.
const STATUS_PAGE: &str = include_str!("status.html");

/// The admin API's application.
pub struct AdminApp {
    pool: Arc<Pool>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
    token: Option<String>,
}

/// The admin API as a Pingora service on `config.listen`.
pub fn service(
    config: &AdminConfig,
    pool: Arc<Pool>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
) -> Service<AdminApp> {
    let app = AdminApp {
        pool,
        reloader,
        stats,
        token: config.token.clone(),
    };
    let mut service = Service::new("admin API".to_string(), app);
    service.add_tcp(&config.listen.to_string());
    service
}

/// `POST /api/backends` body.
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

    fn backend_view<'a>(&self, state: &'a BackendState) -> BackendView<'a> {
        BackendView {
            address: state.addr.to_string(),
            entry: &state.entry,
            weight: state.weight,
            healthy: self.pool.is_healthy(&state.addr),
            ejected: self.pool.outliers().ejected_now(state),
            draining: state.draining.load(Relaxed),
            in_flight: state.in_flight.load(Relaxed),
            requests: state.requests.load(Relaxed),
            errors: state.errors.load(Relaxed),
            last_health_check: state.last_check().map(CheckView::from),
        }
    }

    fn stats(&self) -> Response<Vec<u8>> {
        let states = self.pool.members().states();
        let mut backends: Vec<&Arc<BackendState>> = states.values().collect();
        backends.sort_by_key(|s| s.addr);
        let list: Vec<BackendStatsView> = backends
            .iter()
            .map(|state| {
                let (sample, history) = self.stats.of(&state.addr);
                let backend = self.backend_view(state);
                BackendStatsView::new(backend, state.health_since(), sample, history)
            })
            .collect();
        json_response(StatusCode::OK, &json!({ "backends": list }))
    }

    /// Prometheus text, with the pool's gauges read now.
    fn metrics(&self) -> Response<Vec<u8>> {
        let pool = &self.pool;
        let states = pool.members().states();
        let backends = states.values().map(|state| {
            let gauges = BackendGauges {
                healthy: pool.is_healthy(&state.addr),
                ejected: pool.outliers().ejected_now(state),
                draining: state.draining.load(Relaxed),
                in_flight: state.in_flight.load(Relaxed),
            };
            (pool.name(), state.addr.to_string(), gauges)
        });
        let m = metrics();
        m.set_backend_gauges(backends.collect::<Vec<_>>());
        let body = m.render();
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }

    fn list_backends(&self) -> Response<Vec<u8>> {
        let states = self.pool.members().states();
        let mut backends: Vec<&Arc<BackendState>> = states.values().collect();
        backends.sort_by_key(|s| s.addr);
        let list: Vec<BackendView> = backends.iter().map(|s| self.backend_view(s)).collect();
        json_response(StatusCode::OK, &list)
    }

    async fn add_backend(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
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
        if !self.pool.members().add(backend) {
            return error(
                StatusCode::CONFLICT,
                format!("{} is already in the pool", new.address),
            );
        }
        log::info!("admin API: backend {} added", new.address);
        self.pool.refresh();
        json_response(StatusCode::CREATED, &json!({ "added": new.address }))
    }

    fn remove_backend(&self, address: &str) -> Response<Vec<u8>> {
        if !self.pool.members().remove(address) {
            return error(StatusCode::NOT_FOUND, format!("no backend {address}"));
        }
        log::info!("admin API: backend {address} removed");
        self.pool.refresh();
        json_response(StatusCode::OK, &json!({ "removed": address }))
    }

    fn set_draining(&self, address: &str, draining: bool) -> Response<Vec<u8>> {
        let state = address
            .parse()
            .ok()
            .and_then(|addr| self.pool.members().state(&addr));
        let Some(state) = state else {
            return error(StatusCode::NOT_FOUND, format!("no backend {address}"));
        };
        state.draining.store(draining, Relaxed);
        log::info!(
            "admin API: backend {address} {}",
            if draining { "drained" } else { "enabled" }
        );
        json_response(StatusCode::OK, &self.backend_view(&state))
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
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["api", "backends"]) => self.list_backends(),
            (&Method::GET, ["api", "stats"]) => self.stats(),
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::POST, ["api", "backends"]) => self.add_backend(session).await,
            (&Method::DELETE, ["api", "backends", address]) => self.remove_backend(address),
            (&Method::POST, ["api", "backends", address, "drain"]) => {
                self.set_draining(address, true)
            }
            (&Method::POST, ["api", "backends", address, "enable"]) => {
                self.set_draining(address, false)
            }
            (&Method::POST, ["api", "reload"]) => self.reload().await,
            (
                _,
                ["api", "backends"]
                | ["api", "backends", _]
                | ["api", "backends", _, _]
                | ["api", "reload"],
            ) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ),
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
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
}
