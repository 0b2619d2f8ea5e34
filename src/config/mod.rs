//! Configuration: the YAML file and command-line overrides, checked and turned
//! into the typed runtime [`Config`].
//!
//! Two stages, two types: [`file`] mirrors what the user wrote; [`Config`] holds
//! resolved addresses, durations and non-zero counts. [`Config::load`] is the
//! one place that combines them, with this precedence: command-line flag, then
//! the file, then the defaults documented in the README. Every problem found is
//! reported, each with the key it is about, rather than only the first.

mod file;
mod resilience;
mod server;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use file::{AdminFile, BackendFile, DiscoveryFile, FileConfig, HealthCheckFile};
use pingora::server::configuration::ServerConf;

pub use file::{AccessLogFormat, WhenAllUnhealthy};
pub use resilience::{LimitsConfig, PassiveHealthConfig, RetryConfig, TimeoutsConfig};
pub use server::drain_window;

/// Which headers lb adds to what it forwards. Both on by default; off, lb
/// forwards requests as a bare proxy would (for like-for-like benchmarks, or
/// behind another proxy that adds them).
#[derive(Debug, Clone, Copy)]
pub struct HeadersConfig {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    pub forwarded: bool,
    /// `X-Request-Id` to the backend and back to the client.
    pub request_id: bool,
}

/// Where lb listens when neither the file nor `--listen` says.
pub const DEFAULT_LISTENER: &str = "0.0.0.0:8000";

/// The checked configuration lb runs with.
#[derive(Debug)]
pub struct Config {
    /// Pingora's own settings (threads, pid file, upgrade socket, grace periods).
    pub server: ServerConf,
    /// Addresses clients connect to.
    pub listeners: Vec<SocketAddr>,
    /// The backend pool, in the order written.
    pub backends: Vec<BackendConfig>,
    /// Active health checks of every backend.
    pub health_check: HealthCheckConfig,
    /// Retries of failed requests and their budget.
    pub retry: RetryConfig,
    /// Ejection of backends whose requests fail.
    pub passive_health: PassiveHealthConfig,
    /// What to do when no backend is healthy.
    pub when_all_unhealthy: WhenAllUnhealthy,
    /// Time limits.
    pub timeouts: TimeoutsConfig,
    /// Limits on what clients send.
    pub limits: LimitsConfig,
    /// Re-resolution of backend host names.
    pub discovery: DiscoveryConfig,
    /// The admin API, when it has a listener.
    pub admin: Option<AdminConfig>,
    /// The access log; when absent, requests are logged through `RUST_LOG`
    /// (target `lb::access`).
    pub access_log: Option<AccessLogConfig>,
    /// Which headers lb adds.
    pub headers: HeadersConfig,
    /// Things worth saying that do not stop lb (`lb -t` prints them).
    pub warnings: Vec<String>,
}

/// The access log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    pub target: AccessLogTarget,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// How backend host names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Time between two resolutions.
    pub interval: Duration,
    /// A DNS server to ask instead of the system resolver.
    pub resolver: Option<SocketAddr>,
}

/// The admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address of its listener.
    pub listen: SocketAddr,
    /// Bearer token every request must carry; required beyond loopback.
    pub token: Option<String>,
}

/// One backend of the pool, as configured: an IP address, or a host name
/// whose every address becomes a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// IP address or host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative share of requests: a backend of weight 2 gets twice the
    /// requests of one of weight 1.
    pub weight: NonZeroUsize,
}

/// How backends are probed.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// Path of the `GET` probe, starting with `/`.
    pub path: String,
    /// Time between the starts of two rounds of probes.
    pub interval: Duration,
    /// Time one probe may take, connecting included.
    pub timeout: Duration,
    /// Host header of the probe.
    pub host: String,
    /// Response statuses that count as a pass.
    pub expected_status: Vec<u16>,
    /// Consecutive passes before an unhealthy backend gets traffic again.
    pub healthy_threshold: NonZeroUsize,
    /// Consecutive failures before a healthy backend stops getting traffic.
    pub unhealthy_threshold: NonZeroUsize,
}

