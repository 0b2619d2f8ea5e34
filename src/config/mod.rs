//! Configuration: the YAML file and command-line overrides, checked and turned
//! into the typed runtime [`Config`].
//!
//! Two stages, two types: [`file`] mirrors what the user wrote; [`Config`] holds
//! resolved addresses, durations and non-zero counts. [`Config::load`] is the
//! one place that combines them, with this precedence: command-line flag, then
//! the file, then the defaults documented in the README. Every problem found is
//! reported, each with the key it is about, rather than only the first.

mod backends;
mod checks;
mod cluster;
mod file;
mod limit_kinds;
mod listeners;
mod overrides;
mod policies;
mod policy_kinds;
mod pools;
mod resilience;
mod routes;
mod sections;
mod server;
mod transport;

pub use checks::Problem;
use checks::Problems;
pub use cluster::{redis_without_password, ClusterConfig};
pub use overrides::Overrides;

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backends::parse_backends;
use file::FileConfig;
use listeners::{exposed_keys, parse_listeners};
use pingora::server::configuration::ServerConf;
use sections::{parse_discovery, parse_health_check};

pub use file::{AccessLogFormat, OnMarkedDown, WhenAllUnhealthy};
pub use limit_kinds::parse_rate;
pub use listeners::{
    CertificateFiles, ListenerConfig, ListenerEdge, ListenerKind, MinTlsVersion, TlsListenerConfig,
};
pub use policies::{
    AccessConfig, BasicAuthConfig, CompressionConfig, ConnectionLimitConfig, CorsConfig,
    ForwardAuthConfig, HeaderRules, LimitKey, LimitScope, PolicyConfig, RateLimitConfig,
};
pub use policy_kinds::HEADER_PLACEHOLDERS;
pub use pools::{Balance, HashKey, PoolConfig, Sticky, DEFAULT_POOL};
pub use resilience::{LimitsConfig, PassiveHealthConfig, RetryConfig, TimeoutsConfig};
pub use routes::{RedirectConfig, RewriteConfig, RouteConfig, REDIRECT_PLACEHOLDERS};
pub use server::{drain_window, runtime_name};
pub use transport::{
    BackendProtocol, BackendTls, BackendTransport, CaCertificates, HealthCheckKind,
};

/// Which headers lb adds to what it forwards. Both on by default; off, lb
/// forwards requests as a bare proxy would (for like-for-like benchmarks, or
/// behind another proxy that adds them).
#[derive(Debug, Clone, Copy)]
pub struct HeadersConfig {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    pub forwarded: bool,
    /// `X-Request-Id` to the backend and back to the client.
    pub request_id: bool,
    /// What becomes of an untrusted client's own `X-Forwarded-For`:
    /// replaced by lb's (the default), or appended to (`append`).
    pub append_client_forwarded_for: bool,
    /// W3C `traceparent`: passed on when valid, started when absent.
    pub trace_context: bool,
}

/// Where lb listens when neither the file nor `--listen` says.
pub const DEFAULT_LISTENER: &str = "0.0.0.0:8000";

