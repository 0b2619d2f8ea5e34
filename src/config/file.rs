//! The config file's format: serde structs that mirror the YAML exactly.
//!
//! These types are never used at run time. They only describe what a user may
//! write; [`super::Config::from_file`] turns them into checked runtime types.
//! Every struct denies unknown fields so a typo such as `helth_check` is an
//! error, never a silently ignored key.

use serde::Deserialize;
use std::time::Duration;

/// The whole YAML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Pingora's `ServerConf`, kept as raw YAML so its keys can be checked
    /// against the ones Pingora knows before it is deserialized.
    pub server: Option<serde_yaml_ng::Mapping>,
    /// Where to accept clients: each entry `host:port` or a mapping with
    /// `address` and `tls`, `http2`, `h2c` or `redirect_https`, kept raw so
    /// each entry's error can name its index.
    pub listeners: Option<Vec<serde_yaml_ng::Value>>,
    /// The backend pool: each entry is `host:port` or `{address, weight}`,
    /// kept raw so each entry's error can name its index.
    pub backends: Option<Vec<serde_yaml_ng::Value>>,
    /// Named pools, each with its own backends and balance.
    pub upstreams: Option<serde_yaml_ng::Mapping>,
    /// Which pool serves which host and path.
    pub routes: Option<Vec<super::routes::RouteFile>>,
    /// How the top-level backends (pool `default`) are balanced: as in an
    /// `upstreams:` entry.
    pub balance: Option<String>,
    /// `consistent_hash`'s key for the top-level backends.
    pub hash_key: Option<String>,
    /// `peak_ewma`'s decay time for the top-level backends.
    #[serde(default, with = "humantime_serde")]
    pub ewma_decay: Option<Duration>,
    /// Sticky sessions over the top-level backends.
    pub sticky: Option<super::pools::StickyFile>,
    /// Slow start of the top-level backends.
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Option<Duration>,
    /// Active health checks.
    pub health_check: Option<HealthCheckFile>,
    /// Retries of failed requests.
    pub retry: Option<RetryFile>,
    /// Ejection of backends whose requests fail.
    pub passive_health: Option<PassiveHealthFile>,
    /// `fail` or `try_all`: what to do when no backend is healthy.
    pub when_all_unhealthy: Option<WhenAllUnhealthy>,
    /// Time limits on each side.
    pub timeouts: Option<TimeoutsFile>,
    /// Size and count limits on what clients send.
    pub limits: Option<LimitsFile>,
    /// Re-resolving backend host names.
    pub discovery: Option<DiscoveryFile>,
    /// The admin API's listener.
    pub admin: Option<AdminFile>,
    /// The access log.
    pub access_log: Option<AccessLogFile>,
    /// Headers lb adds to requests and responses.
    pub headers: Option<HeadersFile>,
    /// Named policies (access, limits, header rules, auth...), kept raw
    /// so each one's error can name it.
    pub policies: Option<serde_yaml_ng::Mapping>,
    /// `http1`, `h2` or `h2c`: the protocol spoken to backends.
    pub backend_protocol: Option<String>,
    /// TLS to backends; present means backends are reached over TLS.
    pub backend_tls: Option<BackendTlsFile>,
    /// The Redis a fleet of replicas shares its cluster limits through.
    pub cluster: Option<super::cluster::ClusterFile>,
    /// Reload when the file or its certificates change (default true).
    pub watch_config: Option<bool>,
}

/// The `backend_tls:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsFile {
    /// Name sent as SNI and checked against the certificate; the backend's
    /// host name when absent.
    pub sni: Option<String>,
    /// Whether to check the backend's certificate (default true).
    pub verify: Option<bool>,
    /// PEM file of the CA certificates to trust instead of the system roots.
    pub ca: Option<std::path::PathBuf>,
}

/// The `headers:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    /// Add `X-Forwarded-For`, `-Proto` and `-Host` to requests.
    pub forwarded: Option<bool>,
    /// Pass `X-Request-Id` to the backend and back to the client, making
    /// one when the client sent none.
    pub request_id: Option<bool>,
    /// `replace` (the default) or `append`: an untrusted client's own
    /// `X-Forwarded-For`.
    pub client_forwarded_for: Option<ClientForwardedFor>,
    /// Pass on or start a W3C `traceparent`.
    pub trace_context: Option<bool>,
}