/// Settings given on the command line; each replaces the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`: replaces the whole `listeners` list when not empty.
    pub listen: Vec<String>,
    /// `--backend`: replaces the whole `backends` list when not empty.
    pub backends: Vec<String>,
    /// `--health-check-path`.
    pub health_check_path: Option<String>,
    /// `--health-check-interval`.
    pub health_check_interval: Option<Duration>,
    /// `--health-check-timeout`.
    pub health_check_timeout: Option<Duration>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed, but values in it are wrong: one line per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `path` (when given), applies `overrides` and checks the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::from_file(file, overrides)
    }

    /// Checks a parsed file with its overrides and builds the runtime config,
    /// collecting every problem.
    fn from_file(file: FileConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();

        let server = server::build(file.server.unwrap_or_default(), &mut errors);

        let listeners = if overrides.listen.is_empty() {
            file.listeners
                .unwrap_or_else(|| vec![DEFAULT_LISTENER.to_string()])
        } else {
            overrides.listen.clone()
        };
        let listeners = parse_listeners(&listeners, &mut errors);

        let backends = if overrides.backends.is_empty() {
            file.backends.unwrap_or_default()
        } else {
            overrides
                .backends
                .iter()
                .map(|b| serde_yaml_ng::Value::String(b.clone()))
                .collect()
        };
        let backends = parse_backends(&backends, &mut errors);

        let mut health_check = file.health_check.unwrap_or_default();
        if let Some(path) = &overrides.health_check_path {
            health_check.path = Some(path.clone());
        }
        if let Some(interval) = overrides.health_check_interval {
            health_check.interval = Some(interval);
        }
        if let Some(timeout) = overrides.health_check_timeout {
            health_check.timeout = Some(timeout);
        }
        let health_check = parse_health_check(health_check, &mut errors);
        let retry = resilience::parse_retry(file.retry.unwrap_or_default(), &mut errors);
        let passive_health =
            resilience::parse_passive_health(file.passive_health.unwrap_or_default(), &mut errors);
        let timeouts = resilience::parse_timeouts(file.timeouts.unwrap_or_default(), &mut errors);
        let limits = resilience::parse_limits(file.limits.unwrap_or_default(), &mut errors);
        let discovery = parse_discovery(file.discovery.unwrap_or_default(), &mut errors);
        let mut admin = file.admin.unwrap_or_default();
        if let Some(listen) = &overrides.admin_listen {
            admin.listen = Some(listen.clone());
        }
        let admin = parse_admin(admin, std::env::var("LB_ADMIN_TOKEN").ok(), &mut errors);
        let mut warnings: Vec<String> = backends
            .iter()
            .filter(|b| b.host.parse::<std::net::IpAddr>().is_err())
            .filter(|b| (b.host.as_str(), b.port).to_socket_addrs().map_or(true, |mut a| a.next().is_none()))
            .map(|b| {
                format!(
                    "backends: host {:?} has no address yet; lb asks again every discovery.interval",
                    b.host
                )
            })
            .collect();
        warnings.extend(server::drain_warning(&server));

        if errors.is_empty() {
            Ok(Config {
                server,
                listeners,
                backends,
                health_check,
                retry,
                passive_health,
                when_all_unhealthy: file.when_all_unhealthy.unwrap_or_default(),
                timeouts,
                limits,
                discovery,
                admin,
                access_log: file.access_log.map(|a| AccessLogConfig {
                    format: a.format.unwrap_or_default(),
                    target: match a.path.as_deref() {
                        None | Some("stdout") | Some("-") => AccessLogTarget::Stdout,
                        Some(path) => AccessLogTarget::File(PathBuf::from(path)),
                    },
                }),
                headers: HeadersConfig {
                    forwarded: file
                        .headers
                        .as_ref()
                        .and_then(|h| h.forwarded)
                        .unwrap_or(true),
                    request_id: file
                        .headers
                        .as_ref()
                        .and_then(|h| h.request_id)
                        .unwrap_or(true),
                },
                warnings,
            })
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // An empty file is a valid, empty config (serde sees YAML null).
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse_listeners(listeners: &[String], errors: &mut Vec<String>) -> Vec<SocketAddr> {
    if listeners.is_empty() {
        errors.push(
            "listeners: the list is empty; give at least one address such as 0.0.0.0:8000".into(),
        );
    }
    listeners
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match resolve(text) {
            Ok(addr) => Some(addr),
            Err(why) => {
                errors.push(format!("listeners[{i}]: {text:?}: {why}"));
                None
            }
        })
        .collect()
}

fn parse_backends(
    entries: &[serde_yaml_ng::Value],
    errors: &mut Vec<String>,
) -> Vec<BackendConfig> {
    if entries.is_empty() {
        errors.push(
            "backends: the list is empty; give at least one backend (in the file or with --backend)"
                .into(),
        );
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match parse_backend(entry) {
            Ok(backend)
                if backends
                    .iter()
                    .any(|b| b.host == backend.host && b.port == backend.port) =>
            {
                errors.push(format!(
                    "backends[{i}]: {}:{} is listed twice",
                    backend.host, backend.port
                ))
            }
            Ok(backend) => backends.push(backend),
            Err(why) => errors.push(format!("backends[{i}]{why}")),
        }
    }
    backends
}

/// Parses one `backends:` entry. The error starts with the sub-key it is about
/// (`.weight: ...`) or with `: ` when it is about the entry as a whole.
fn parse_backend(entry: &serde_yaml_ng::Value) -> Result<BackendConfig, String> {
    let written: BackendFile = match entry {
        serde_yaml_ng::Value::String(address) => BackendFile {
            address: address.clone(),
            weight: None,
        },
        serde_yaml_ng::Value::Mapping(_) => {
            serde_yaml_ng::from_value(entry.clone()).map_err(|e| format!(": {e}"))?
        }
        other => {
            return Err(format!(
                ": expected \"host:port\" or {{address: host:port, weight: N}}, found {}",
                describe(other)
            ))
        }
    };
    let (host, port) = parse_backend_address(&written.address)
        .map_err(|why| format!(".address: {:?}: {why}", written.address))?;
    let weight = match written.weight {
        None => NonZeroUsize::MIN,
        Some(w) => usize::try_from(w)
            .ok()
            .and_then(NonZeroUsize::new)
            .filter(|w| w.get() <= MAX_WEIGHT)
            .ok_or_else(|| {
                format!(".weight: {w}: must be a whole number from 1 to {MAX_WEIGHT}")
            })?,
    };
    Ok(BackendConfig { host, port, weight })
}

impl BackendConfig {
    /// A backend given at run time (the admin API): `host:port` or
    /// `http://host:port`, weight 1 to 1000.
    pub fn parse(address: &str, weight: Option<i64>) -> Result<BackendConfig, String> {
        let entry = BackendFile {
            address: address.to_string(),
            weight,
        };
        let value = serde_yaml_ng::to_value(&entry).map_err(|e| e.to_string())?;
        parse_backend(&value).map_err(|why| format!("backend{why}"))
    }
}

/// Weights repeat a backend in the selection ring, so they are kept small.
const MAX_WEIGHT: usize = 1000;

/// Accepts `host:port`, `http://host:port` and `http://host:port/`, where
/// host is an IP address (IPv6 in brackets) or a DNS name. Names are not
/// resolved here: discovery resolves them, again every interval.
fn parse_backend_address(text: &str) -> Result<(String, u16), String> {
    let trimmed = text.trim();
    let without_scheme = match trimmed.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme {scheme}:// is not supported; use http:// or none"
            ))
        }
        None => trimmed,
    };
    let authority = without_scheme.strip_suffix('/').unwrap_or(without_scheme);
    if authority.contains('/') {
        return Err("a backend is host:port, without a path".into());
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err("missing port: write host:port".into());
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err("missing host: write host:port".into());
    }
    let valid_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid_name {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok((host.to_string(), port))
}