/// The checked configuration lb runs with.
#[derive(Debug)]
pub struct Config {
    /// Pingora's own settings (threads, pid file, upgrade socket, grace periods).
    pub server: ServerConf,
    /// Where clients connect, and what each listener speaks.
    pub listeners: Vec<ListenerConfig>,
    /// The named policies listeners and routes apply.
    pub policies: Vec<PolicyConfig>,
    /// The backend pool, in the order written.
    pub backends: Vec<BackendConfig>,
    /// How lb connects to the backends: protocol and TLS.
    pub backend_transport: BackendTransport,
    /// Every pool: `default` (the top-level `backends`) first when there
    /// is one, then the named `upstreams` in the order written.
    pub pools: Vec<PoolConfig>,
    /// Which pool serves which requests; none: all go to the first pool.
    pub routes: Vec<RouteConfig>,
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
    /// The Redis the replicas of a fleet share cluster limits through.
    pub cluster: Option<ClusterConfig>,
    /// Whether lb reloads when the file or its certificates change.
    pub watch_config: bool,
    /// The first hex digits of the SHA-256 of the file (and flags): which
    /// config this replica runs.
    pub hash: String,
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
    /// How long a name that no longer exists (NXDOMAIN, no address record)
    /// keeps its last addresses in the pool before they are dropped.
    pub hold_missing: Duration,
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
    /// What the probe sends: an HTTP request, a connection, or a gRPC call.
    pub kind: HealthCheckKind,
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
    /// An `http` check keeps its connection for the next check of the same
    /// backend (Envoy's `reuse_connection`); off, each check connects anew
    /// (HAProxy's way).
    pub reuse_connection: bool,
    /// `close`: a backend marked down has its requests' connections shut
    /// down at once (retried where the retry rules allow).
    pub on_marked_down: OnMarkedDown,
}

/// One line per problem.
fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What lb reads from its environment, beside the file and the flags.
struct Environment {
    /// `LB_ADMIN_TOKEN`: the admin token when the file sets none.
    admin_token: Option<String>,
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
    /// The file parsed, but values in it are wrong: one line per problem,
    /// each naming its key.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Reads `path` (when given), applies `overrides` and checks the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (file, text) = match path {
            Some(path) => {
                let text = read_text(path)?;
                (parse_text(path, &text)?, text)
            }
            None => (FileConfig::default(), String::new()),
        };
        // What lb reads beyond the file, in one visible step: the
        // environment before the checks, DNS after them.
        let environment = Environment {
            admin_token: std::env::var("LB_ADMIN_TOKEN").ok(),
        };
        let mut config = Config::from_file(file, overrides, &environment)?;
        config.hash = cluster::config_hash(text.as_bytes(), overrides);
        config.warnings = unresolved_backends(&config.backends)
            .into_iter()
            .chain(config.warnings)
            .collect();
        Ok(config)
    }

    /// Checks a parsed file with its overrides and builds the runtime config,
    /// collecting every problem.
    fn from_file(
        mut file: FileConfig,
        overrides: &Overrides,
        environment: &Environment,
    ) -> Result<Config, ConfigError> {
        let mut errors = Problems::default();
        let top_balancing = pools::BalancingFile::take_top(&mut file);
        let (mut server, pool_size_written) =
            server::build_section(file.server.take(), &mut errors);
        overrides.server_paths(&mut server);
        let listeners = overrides.listeners(file.listeners.take(), &mut errors);
        let listeners = parse_listeners(&listeners, &mut errors);

        let (has_default, backends) = top_backends(&mut file, overrides, &mut errors);
        let top_health = overrides.health_check(file.health_check.take());
        let health_check = parse_health_check(top_health.clone(), &mut errors);
        let (retry, passive_health, timeouts, limits) =
            resilience::parse_sections(&mut file, &mut errors);
        let discovery = parse_discovery(file.discovery.unwrap_or_default(), &mut errors);
        let admin = overrides.admin(file.admin.take(), environment, &mut errors);
        let mut warnings = server_and_listener_warnings(&server, &listeners);
        let backend_transport = transport::parse_transport(
            "",
            file.backend_protocol,
            file.backend_tls,
            &mut errors,
            &mut warnings,
        );
        transport::check_kind_fits(health_check.kind, &backend_transport, &mut errors);
        warnings.extend(transport::ip_backend_warnings(
            &backend_transport,
            &backends,
        ));
        let balancing = pools::parse_top_balancing(top_balancing, has_default, &mut errors);
        let default = has_default.then(|| PoolConfig {
            name: DEFAULT_POOL.to_string(),
            backends: backends.clone(),
            balancing,
            health_check: health_check.clone(),
            backend_transport: backend_transport.clone(),
        });
        let (pools, routes) = routes::parse_pools_and_routes(
            default,
            file.upstreams.take(),
            file.routes.take(),
            &top_health,
            &mut errors,
            &mut warnings,
        );
        let policies = parse_policies(file.policies.take(), &listeners, &routes, &mut errors);
        let cluster = cluster::parse_cluster(file.cluster.take(), &mut errors);
        cluster::check_scopes(&policies, cluster.as_ref(), &mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors.into_vec()));
        }
        server::size_keepalive_pool(&mut server, pool_size_written, &pools);
        Ok(Config {
            server,
            listeners,
            policies,
            backends,
            backend_transport,
            pools,
            routes,
            health_check,
            retry,
            passive_health,
            when_all_unhealthy: file.when_all_unhealthy.unwrap_or_default(),
            timeouts,
            limits,
            discovery,
            admin,
            access_log: file.access_log.map(AccessLogConfig::of),
            headers: HeadersConfig::of(file.headers.unwrap_or_default()),
            cluster,
            watch_config: file.watch_config.unwrap_or(true) && !overrides.no_watch_config,
            hash: String::new(),
            warnings,
        })
    }
}

