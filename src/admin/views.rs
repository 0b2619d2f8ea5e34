//! What the admin API answers, as types: each JSON body is one of these,
//! serialized, so its fields are written down in one place.

use std::time::SystemTime;

use serde::Serialize;

use super::stats::Sample;
use crate::pool::members::CheckRecord;

/// A time as RFC 3339 text, to the second.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// One pool in `GET /api/upstreams` (with [`BackendView`]s) and in
/// `GET /api/stats` (with [`BackendStatsView`]s).
#[derive(Debug, Serialize)]
pub struct UpstreamView<'a, B> {
    pub name: &'a str,
    /// `round_robin`, `least_request`, `peak_ewma`, `consistent_hash`.
    pub balance: &'static str,
    /// By address.
    pub backends: Vec<B>,
}

/// One backend in `GET /api/backends`.
#[derive(Debug, Serialize)]
pub struct BackendView {
    pub address: String,
    /// As configured (`be1:8080`).
    pub entry: String,
    pub weight: usize,
    pub healthy: bool,
    pub ejected: bool,
    pub draining: bool,
    pub in_flight: usize,
    pub requests: u64,
    pub errors: u64,
    pub last_health_check: Option<CheckView>,
}

/// The last active health check of a backend.
#[derive(Debug, Serialize)]
pub struct CheckView {
    pub at: String,
    pub passed: bool,
    pub detail: String,
}

impl From<CheckRecord> for CheckView {
    fn from(record: CheckRecord) -> Self {
        CheckView {
            at: rfc3339(record.at),
            passed: record.passed,
            detail: record.detail,
        }
    }
}

/// `GET /api/stats`: every pool, and the default pool's backends alone
/// under the key clients from before named pools read.
#[derive(Debug, Serialize)]
pub struct StatsView<'a> {
    /// The backends of the pool named `default`, else of the first pool.
    pub backends: &'a [BackendStatsView],
    pub upstreams: &'a [UpstreamView<'a, BackendStatsView>],
    pub connections: ConnectionsView,
}

/// Client connections in `GET /api/stats`, as `lb_client_connections` and
/// `lb_tls_handshakes_in_progress` count them.
#[derive(Debug, Serialize)]
pub struct ConnectionsView {
    /// Open now, on every listener, TLS handshakes included.
    pub open: i64,
    /// Of those, still in their TLS handshake.
    pub tls_handshakes: i64,
}

impl ConnectionsView {
    /// The counts now.
    pub fn now() -> ConnectionsView {
        let connections = &crate::telemetry::metrics::metrics().connections;
        ConnectionsView {
            open: connections.open.get(),
            tls_handshakes: connections.handshaking.get(),
        }
    }
}

/// One backend in `GET /api/stats`: the backend, and its last second.
#[derive(Debug, Serialize)]
pub struct BackendStatsView {
    #[serde(flatten)]
    pub backend: BackendView,
    /// When its active health last changed.
    pub health_since: String,
    pub rps: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests per second, one a second, oldest first.
    pub history: Vec<f64>,
}

impl BackendStatsView {
    /// `backend` with its latest `sample`, `history` and health change.
    pub fn new(backend: BackendView, since: SystemTime, sample: Sample, history: Vec<f64>) -> Self {
        BackendStatsView {
            backend,
            health_since: rfc3339(since),
            rps: sample.rps,
            error_rate: sample.error_rate,
            p50_ms: sample.p50_ms,
            p99_ms: sample.p99_ms,
            history,
        }
    }
}
