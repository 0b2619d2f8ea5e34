//! Named pools (`upstreams:`); the `routes:` that send requests to them are
//! in `routes.rs`.
//!
//! The seed's form stays valid: the top-level `backends:` (with the
//! top-level health check and transport) is the pool named `default`, and
//! without `routes:` every request goes to it. A named pool's unset
//! `health_check` keys come from the top-level section; every error names
//! its key (`upstreams.api.backends[0].address`, `routes[2].upstream`).

use serde::Deserialize;

use super::backends::parse_backends;
use super::checks::Problems;
use super::file::{BackendTlsFile, HealthCheckFile};
use super::sections::parse_health_check;
use super::transport::{self, BackendTransport};
use super::{BackendConfig, HealthCheckConfig};

/// `peak_ewma`'s decay time when the config gives none.
const DEFAULT_EWMA_DECAY: std::time::Duration = std::time::Duration::from_secs(10);

/// The name of the pool the top-level `backends:` make.
pub const DEFAULT_POOL: &str = "default";

/// How a pool picks a backend for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin, in a strict global order (Pingora's).
    #[default]
    RoundRobin,
    /// A backend at random, in proportion to its weight.
    Random,
    /// Two backends at random, the one with fewer requests in flight per
    /// unit of weight.
    LeastRequest,
    /// Two backends, the one with the lower peak-EWMA latency times
    /// requests in flight (Finagle's and Linkerd's balancer).
    PeakEwma,
    /// Ketama consistent hashing of a request key: the same key goes to the
    /// same backend while it is usable.
    ConsistentHash,
}

/// Sticky sessions: a cookie that names the backend a client's first
/// request went to, and sends its later requests there while it can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// The cookie's name.
    pub cookie: String,
    /// How long the client keeps it; a session cookie when absent.
    pub max_age: Option<std::time::Duration>,
}

/// An upstream's `sticky:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StickyFile {
    cookie: String,
    #[serde(default, with = "humantime_serde")]
    max_age: Option<std::time::Duration>,
}

/// What a `consistent_hash` pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The path, without the query.
    Path,
    /// The path and query.
    Uri,
    /// A request header's value (absent: an empty key).
    Header(http::HeaderName),
    /// A cookie's value (absent: an empty key).
    Cookie(String),
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::ClientIp => write!(f, "client_ip"),
            HashKey::Path => write!(f, "path"),
            HashKey::Uri => write!(f, "uri"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// Parses a `hash_key` value.
fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    match text {
        "client_ip" => return Ok(HashKey::ClientIp),
        "path" => return Ok(HashKey::Path),
        "uri" => return Ok(HashKey::Uri),
        _ => {}
    }
    if let Some(name) = text.strip_prefix("header:") {
        return http::HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("{text:?}: {name:?} is not a header name"));
    }
    if let Some(name) = text
        .strip_prefix("cookie:")
        .filter(|n| !n.trim().is_empty())
    {
        return Ok(HashKey::Cookie(name.trim().to_string()));
    }
    Err(format!(
        "{text:?}: write client_ip, path, uri, header:NAME or cookie:NAME"
    ))
}

impl Balance {
    /// The name the config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastRequest => "least_request",
            Balance::PeakEwma => "peak_ewma",
            Balance::ConsistentHash => "consistent_hash",
        }
    }
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Default)]
pub struct Balancing {
    /// The policy.
    pub balance: Balance,
    /// What `consistent_hash` hashes (None for the other balances).
    pub hash_key: Option<HashKey>,
    /// Stickiness by cookie, when configured.
    pub sticky: Option<Sticky>,
    /// `peak_ewma`'s decay time (None for the other balances).
    pub ewma_decay: Option<std::time::Duration>,
    /// How long a backend that returns (or is added) takes to ramp from a
    /// small share of its traffic to its full share; None: no ramp.
    pub slow_start: Option<std::time::Duration>,
}

impl Balancing {
    /// One line for `lb -t`: `consistent_hash of path, slow start 30s,
    /// sticky cookie lb_app`.
    pub fn describe(&self) -> String {
        let mut text = self.balance.as_str().to_string();
        if let Some(key) = &self.hash_key {
            text.push_str(&format!(" of {key}"));
        }
        if let Some(decay) = self.ewma_decay {
            text.push_str(&format!(", decay {}", humantime::format_duration(decay)));
        }
        if let Some(ramp) = self.slow_start {
            text.push_str(&format!(
                ", slow start {}",
                humantime::format_duration(ramp)
            ));
        }
        if let Some(sticky) = &self.sticky {
            text.push_str(&format!(", sticky cookie {}", sticky.cookie));
        }
        text
    }
}

/// One pool as configured.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Its name: `default` for the top-level `backends:`.
    pub name: String,
    /// Its backends, in the order written.
    pub backends: Vec<BackendConfig>,
    /// How a backend is picked.
    pub balancing: Balancing,
    /// Its active health checks.
    pub health_check: HealthCheckConfig,
    /// How lb connects to its backends.
    pub backend_transport: BackendTransport,
}

