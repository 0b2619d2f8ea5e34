//! What a fleet of lb replicas shares, and how a replica says which
//! config it runs: the `cluster:` section (the Redis that holds the
//! counts of `scope: cluster` rate limits), `watch_config`, and the
//! config's hash.
//!
//! The hash is SHA-256 over the file's bytes and the command-line
//! settings that change what is served, so two replicas started from the
//! same file show the same hash and one that drifted shows another.

use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::checks::Problems;
use super::policies::{LimitScope, PolicyConfig};
use super::Overrides;

/// How long a request waits for Redis when the config does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(25);
/// The longest `cluster.timeout` allowed: the request path waits this long
/// at most for every cluster-scoped decision.
const MAX_TIMEOUT: Duration = Duration::from_secs(1);
/// Hex digits of the hash lb shows.
const HASH_DIGITS: usize = 12;

/// The `cluster:` section, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `redis://[user:password@]host[:port][/db]`.
    redis: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    prefix: Option<String>,
    replicas: Option<i64>,
}

/// The Redis a fleet shares its cluster-scoped rate limits through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Its URL.
    pub redis: String,
    /// The longest a request waits for it; past that, it is decided
    /// locally.
    pub timeout: Duration,
    /// Put before every key lb writes.
    pub prefix: String,
    /// How many replicas share the limits: each allows one over this of a
    /// limit alone while Redis does not answer.
    pub replicas: u32,
}

impl ClusterConfig {
    /// The Redis URL with its password, if any, replaced by `***`: for
    /// logs, `lb -t` and the admin API.
    pub fn redis_without_password(&self) -> String {
        redis_without_password(&self.redis)
    }
}

/// `url` with the password of its user part replaced by `***` (a user
/// name alone is kept: it is not a secret): for logs, `lb -t`, the admin
/// API and the cluster store's errors.
pub fn redis_without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let Some((user, _password)) = rest[..at].split_once(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

impl super::Config {
    /// The files besides the config file that a reload reads again and a
    /// watching replica follows: the listeners' certificates and keys, the
    /// backends' CA file, the basic-auth users files.
    pub fn files_named(&self) -> Vec<std::path::PathBuf> {
        let certificates = self.listeners.iter().flat_map(|l| match &l.kind {
            super::ListenerKind::Tls(tls) => tls
                .files
                .iter()
                .flat_map(|f| [f.cert.clone(), f.key.clone()])
                .collect(),
            _ => Vec::new(),
        });
        let users = self
            .policies
            .iter()
            .filter_map(|p| p.basic_auth.as_ref().map(|a| a.users_file.clone()));
        let cas = self.pools.iter().filter_map(|p| {
            let ca = p.backend_transport.tls.as_ref()?.ca.as_ref()?;
            Some(ca.path.clone())
        });
        let mut files: Vec<_> = certificates.chain(cas).chain(users).collect();
        files.sort();
        files.dedup();
        files
    }
}

/// Checks the `cluster:` section.
pub(super) fn parse_cluster(
    written: Option<ClusterFile>,
    errors: &mut Problems,
) -> Option<ClusterConfig> {
    let written = written?;
    let Some(redis) = written.redis else {
        errors.add("cluster.redis", "missing: write redis://host:port/db");
        return None;
    };
    if let Err(why) = check_redis_url(&redis) {
        errors.add("cluster.redis", format!("{redis:?}: {why}"));
    }
    let timeout = written.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        errors.add(
            "cluster.timeout",
            format!(
                "{}: write more than 0 and at most 1s (a request waits this long for Redis at most)",
                humantime::format_duration(timeout)
            ),
        );
    }
    let replicas =
        super::checks::whole_number("cluster.replicas", written.replicas, 1, 1, 10_000, errors);
    Some(ClusterConfig {
        redis,
        timeout,
        prefix: written.prefix.unwrap_or_else(|| "lb:".to_string()),
        replicas: replicas as u32,
    })
}