/// Whether the top-level `backends:` make the pool `default`, and its
/// backends: with named pools, it may go.
fn top_backends(
    file: &mut FileConfig,
    overrides: &Overrides,
    errors: &mut Problems,
) -> (bool, Vec<BackendConfig>) {
    let has_default =
        file.backends.is_some() || !overrides.backends.is_empty() || file.upstreams.is_none();
    if !has_default {
        return (false, Vec::new());
    }
    let backends = parse_backends(&overrides.backends(file.backends.take()), errors);
    (true, backends)
}

/// The policies, and a check of every policy name the listeners and
/// routes give.
fn parse_policies(
    written: Option<serde_yaml_ng::Mapping>,
    listeners: &[ListenerConfig],
    routes: &[RouteConfig],
    errors: &mut Problems,
) -> Vec<PolicyConfig> {
    let policies = policies::parse_policies(written, errors);
    for (i, listener) in listeners.iter().enumerate() {
        let key = format!("listeners[{i}].policies");
        policies::check_chain(&key, &listener.edge.policies, &policies, errors);
    }
    for route in routes {
        let key = format!("{}.policies", route.name);
        policies::check_chain(&key, &route.policies, &policies, errors);
    }
    policies
}

/// The warnings about the server section and the listeners: no time to
/// drain, keys others can read.
fn server_and_listener_warnings(server: &ServerConf, listeners: &[ListenerConfig]) -> Vec<String> {
    server::drain_warning(server)
        .into_iter()
        .chain(exposed_keys(listeners))
        .collect()
}

/// A warning for each backend host name that has no address yet.
fn unresolved_backends(backends: &[BackendConfig]) -> Vec<String> {
    backends
        .iter()
        .filter(|b| b.host.parse::<std::net::IpAddr>().is_err())
        .filter(|b| {
            (b.host.as_str(), b.port)
                .to_socket_addrs()
                .map_or(true, |mut a| a.next().is_none())
        })
        .map(|b| {
            format!(
                "backends: host {:?} has no address yet; lb asks again every discovery.interval",
                b.host
            )
        })
        .collect()
}

impl AccessLogConfig {
    fn of(written: file::AccessLogFile) -> Self {
        AccessLogConfig {
            format: written.format.unwrap_or_default(),
            target: match written.path.as_deref() {
                None | Some("stdout") | Some("-") => AccessLogTarget::Stdout,
                Some(path) => AccessLogTarget::File(PathBuf::from(path)),
            },
        }
    }
}

impl HeadersConfig {
    fn of(written: file::HeadersFile) -> Self {
        HeadersConfig {
            forwarded: written.forwarded.unwrap_or(true),
            request_id: written.request_id.unwrap_or(true),
            append_client_forwarded_for: written.client_forwarded_for
                == Some(file::ClientForwardedFor::Append),
            trace_context: written.trace_context.unwrap_or(false),
        }
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_text(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    // An empty file is a valid, empty config (serde sees YAML null).
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