/// What lb does with the `X-Forwarded-For` a client not in
/// `trusted_proxies` sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientForwardedFor {
    /// lb's own replaces it.
    Replace,
    /// lb appends the client's address to it (lb's behaviour before).
    Append,
}

/// The `access_log:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// `text` or `json`.
    pub format: Option<AccessLogFormat>,
    /// `stdout` or a file path.
    pub path: Option<String>,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One line of `key=value` fields after the request line.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `discovery:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// Time between two resolutions of the backends' host names.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// A DNS server (`ip:port`) to ask instead of the system resolver.
    pub resolver: Option<String>,
    /// How long a name that no longer exists keeps its last addresses.
    #[serde(default, with = "humantime_serde")]
    pub hold_missing: Option<Duration>,
}

/// The `admin:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address of the admin API's listener.
    pub listen: Option<String>,
    /// Bearer token the admin API requires.
    pub token: Option<String>,
}

/// What lb does when every backend is unhealthy or ejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllUnhealthy {
    /// Answer 503 at once.
    #[default]
    Fail,
    /// Send traffic to every backend anyway (a health check can be wrong).
    TryAll,
}

/// What happens to the requests in flight to a backend that health checks
/// mark down (HAProxy's `on-marked-down`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMarkedDown {
    /// They go on until they end or time out.
    #[default]
    Keep,
    /// Their connections are shut down at once; the retry rules decide
    /// which go to another backend (`shutdown-sessions`).
    Close,
}

/// The long form of a backend entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// `host:port` or `http://host:port`.
    pub address: String,
    /// Relative share of requests; 1 when absent.
    pub weight: Option<i64>,
}

/// The `health_check:` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// `http`, `tcp` or `grpc`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Path of the probe request.
    pub path: Option<String>,
    /// Time between the starts of two rounds of checks.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Time one probe may take, connect included.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Host header of the probe.
    pub host: Option<String>,
    /// Statuses that count as a pass.
    pub expected_status: Option<Vec<u16>>,
    /// Consecutive passes for an unhealthy backend to come back.
    pub healthy_threshold: Option<i64>,
    /// Consecutive failures for a healthy backend to go out.
    pub unhealthy_threshold: Option<i64>,
    /// Whether an HTTP check keeps its connection for the next one.
    pub reuse_connection: Option<bool>,
    /// What happens to the requests in flight to a backend marked down.
    pub on_marked_down: Option<OnMarkedDown>,
}

/// The `retry:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Further tries after the first, each on a backend not yet tried.
    pub attempts: Option<i64>,
    /// Retries in flight may add at most this share of the active requests.
    pub budget_percent: Option<i64>,
    /// Retries always allowed in flight, whatever the budget says.
    pub budget_min_retries: Option<i64>,
}

/// The `passive_health:` section (outlier detection).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthFile {
    /// Failed requests in a row that eject a backend; 0 turns ejection off.
    pub consecutive_failures: Option<i64>,
    /// How long the first ejection lasts; it doubles on each repeat.
    #[serde(default, with = "humantime_serde")]
    pub ejection_time: Option<Duration>,
    /// The longest an ejection may last.
    #[serde(default, with = "humantime_serde")]
    pub max_ejection_time: Option<Duration>,
    /// The largest share of the pool that may be ejected at once.
    pub max_ejected_percent: Option<i64>,
    /// Whether a 5xx response counts as a failure.
    pub count_5xx: Option<bool>,
}

/// The `timeouts:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_response: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_header: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_body: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub tunnel_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub request: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub tls_handshake: Option<Duration>,
}

/// The `limits:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: Option<i64>,
    /// Most header fields in a request.
    pub max_request_headers: Option<i64>,
    /// Longest request target, in bytes.
    pub max_uri_bytes: Option<i64>,
    /// Largest request body, in bytes; 0 for no limit.
    pub max_body_bytes: Option<i64>,
    /// Most client connections open at once.
    pub max_connections: Option<i64>,
    /// Most client connections in their TLS handshake at once.
    pub max_tls_handshakes: Option<i64>,
}
