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

/// `GET /api/status`: which lb this is and which config it runs, so that
/// the replicas of a fleet can be compared.
#[derive(Debug, Serialize)]
pub struct StatusView<'a> {
    pub version: &'static str,
    pub pid: u32,
    /// The hash of the config running, as `lb -t` and `lb_config_info`
    /// show it.
    pub config_hash: &'a str,
    /// The config file, when lb runs with one.
    pub config_file: Option<String>,
    /// `shared` while cluster rate limits are counted in Redis, `local`
    /// while each replica decides alone; none without a `cluster:` section.
    pub cluster_limits: Option<&'static str>,
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
    /// Each policy's decisions so far, by name.
    pub policies: Vec<PolicyView<'a>>,
}

/// One policy in `GET /api/stats`: its decisions, as
/// `lb_policy_decisions_total` counts them.
#[derive(Debug, Serialize)]
pub struct PolicyView<'a> {
    pub name: &'a str,
    pub allowed: u64,
    pub denied: u64,
    pub limited: u64,
    pub unauthorized: u64,
}

impl<'a> PolicyView<'a> {
    /// The view of the counts `[allowed, denied, limited, unauthorized, _]`.
    pub fn new(name: &'a str, counts: [u64; 5]) -> Self {
        PolicyView {
            name,
            allowed: counts[0],
            denied: counts[1],
            limited: counts[2],
            unauthorized: counts[3],
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backend() -> BackendView {
        BackendView {
            address: "127.0.0.1:8001".into(),
            entry: "be1:8001".into(),
            weight: 2,
            healthy: true,
            ejected: false,
            draining: false,
            in_flight: 1,
            requests: 10,
            errors: 1,
            last_health_check: Some(CheckView::from(CheckRecord {
                at: SystemTime::UNIX_EPOCH + Duration::from_millis(90_700),
                passed: false,
                detail: "connection refused".into(),
            })),
        }
    }

    #[test]
    fn a_health_check_shows_its_time_to_the_second_in_rfc_3339() {
        let json = serde_json::to_value(backend()).expect("serialize");
        let check = &json["last_health_check"];
        assert_eq!(check["at"], "1970-01-01T00:01:30Z");
        assert_eq!(check["passed"], false);
        assert_eq!(check["detail"], "connection refused");
    }

    #[test]
    fn a_backends_stats_carry_its_fields_at_the_top_level() {
        let sample = Sample {
            rps: 12.5,
            error_rate: 0.1,
            p50_ms: Some(3.0),
            p99_ms: None,
        };
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        let stats = BackendStatsView::new(backend(), since, sample, vec![1.0, 2.0]);
        let json = serde_json::to_value(stats).expect("serialize");
        assert_eq!(json["address"], "127.0.0.1:8001", "{json}");
        assert_eq!(json["weight"], 2);
        assert_eq!(json["health_since"], "1970-01-02T00:00:00Z");
        assert_eq!(json["rps"], 12.5);
        assert_eq!(json["p99_ms"], serde_json::Value::Null);
        assert_eq!(json["history"], serde_json::json!([1.0, 2.0]));
        assert!(json.get("backend").is_none(), "flattened: {json}");
    }
}
