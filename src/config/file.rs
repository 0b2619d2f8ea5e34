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
    /// Addresses to accept clients on, `host:port`.
    pub listeners: Option<Vec<String>>,
    /// The backend pool: each entry is `host:port` or `{address, weight}`,
    /// kept raw so each entry's error can name its index.
    pub backends: Option<Vec<serde_yaml_ng::Value>>,
    /// Active health checks.
    pub health_check: Option<HealthCheckFile>,
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
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
}
