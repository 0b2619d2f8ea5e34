//! The `policies:` section: named policies that listeners and routes
//! apply in order (as Traefik's middlewares and Envoy's HTTP filters), and
//! the checks of every reference to them. Plain data: the users file of
//! `basic_auth` is named here and read when the runtime is built, whose
//! errors keep the key (`policies.admins.basic_auth.users_file`).
//!
//! One policy may hold several kinds (`secure_headers` sets request and
//! response headers); they run in one fixed order, the order of the
//! fields of [`PolicyConfig`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::checks::{from_section, Problems};
use super::limit_kinds;
use super::policy_kinds as kinds;

/// One named policy as configured. Each kind is optional; a policy has
/// at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Its name under `policies:`.
    pub name: String,
    /// Which client addresses may pass.
    pub access: Option<AccessConfig>,
    /// Open requests per key.
    pub connection_limit: Option<ConnectionLimitConfig>,
    /// Requests per period per key.
    pub rate_limit: Option<RateLimitConfig>,
    /// A user and password from a bcrypt htpasswd file.
    pub basic_auth: Option<BasicAuthConfig>,
    /// A subrequest to an authorization service.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// Cross-origin requests from browsers.
    pub cors: Option<CorsConfig>,
    /// Changes to the request lb sends to the backend.
    pub request_headers: Option<HeaderRules>,
    /// Changes to the response lb sends to the client.
    pub response_headers: Option<HeaderRules>,
    /// Compression of responses.
    pub compression: Option<CompressionConfig>,
}

/// `access:` CIDR lists; deny wins over allow; an empty allow list allows
/// every address not denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The client's address (the real one, behind trusted proxies).
    ClientIp,
    /// A request header's value; requests without it share one key.
    Header(http::HeaderName),
    /// A cookie's value; requests without it share one key.
    Cookie(String),
    /// The route: one limit for all its clients together.
    Route,
}

/// `rate_limit:`: `rate` requests per `period` per key, with `burst` more
/// at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests per period.
    pub rate: u32,
    /// The period of `rate`.
    pub period: Duration,
    /// Requests a key may send at once beyond the steady rate.
    pub burst: u32,
    pub key: LimitKey,
    /// Most keys remembered at once; idle ones are forgotten first.
    pub max_keys: usize,
    /// Whether the replicas of a fleet share the counts.
    pub scope: LimitScope,
    /// With `scope: cluster`, the part of the limit (in millionths) one
    /// replica allows alone while the store does not answer; none: one
    /// over `cluster.replicas`.
    pub fallback_share: Option<u32>,
}

/// Where a rate limit's counts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// In this process: each replica allows the whole limit.
    Local,
    /// In the `cluster:` section's Redis: the replicas share the limit.
    Cluster,
}

/// `connection_limit:`: requests open at once per key (nginx limit_conn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimitConfig {
    pub max: u32,
    pub key: LimitKey,
}

/// `request_headers:` or `response_headers:`. Values may hold
/// `{client_ip}`, `{request_id}`, `{host}` and `{route}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Replace the header (or add it when absent).
    pub set: Vec<(http::HeaderName, String)>,
    /// Add one more value.
    pub add: Vec<(http::HeaderName, String)>,
    /// Remove every value.
    pub remove: Vec<http::HeaderName>,
}

/// `compression:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionConfig {
    /// `zstd`, `br`, `gzip`, in the server's order of preference.
    pub algorithms: Vec<String>,
    /// Smallest response compressed, in bytes (by its Content-Length).
    pub min_size: u64,
    /// Media types compressed: `text/*`, `application/json`.
    pub types: Vec<String>,
}

/// `basic_auth:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthConfig {
    pub realm: String,
    /// An htpasswd file of bcrypt entries (`htpasswd -B`).
    pub users_file: PathBuf,
}

/// `forward_auth:` (nginx `auth_request`, Traefik ForwardAuth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// The URL as written, for `lb -t` and errors.
    pub url: String,
    /// Where the auth service listens.
    pub addr: std::net::SocketAddr,
    /// The Host header sent to it.
    pub host: String,
    /// The path (and query) asked for.
    pub path: String,
    /// Headers of a 2xx answer copied onto the request to the backend.
    pub copy_headers: Vec<http::HeaderName>,
    /// Longest wait for the answer, connect included.
    pub timeout: Duration,
    /// Whether a failed or slow auth service lets requests through
    /// (`on_error: allow`) instead of answering 503 (`deny`, the default).
    pub fail_open: bool,
}

/// `cors:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `*`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
}

/// A `policies:` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    access: Option<kinds::AccessFile>,
    connection_limit: Option<limit_kinds::ConnectionLimitFile>,
    rate_limit: Option<limit_kinds::RateLimitFile>,
    basic_auth: Option<kinds::BasicAuthFile>,
    forward_auth: Option<kinds::ForwardAuthFile>,
    cors: Option<kinds::CorsFile>,
    request_headers: Option<kinds::HeaderRulesFile>,
    response_headers: Option<kinds::HeaderRulesFile>,
    compression: Option<kinds::CompressionFile>,
}