/// Turns `host:port` into one socket address, resolving a host name once.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("missing port: write host:port".into());
    };
    if host.is_empty() {
        return Err("missing host: write host:port".into());
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} has no address"))
}

fn parse_health_check(written: HealthCheckFile, errors: &mut Vec<String>) -> HealthCheckConfig {
    let path = written.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        errors.push(format!("health_check.path: {path:?}: must start with /"));
    }
    let interval = written.interval.unwrap_or(Duration::from_secs(10));
    if interval.is_zero() {
        errors.push("health_check.interval: 0s: must be more than zero".into());
    }
    let timeout = written.timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        errors.push("health_check.timeout: 0s: must be more than zero".into());
    }
    let expected_status = written.expected_status.unwrap_or_else(|| vec![200]);
    if expected_status.is_empty() {
        errors.push("health_check.expected_status: the list is empty".into());
    }
    for status in &expected_status {
        if !(100..=599).contains(status) {
            errors.push(format!(
                "health_check.expected_status: {status}: not an HTTP status (100 to 599)"
            ));
        }
    }
    let mut threshold = |key: &str, value: Option<i64>| {
        let value = value.unwrap_or(1);
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or_else(|| {
                errors.push(format!(
                    "health_check.{key}: {value}: must be a whole number of at least 1"
                ));
                NonZeroUsize::MIN
            })
    };
    let healthy_threshold = threshold("healthy_threshold", written.healthy_threshold);
    let unhealthy_threshold = threshold("unhealthy_threshold", written.unhealthy_threshold);
    HealthCheckConfig {
        path,
        interval,
        timeout,
        host: written.host.unwrap_or_else(|| "localhost".into()),
        expected_status,
        healthy_threshold,
        unhealthy_threshold,
    }
}