/// Whether `url` is one the Redis client can connect to.
fn check_redis_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("write redis://host:port/db (TLS, rediss://, is not supported)")?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("no host: write redis://host:port/db".to_string());
    }
    redis::parse_redis_url(url)
        .map(drop)
        .ok_or_else(|| "not a Redis URL".to_string())
}

/// An error for each `scope: cluster` rate limit when there is no
/// `cluster:` section to share it through.
pub(super) fn check_scopes(
    policies: &[PolicyConfig],
    cluster: Option<&ClusterConfig>,
    errors: &mut Problems,
) {
    if cluster.is_some() {
        return;
    }
    for policy in policies {
        if policy
            .rate_limit
            .as_ref()
            .is_some_and(|limit| limit.scope == LimitScope::Cluster)
        {
            errors.add(
                format!("policies.{}.rate_limit.scope", policy.name),
                "\"cluster\" needs a top-level cluster: section naming its redis",
            );
        }
    }
}

/// The config's hash: the first hex digits of SHA-256 over the file's
/// bytes and, when there are any, the flags that change what is served
/// (`--backend`, `LB_BACKENDS`, the health-check flags).
pub(super) fn config_hash(file: &[u8], overrides: &Overrides) -> String {
    let mut hasher = Sha256::new();
    hasher.update(file);
    if let Some(served) = overrides.served() {
        hasher.update(served.as_bytes());
    }
    let mut hex = format!("{:x}", hasher.finalize());
    hex.truncate(HASH_DIGITS);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<ClusterConfig>, Vec<String>) {
        let file: ClusterFile = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = Problems::default();
        let cluster = parse_cluster(Some(file), &mut errors);
        let lines = errors.into_vec().iter().map(|p| p.to_string()).collect();
        (cluster, lines)
    }

    #[test]
    fn the_section_takes_its_defaults_and_checks_each_key() {
        let (cluster, errors) = parse("redis: redis://127.0.0.1:6379/0");
        assert!(errors.is_empty(), "{errors:?}");
        let cluster = cluster.unwrap();
        assert_eq!(cluster.timeout, Duration::from_millis(25));
        assert_eq!((cluster.prefix.as_str(), cluster.replicas), ("lb:", 1));
        let (_, errors) = parse("redis: http://x\ntimeout: 5s\nreplicas: 0");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("cluster.redis: \"http://x\""),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("cluster.timeout: 5s"), "{errors:?}");
        assert!(errors[2].starts_with("cluster.replicas"), "{errors:?}");
        let (_, errors) = parse("timeout: 10ms");
        assert_eq!(
            errors,
            ["cluster.redis: missing: write redis://host:port/db"]
        );
    }

    #[test]
    fn a_password_is_never_shown() {
        let shown = |url| redis_without_password(url);
        assert_eq!(shown("redis://u:secret@h:6379/0"), "redis://u:***@h:6379/0");
        assert_eq!(shown("redis://u@h"), "redis://u@h");
        assert_eq!(shown("http://u:secret@h/a@b"), "http://u:***@h/a@b");
        assert_eq!(shown("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn the_hash_follows_the_bytes_and_the_flags() {
        let none = Overrides::default();
        let a = config_hash(b"backends: [a:1]", &none);
        assert_eq!(a.len(), HASH_DIGITS);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, config_hash(b"backends: [a:1]", &none));
        assert_ne!(a, config_hash(b"backends: [a:2]", &none));
        let flags = Overrides {
            backends: vec!["b:1".into()],
            ..Overrides::default()
        };
        assert_ne!(a, config_hash(b"backends: [a:1]", &flags));
        let placement = Overrides {
            listen: vec!["127.0.0.1:8001".into()],
            pid_file: Some("/run/lb2.pid".into()),
            ..Overrides::default()
        };
        assert_eq!(a, config_hash(b"backends: [a:1]", &placement));
    }
}