/// Parses every policy, each error named by its key
/// (`policies.api_limit.rate_limit.rate`).
pub(super) fn parse_policies(
    written: Option<serde_yaml_ng::Mapping>,
    errors: &mut Problems,
) -> Vec<PolicyConfig> {
    let mut policies = Vec::new();
    for (name, value) in written.unwrap_or_default() {
        let Some(name) = name.as_str().map(str::to_string) else {
            errors.add(
                "policies",
                format!("{name:?}: a policy's name must be text"),
            );
            continue;
        };
        let key = format!("policies.{name}");
        let file: PolicyFile = match from_section(value) {
            Ok(file) => file,
            Err((sub_key, message)) => {
                errors.add(format!("{key}{sub_key}"), message);
                continue;
            }
        };
        policies.push(parse_policy(&key, name, file, errors));
    }
    policies
}

fn parse_policy(key: &str, name: String, file: PolicyFile, errors: &mut Problems) -> PolicyConfig {
    let errors_before = errors.len();
    let at = |kind: &str| format!("{key}.{kind}");
    let policy = PolicyConfig {
        name,
        access: file.access.map(|f| kinds::access(&at("access"), f, errors)),
        connection_limit: file
            .connection_limit
            .map(|f| limit_kinds::connection_limit(&at("connection_limit"), f, errors)),
        rate_limit: file
            .rate_limit
            .map(|f| limit_kinds::rate_limit(&at("rate_limit"), f, errors)),
        basic_auth: file.basic_auth.map(kinds::basic_auth),
        forward_auth: file
            .forward_auth
            .and_then(|f| kinds::forward_auth(&at("forward_auth"), f, errors)),
        cors: file.cors.map(|f| kinds::cors(&at("cors"), f, errors)),
        request_headers: file
            .request_headers
            .map(|f| kinds::header_rules(&at("request_headers"), f, errors)),
        response_headers: file
            .response_headers
            .map(|f| kinds::header_rules(&at("response_headers"), f, errors)),
        compression: file
            .compression
            .map(|f| kinds::compression(&at("compression"), f, errors)),
    };
    // A kind that was written but failed has its own error already.
    if policy.is_empty() && errors.len() == errors_before {
        errors.add(
            key,
            "no kind given: write access, rate_limit, connection_limit, request_headers, \
             response_headers, compression, basic_auth, forward_auth or cors",
        );
    }
    policy
}

impl PolicyConfig {
    fn is_empty(&self) -> bool {
        self.access.is_none()
            && self.connection_limit.is_none()
            && self.rate_limit.is_none()
            && self.basic_auth.is_none()
            && self.forward_auth.is_none()
            && self.cors.is_none()
            && self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.compression.is_none()
    }

    /// Its kinds as the config names them, in the order they run.
    pub fn kinds(&self) -> Vec<&'static str> {
        let rate_limit = match self.rate_limit.as_ref().map(|l| l.scope) {
            Some(LimitScope::Cluster) => "rate_limit (cluster)",
            _ => "rate_limit",
        };
        [
            ("access", self.access.is_some()),
            ("connection_limit", self.connection_limit.is_some()),
            (rate_limit, self.rate_limit.is_some()),
            ("basic_auth", self.basic_auth.is_some()),
            ("forward_auth", self.forward_auth.is_some()),
            ("cors", self.cors.is_some()),
            ("request_headers", self.request_headers.is_some()),
            ("response_headers", self.response_headers.is_some()),
            ("compression", self.compression.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, present)| present.then_some(kind))
        .collect()
    }
}

/// Checks that every name in `chain` (at `key`) is a policy, and that no
/// name is listed twice.
pub(super) fn check_chain(
    key: &str,
    chain: &[String],
    policies: &[PolicyConfig],
    errors: &mut Problems,
) {
    let mut seen = HashSet::new();
    for (i, name) in chain.iter().enumerate() {
        if !policies.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
            errors.add(
                format!("{key}[{i}]"),
                format!(
                    "no policy named {name:?} (there are: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        } else if !seen.insert(name) {
            errors.add(format!("{key}[{i}]"), format!("{name:?} is listed twice"));
        }
    }
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub(super) fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?}: not an address or CIDR such as 10.0.0.0/8 or fd00::/8"))
}

/// Parses a list of CIDRs at `key`, an error for each bad one.
pub(super) fn parse_nets(key: &str, written: &[String], errors: &mut Problems) -> Vec<IpNet> {
    written
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            parse_net(text)
                .map_err(|why| errors.add(format!("{key}[{i}]"), why))
                .ok()
        })
        .collect()
}