fn parse_discovery(written: DiscoveryFile, errors: &mut Vec<String>) -> DiscoveryConfig {
    let interval = written.interval.unwrap_or(Duration::from_secs(5));
    if interval.is_zero() {
        errors.push("discovery.interval: 0s: must be more than zero".into());
    }
    let resolver = written
        .resolver
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(format!(
                    "discovery.resolver: {text:?}: must be ip:port, e.g. 127.0.0.1:53"
                ));
                None
            }
        });
    DiscoveryConfig { interval, resolver }
}

/// The admin section; `env_token` is `LB_ADMIN_TOKEN`, used when the file
/// sets no token.
fn parse_admin(
    written: AdminFile,
    env_token: Option<String>,
    errors: &mut Vec<String>,
) -> Option<AdminConfig> {
    let AdminFile { listen, token } = written;
    let token = token.or(env_token).filter(|t| !t.is_empty());
    // A token without a listener is harmless: LB_ADMIN_TOKEN may be set for later.
    let text = listen?;
    let listen = match resolve(&text) {
        Ok(addr) => addr,
        Err(why) => {
            errors.push(format!("admin.listen: {text:?}: {why}"));
            return None;
        }
    };
    if !listen.ip().is_loopback() && token.is_none() {
        errors.push(format!(
            "admin.token: required when admin.listen ({listen}) is not a loopback address; set it or LB_ADMIN_TOKEN"
        ));
    }
    Some(AdminConfig { listen, token })
}

