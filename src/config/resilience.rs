//! The sections that decide how lb copes with failures and hostile clients:
//! `retry`, `passive_health`, `timeouts` and `limits`, checked into runtime
//! types. Defaults follow HAProxy's and nginx's where they have one.

use std::time::Duration;

use super::checks::{positive_duration, whole_number, Problems};
use super::file::{LimitsFile, PassiveHealthFile, RetryFile, TimeoutsFile};

/// The defaults of the time limits, as the README documents them.
const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(10);
const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(5 * 60);
const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_POOL_RESPONSE: Duration = Duration::from_secs(30);
const DEFAULT_POOL_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_CLIENT_HEADER: Duration = Duration::from_secs(10);
const DEFAULT_CLIENT_BODY: Duration = Duration::from_secs(60);
const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(60 * 60);
const DEFAULT_TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// How failed requests are retried.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Further tries after the first, each on a backend not yet tried.
    pub attempts: usize,
    /// Retries in flight may add at most this percentage of active requests.
    pub budget_percent: usize,
    /// Retries always allowed in flight, however few requests are active.
    pub budget_min_retries: usize,
}

/// When a backend whose requests fail is ejected (outlier detection).
#[derive(Debug, Clone)]
pub struct PassiveHealthConfig {
    /// Failed requests in a row that eject a backend; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// Length of the first ejection; each repeat doubles it.
    pub ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Largest percentage of the pool ejected at once.
    pub max_ejected_percent: usize,
    /// Whether a 5xx response counts as a failure.
    pub count_5xx: bool,
}

/// Time limits. A zero `request` means no limit.
#[derive(Debug, Clone)]
pub struct TimeoutsConfig {
    /// Connecting to a backend; then lb tries another one, else 502.
    pub connect: Duration,
    /// Waiting for each read from a backend, the response headers included; 504.
    pub upstream_response: Duration,
    /// How long an unused keep-alive connection to a backend is kept.
    pub upstream_idle: Duration,
    /// Receiving a request's headers; the connection is then closed.
    pub client_header: Duration,
    /// A client keep-alive connection waiting for its next request.
    pub client_idle: Duration,
    /// Receiving a request's body, in total; 408.
    pub client_body: Duration,
    /// An upgraded connection (WebSocket) with no byte either way; closed.
    pub tunnel_idle: Duration,
    /// A whole request, from its headers to the end of its response; 504. Zero: none.
    pub request: Duration,
    /// A client's TLS handshake, from accept to its end; then it is shut down.
    pub tls_handshake: Duration,
}

/// Limits on what clients send.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest request head in bytes; 431 beyond it.
    pub max_header_bytes: usize,
    /// Most header fields in a request, on every protocol; 431 beyond it.
    pub max_request_headers: usize,
    /// Longest request target in bytes; 414 beyond it.
    pub max_uri_bytes: usize,
    /// Largest request body in bytes; 413 beyond it. Zero: no limit.
    pub max_body_bytes: u64,
    /// Most client connections open at once, TLS handshakes included;
    /// further ones are closed at once.
    pub max_connections: usize,
    /// Most client connections in their TLS handshake at once; further TLS
    /// connections are closed at once. Default: half of `max_connections`.
    pub max_tls_handshakes: usize,
}

/// Largest head Pingora itself reads (its `MAX_HEADER_SIZE`, about 1 MiB).
const PINGORA_MAX_HEADER_BYTES: i64 = 1_048_575;

/// Most header fields Pingora's HTTP/1 parser takes (its `MAX_HEADERS`):
/// lb answers 431 above `limits.max_request_headers` before Pingora parses,
/// so no larger limit could be kept.
pub const PINGORA_MAX_HEADERS: i64 = 256;

/// The four resilience sections (`retry`, `passive_health`, `timeouts`,
/// `limits`), taken out of `file` and checked.
pub(super) fn parse_sections(
    file: &mut super::file::FileConfig,
    errors: &mut Problems,
) -> (
    RetryConfig,
    PassiveHealthConfig,
    TimeoutsConfig,
    LimitsConfig,
) {
    (
        parse_retry(file.retry.take().unwrap_or_default(), errors),
        parse_passive_health(file.passive_health.take().unwrap_or_default(), errors),
        parse_timeouts(file.timeouts.take().unwrap_or_default(), errors),
        parse_limits(file.limits.take().unwrap_or_default(), errors),
    )
}

/// Checks the `retry:` section.
pub fn parse_retry(written: RetryFile, errors: &mut Problems) -> RetryConfig {
    RetryConfig {
        attempts: whole_number("retry.attempts", written.attempts, 2, 0, 10, errors) as usize,
        budget_percent: whole_number(
            "retry.budget_percent",
            written.budget_percent,
            20,
            0,
            100,
            errors,
        ) as usize,
        budget_min_retries: whole_number(
            "retry.budget_min_retries",
            written.budget_min_retries,
            3,
            0,
            1_000_000,
            errors,
        ) as usize,
    }
}

