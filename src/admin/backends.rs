//! The endpoints under a pool's `backends` path: list, add, remove, drain
//! and enable, and reading the body of an add.

use std::sync::atomic::Ordering::Relaxed;

use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use super::{
    backend_view, error, json_response, no_endpoint, not_allowed, upstream_view, AdminApp,
};
use crate::config::BackendConfig;
use crate::connection::ClientFault;
use crate::pool::Pool;

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST .../backends` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    address: String,
    weight: Option<i64>,
}

impl AdminApp {
    /// The requests under a pool's `backends` path: `rest` is what follows
    /// it (`[]`, `[address]`, `[address, "drain"]`).
    pub(super) async fn backends(
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
}

/// Reads a request body of at most [`MAX_BODY_BYTES`]. One that takes
/// longer than `timeouts.client_body` gets 408, and the connection closes.
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
            Err(e) if ClientFault::of(&e) == Some(ClientFault::BodyTimeout) => {
                session.set_keepalive(None);
                return Err(error(StatusCode::REQUEST_TIMEOUT, e.to_string()));
            }
            Err(e) => {
                session.set_keepalive(None);
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ));
            }
        }
    }
}