/// Names a YAML value's kind for error messages.
fn describe(value: &serde_yaml_ng::Value) -> &'static str {
    use serde_yaml_ng::Value;
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl Config {
    /// The settings as (name, value) rows, in the order `lb -t` shows them.
    pub fn summary_rows(&self) -> Vec<(String, String)> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut rows = vec![(
            "listeners".to_string(),
            self.listeners
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )];
        for b in &self.backends {
            rows.push((
                "backend".into(),
                format!("{}:{} weight {}", b.host, b.port, b.weight),
            ));
        }
        let hc = &self.health_check;
        rows.push((
            "health check".into(),
            format!(
                "GET {} (Host: {}) every {}, timeout {}, pass on {:?}, up after {}, down after {}",
                hc.path,
                hc.host,
                d(hc.interval),
                d(hc.timeout),
                hc.expected_status,
                hc.healthy_threshold,
                hc.unhealthy_threshold
            ),
        ));
        let t = &self.timeouts;
        rows.push((
            "timeouts".into(),
            format!(
                "connect {}, upstream response {}, upstream idle {}, client header {}, client body {}, client idle {}, tunnel idle {}, request {}",
                d(t.connect),
                d(t.upstream_response),
                d(t.upstream_idle),
                d(t.client_header),
                d(t.client_body),
                d(t.client_idle),
                d(t.tunnel_idle),
                if t.request.is_zero() { "none".into() } else { d(t.request) }
            ),
        ));
        let on_off = |on: bool| if on { "on" } else { "off" };
        rows.push((
            "headers".into(),
            format!(
                "X-Forwarded-For/-Proto/-Host {}, X-Request-Id {}",
                on_off(self.headers.forwarded),
                on_off(self.headers.request_id)
            ),
        ));
        let r = &self.retry;
        rows.push((
            "retry".into(),
            format!(
                "{} attempt(s), budget {}% of active requests (at least {})",
                r.attempts, r.budget_percent, r.budget_min_retries
            ),
        ));
        let p = &self.passive_health;
        rows.push((
            "passive health".into(),
            if p.consecutive_failures == 0 {
                "off".into()
            } else {
                format!(
                    "eject after {} failures in a row for {} (up to {}), at most {}% of the pool, 5xx {}",
                    p.consecutive_failures,
                    d(p.ejection_time),
                    d(p.max_ejection_time),
                    p.max_ejected_percent,
                    if p.count_5xx { "counts" } else { "does not count" }
                )
            },
        ));
        rows.push((
            "when all unhealthy".into(),
            match self.when_all_unhealthy {
                WhenAllUnhealthy::Fail => "fail (503)".into(),
                WhenAllUnhealthy::TryAll => "try_all".into(),
            },
        ));
        let l = &self.limits;
        rows.push((
            "limits".into(),
            format!(
                "header {} B, URI {} B, body {}, {} connections",
                l.max_header_bytes,
                l.max_uri_bytes,
                if l.max_body_bytes == 0 {
                    "unlimited".to_string()
                } else {
                    format!("{} B", l.max_body_bytes)
                },
                l.max_connections
            ),
        ));
        rows.push((
            "discovery".into(),
            format!(
                "every {} by {}",
                d(self.discovery.interval),
                self.discovery.resolver.map_or_else(
                    || "the system resolver".to_string(),
                    |r| format!("DNS server {r}")
                )
            ),
        ));
        rows.push((
            "admin".into(),
            match &self.admin {
                Some(a) => format!(
                    "http://{} ({})",
                    a.listen,
                    if a.token.is_some() {
                        "bearer token required"
                    } else {
                        "no token"
                    }
                ),
                None => "off".into(),
            },
        ));
        rows.push((
            "access log".into(),
            match &self.access_log {
                Some(a) => format!(
                    "{:?} to {}",
                    a.format,
                    match &a.target {
                        AccessLogTarget::Stdout => "stdout".to_string(),
                        AccessLogTarget::File(p) => p.display().to_string(),
                    }
                )
                .to_lowercase(),
                None => "through RUST_LOG (target lb::access)".into(),
            },
        ));
        let s = &self.server;
        rows.push(("threads".into(), s.threads.to_string()));
        rows.push((
            "grace period".into(),
            format!(
                "{}s, then {}s to shut down",
                s.grace_period_seconds.unwrap_or_default(),
                s.graceful_shutdown_timeout_seconds.unwrap_or_default()
            ),
        ));
        rows.push(("pid file".into(), s.pid_file.clone()));
        rows.push(("upgrade socket".into(), s.upgrade_sock.clone()));
        for warning in &self.warnings {
            rows.push(("warning".into(), warning.clone()));
        }
        rows
    }
}