/// An `upstreams:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    backends: Vec<serde_yaml_ng::Value>,
    balance: Option<String>,
    hash_key: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ewma_decay: Option<std::time::Duration>,
    sticky: Option<StickyFile>,
    #[serde(default, with = "humantime_serde")]
    slow_start: Option<std::time::Duration>,
    health_check: Option<HealthCheckFile>,
    backend_protocol: Option<String>,
    backend_tls: Option<BackendTlsFile>,
}

/// The top-level backends' balancing (`balance`, `hash_key`, `ewma_decay`,
/// `sticky`, `slow_start` at the top level, taken out of the file with
/// [`BalancingFile::take_top`]); an error when one is set and there are no
/// top-level backends (`has_default`).
pub(super) fn parse_top_balancing(
    balancing: BalancingFile,
    has_default: bool,
    errors: &mut Problems,
) -> Balancing {
    if !has_default && balancing.is_written() {
        errors.add(
            "backends",
            "none, yet balance, hash_key, ewma_decay, sticky or slow_start is set at the top \
             level, where it is for the top-level backends; set it in upstreams:",
        );
    }
    parse_balancing("", balancing, errors)
}

/// Parses every named pool; `top_health` is the top-level section, whose
/// keys fill a pool's unset ones.
pub(super) fn parse_pools(
    written: serde_yaml_ng::Mapping,
    top_health: &HealthCheckFile,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> Vec<PoolConfig> {
    let mut upstreams = Vec::new();
    for (name, value) in written {
        let Some(name) = name.as_str().map(str::to_string) else {
            errors.add(
                "upstreams",
                format!("{name:?}: a pool's name must be a string"),
            );
            continue;
        };
        let key = format!("upstreams.{name}");
        if name == DEFAULT_POOL {
            errors.add(
                &key,
                "\"default\" is the pool of the top-level backends; give this pool another name",
            );
            continue;
        }
        match super::checks::from_section::<UpstreamFile>(value) {
            Ok(file) => {
                if let Some(upstream) =
                    parse_upstream(&key, name, file, top_health, errors, warnings)
                {
                    upstreams.push(upstream);
                }
            }
            Err((sub_key, message)) => errors.add(format!("{key}{sub_key}"), message),
        }
    }
    upstreams
}

fn parse_upstream(
    key: &str,
    name: String,
    file: UpstreamFile,
    top_health: &HealthCheckFile,
    errors: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<PoolConfig> {
    let before = errors.len();
    let backends = prefixed(key, errors, |e| parse_backends(&file.backends, e));
    let balancing = parse_balancing(
        &format!("{key}."),
        BalancingFile {
            balance: file.balance,
            hash_key: file.hash_key,
            ewma_decay: file.ewma_decay,
            sticky: file.sticky,
            slow_start: file.slow_start,
        },
        errors,
    );
    let health = merged_health(file.health_check.unwrap_or_default(), top_health);
    let health_check = prefixed(key, errors, |e| parse_health_check(health, e));
    let backend_transport = transport::parse_transport(
        &format!("{key}."),
        file.backend_protocol,
        file.backend_tls,
        errors,
        warnings,
    );
    transport::check_kind_fits(health_check.kind, &backend_transport, errors);
    (errors.len() == before).then_some(PoolConfig {
        name,
        backends,
        balancing,
        health_check,
        backend_transport,
    })
}

/// How a pool balances, as written: in an `upstreams:` entry, or at the
/// top level for the pool `default`.
#[derive(Debug, Default)]
pub(super) struct BalancingFile {
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub ewma_decay: Option<std::time::Duration>,
    pub sticky: Option<StickyFile>,
    pub slow_start: Option<std::time::Duration>,
}

impl BalancingFile {
    /// The top-level balancing keys, taken out of `file`.
    pub(super) fn take_top(file: &mut super::file::FileConfig) -> Self {
        BalancingFile {
            balance: file.balance.take(),
            hash_key: file.hash_key.take(),
            ewma_decay: file.ewma_decay.take(),
            sticky: file.sticky.take(),
            slow_start: file.slow_start.take(),
        }
    }

    /// Whether any key is written.
    pub(super) fn is_written(&self) -> bool {
        self.balance.is_some()
            || self.hash_key.is_some()
            || self.ewma_decay.is_some()
            || self.sticky.is_some()
            || self.slow_start.is_some()
    }
}

/// Checks a pool's balancing keys; `prefix` (`upstreams.api.`, or empty at
/// the top level) starts each error's key.
pub(super) fn parse_balancing(
    prefix: &str,
    file: BalancingFile,
    errors: &mut Problems,
) -> Balancing {
    let balance = parse_balance(prefix, file.balance.as_deref(), errors);
    Balancing {
        balance,
        hash_key: hash_key_of(prefix, file.hash_key.as_deref(), balance, errors),
        ewma_decay: ewma_decay_of(prefix, file.ewma_decay, balance, errors),
        sticky: file.sticky.and_then(|s| parse_sticky(prefix, s, errors)),
        // 0s is written to turn the ramp off explicitly.
        slow_start: file.slow_start.filter(|ramp| !ramp.is_zero()),
    }
}

/// The `balance` key: round_robin when absent.
fn parse_balance(prefix: &str, written: Option<&str>, errors: &mut Problems) -> Balance {
    match written {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("random") => Balance::Random,
        Some("least_request") => Balance::LeastRequest,
        Some("consistent_hash") => Balance::ConsistentHash,
        Some("peak_ewma") => Balance::PeakEwma,
        Some(other) => {
            errors.add(
                format!("{prefix}balance"),
                format!(
                    "{other:?}: write round_robin, random, least_request, peak_ewma or consistent_hash"
                ),
            );
            Balance::RoundRobin
        }
    }
}

/// The `hash_key` of a `consistent_hash` pool (client_ip when absent); an
/// error under any other balance.
fn hash_key_of(
    prefix: &str,
    written: Option<&str>,
    balance: Balance,
    errors: &mut Problems,
) -> Option<HashKey> {
    match (written, balance) {
        (Some(text), Balance::ConsistentHash) => parse_hash_key(text)
            .map_err(|why| errors.add(format!("{prefix}hash_key"), why))
            .ok(),
        (None, Balance::ConsistentHash) => Some(HashKey::ClientIp),
        (Some(text), other) => {
            errors.add(
                format!("{prefix}hash_key"),
                format!(
                    "{text:?}: only consistent_hash hashes a key; this pool's balance is {}",
                    other.as_str()
                ),
            );
            None
        }
        (None, _) => None,
    }
}

/// The `ewma_decay` of a `peak_ewma` pool (10 s when absent); an error
/// under any other balance.
fn ewma_decay_of(
    prefix: &str,
    written: Option<std::time::Duration>,
    balance: Balance,
    errors: &mut Problems,
) -> Option<std::time::Duration> {
    match (written, balance) {
        (Some(decay), Balance::PeakEwma) if decay.is_zero() => {
            errors.add(format!("{prefix}ewma_decay"), "0s: must be more than zero");
            None
        }
        (decay, Balance::PeakEwma) => Some(decay.unwrap_or(DEFAULT_EWMA_DECAY)),
        (Some(_), other) => {
            errors.add(
                format!("{prefix}ewma_decay"),
                format!(
                    "only peak_ewma decays; this pool's balance is {}",
                    other.as_str()
                ),
            );
            None
        }
        (None, _) => None,
    }
}

/// The `sticky` section: its cookie name must be an HTTP token.
fn parse_sticky(prefix: &str, written: StickyFile, errors: &mut Problems) -> Option<Sticky> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if written.cookie.is_empty() || !written.cookie.bytes().all(token) {
        errors.add(
            format!("{prefix}sticky.cookie"),
            format!("{:?}: not a cookie name", written.cookie),
        );
        return None;
    }
    Some(Sticky {
        cookie: written.cookie,
        max_age: written.max_age,
    })
}

/// Runs `parse` on its own problem list and adds what it found under `key`.
fn prefixed<T>(key: &str, errors: &mut Problems, parse: impl FnOnce(&mut Problems) -> T) -> T {
    let mut own = Problems::default();
    let parsed = parse(&mut own);
    for problem in own.into_vec() {
        errors.add(format!("{key}.{}", problem.key), problem.message);
    }
    parsed
}

/// A pool's health-check section with the top-level section's values where
/// it has none.
fn merged_health(own: HealthCheckFile, top: &HealthCheckFile) -> HealthCheckFile {
    HealthCheckFile {
        kind: own.kind.or_else(|| top.kind.clone()),
        path: own.path.or_else(|| top.path.clone()),
        interval: own.interval.or(top.interval),
        timeout: own.timeout.or(top.timeout),
        host: own.host.or_else(|| top.host.clone()),
        expected_status: own.expected_status.or_else(|| top.expected_status.clone()),
        healthy_threshold: own.healthy_threshold.or(top.healthy_threshold),
        unhealthy_threshold: own.unhealthy_threshold.or(top.unhealthy_threshold),
        reuse_connection: own.reuse_connection.or(top.reuse_connection),
        on_marked_down: own.on_marked_down.or(top.on_marked_down),
    }
}

impl super::Config {
    /// Open files a client connection can take: its own and its backend's,
    /// and a second one of the backend's when a pool closes the connections
    /// of a backend marked down (`health_check.on_marked_down: close`).
    pub fn descriptors_per_connection(&self) -> u64 {
        let closes = self
            .pools
            .iter()
            .any(|p| p.health_check.on_marked_down == super::OnMarkedDown::Close);
        if closes {
            3
        } else {
            2
        }
    }
}
