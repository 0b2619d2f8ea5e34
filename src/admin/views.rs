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

/// One backend in `GET /api/backends`.
#[derive(Debug, Serialize)]
pub struct BackendView<'a> {
    pub address: String,
    /// As configured (`be1:8080`).
    pub entry: &'a str,
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

/// One backend in `GET /api/stats`: the backend, and its last second.
#[derive(Debug, Serialize)]
pub struct BackendStatsView<'a> {
    #[serde(flatten)]
    pub backend: BackendView<'a>,
    /// When its active health last changed.
    pub health_since: String,
    pub rps: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests per second, one a second, oldest first.
    pub history: Vec<f64>,
}

impl<'a> BackendStatsView<'a> {
    /// `backend` with its latest `sample`, `history` and health change.
    pub fn new(
        backend: BackendView<'a>,
        since: SystemTime,
        sample: Sample,
        history: Vec<f64>,
    ) -> Self {
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