impl fmt::Display for Config {
    /// The table `lb -t` prints: one setting a row, names aligned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.summary_rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (i, (key, value)) in rows.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{key:width$}  {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_yaml_ng::from_str(yaml).map_err(|e| ConfigError::Parse {
            path: "test.yaml".into(),
            message: e.to_string(),
        })?;
        Config::from_file(file, &Overrides::default())
    }

    fn error_text(yaml: &str) -> String {
        load_str(yaml)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn full_example_parses() {
        let config = load_str(
            "server: {threads: 2, grace_period_seconds: 5}\n\
             listeners: [127.0.0.1:8000]\n\
             backends: [127.0.0.1:8080, {address: 'http://127.0.0.1:8081', weight: 2}]\n\
             health_check: {path: /health, interval: 500ms, timeout: 2s, expected_status: [200, 204], healthy_threshold: 2}\n",
        )
        .unwrap();
        assert_eq!(config.server.threads, 2);
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[1].weight.get(), 2);
        assert_eq!(config.backends[1].port, 8081);
        assert_eq!(config.health_check.interval, Duration::from_millis(500));
        assert_eq!(config.health_check.healthy_threshold.get(), 2);
        assert_eq!(config.health_check.unhealthy_threshold.get(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = error_text(
            "server: {threds: 2}\n\
             listeners: [nowhere]\n\
             backends: [127.0.0.1, {address: 127.0.0.1:1, weight: 0}, {adress: x}]\n\
             health_check: {path: health, healthy_threshold: 0}\n",
        );
        for expected in [
            "server.threds",
            "listeners[0]: \"nowhere\"",
            "backends[0].address: \"127.0.0.1\": missing port",
            "backends[1].weight: 0",
            "backends[2]: unknown field `adress`",
            "health_check.path: \"health\"",
            "health_check.healthy_threshold: 0",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let text = error_text("backends: [127.0.0.1:1]\nhelth_check: {path: /}\n");
        assert!(text.contains("helth_check"), "{text}");
    }

    #[test]
    fn bad_duration_is_named() {
        let text = error_text("backends: [127.0.0.1:1]\nhealth_check: {interval: 10 parsecs}\n");
        assert!(text.contains("health_check.interval"), "{text}");
    }

    #[test]
    fn overrides_replace_file_values() {
        let file: FileConfig = serde_yaml_ng::from_str(
            "backends: [127.0.0.1:1, 127.0.0.1:2]\nlisteners: [127.0.0.1:3]\n",
        )
        .unwrap();
        let overrides = Overrides {
            listen: vec!["127.0.0.1:9".into()],
            backends: vec!["http://127.0.0.1:7".into()],
            health_check_interval: Some(Duration::from_secs(1)),
            ..Overrides::default()
        };
        let config = Config::from_file(file, &overrides).unwrap();
        assert_eq!(config.listeners, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(config.backends.len(), 1);
        assert_eq!(config.backends[0].port, 7);
        assert_eq!(config.health_check.interval, Duration::from_secs(1));
    }

    #[test]
    fn backend_address_forms() {
        assert!(parse_backend_address("127.0.0.1:80").is_ok());
        assert!(parse_backend_address("http://127.0.0.1:80/").is_ok());
        assert!(parse_backend_address("localhost:80").is_ok());
        assert!(parse_backend_address("https://127.0.0.1:80").is_err());
        assert!(parse_backend_address("127.0.0.1:80/x").is_err());
        assert!(parse_backend_address("127.0.0.1:99999").is_err());
        assert!(parse_backend_address("bad host!:80").is_err());
        assert_eq!(
            parse_backend_address("[::1]:80"),
            Ok(("::1".to_string(), 80))
        );
    }
}