/// Checks the `passive_health:` section.
pub fn parse_passive_health(
    written: PassiveHealthFile,
    errors: &mut Problems,
) -> PassiveHealthConfig {
    let ejection_time = positive_duration(
        "passive_health.ejection_time",
        written.ejection_time,
        DEFAULT_EJECTION_TIME,
        errors,
    );
    let max_ejection_time = positive_duration(
        "passive_health.max_ejection_time",
        written.max_ejection_time,
        DEFAULT_MAX_EJECTION_TIME,
        errors,
    );
    if max_ejection_time < ejection_time {
        errors.add(
            "passive_health.max_ejection_time",
            format!(
                "{}: shorter than ejection_time ({})",
                humantime::format_duration(max_ejection_time),
                humantime::format_duration(ejection_time)
            ),
        );
    }
    PassiveHealthConfig {
        consecutive_failures: whole_number(
            "passive_health.consecutive_failures",
            written.consecutive_failures,
            3,
            0,
            1_000_000,
            errors,
        ) as u32,
        ejection_time,
        max_ejection_time,
        max_ejected_percent: whole_number(
            "passive_health.max_ejected_percent",
            written.max_ejected_percent,
            50,
            0,
            100,
            errors,
        ) as usize,
        count_5xx: written.count_5xx.unwrap_or(false),
    }
}

/// Checks the `timeouts:` section.
pub fn parse_timeouts(written: TimeoutsFile, errors: &mut Problems) -> TimeoutsConfig {
    let client_idle = positive_duration(
        "timeouts.client_idle",
        written.client_idle,
        DEFAULT_CLIENT_IDLE,
        errors,
    );
    if client_idle < Duration::from_secs(1) {
        errors.add(
            "timeouts.client_idle",
            "must be at least 1s (it is kept in whole seconds)",
        );
    }
    TimeoutsConfig {
        connect: positive_duration("timeouts.connect", written.connect, DEFAULT_CONNECT, errors),
        upstream_response: positive_duration(
            "timeouts.upstream_response",
            written.upstream_response,
            DEFAULT_POOL_RESPONSE,
            errors,
        ),
        upstream_idle: positive_duration(
            "timeouts.upstream_idle",
            written.upstream_idle,
            DEFAULT_POOL_IDLE,
            errors,
        ),
        client_header: positive_duration(
            "timeouts.client_header",
            written.client_header,
            DEFAULT_CLIENT_HEADER,
            errors,
        ),
        client_idle,
        client_body: positive_duration(
            "timeouts.client_body",
            written.client_body,
            DEFAULT_CLIENT_BODY,
            errors,
        ),
        tunnel_idle: positive_duration(
            "timeouts.tunnel_idle",
            written.tunnel_idle,
            DEFAULT_TUNNEL_IDLE,
            errors,
        ),
        request: written.request.unwrap_or(Duration::ZERO),
        tls_handshake: positive_duration(
            "timeouts.tls_handshake",
            written.tls_handshake,
            DEFAULT_TLS_HANDSHAKE,
            errors,
        ),
    }
}

/// Checks the `limits:` section.
pub fn parse_limits(written: LimitsFile, errors: &mut Problems) -> LimitsConfig {
    let max_connections = whole_number(
        "limits.max_connections",
        written.max_connections,
        10_000,
        1,
        10_000_000,
        errors,
    );
    LimitsConfig {
        max_header_bytes: whole_number(
            "limits.max_header_bytes",
            written.max_header_bytes,
            64 * 1024,
            1024,
            PINGORA_MAX_HEADER_BYTES,
            errors,
        ) as usize,
        // HAProxy's default is 101 (tune.http.maxhdr), nginx has none but
        // its buffer sizes.
        max_request_headers: whole_number(
            "limits.max_request_headers",
            written.max_request_headers,
            100,
            1,
            PINGORA_MAX_HEADERS,
            errors,
        ) as usize,
        max_uri_bytes: whole_number(
            "limits.max_uri_bytes",
            written.max_uri_bytes,
            8 * 1024,
            16,
            PINGORA_MAX_HEADER_BYTES,
            errors,
        ) as usize,
        max_body_bytes: whole_number(
            "limits.max_body_bytes",
            written.max_body_bytes,
            0,
            0,
            i64::MAX,
            errors,
        ) as u64,
        max_connections: max_connections as usize,
        max_tls_handshakes: whole_number(
            "limits.max_tls_handshakes",
            written.max_tls_handshakes,
            (max_connections / 2).max(1),
            1,
            max_connections.max(1),
            errors,
        ) as usize,
    }
}
