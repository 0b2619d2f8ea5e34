//! The health check, discovery and admin sections: checked, with their
//! defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::backends::resolve;
use super::checks::{positive_duration, Problems};
use super::file::{AdminFile, DiscoveryFile, HealthCheckFile};
use super::{AdminConfig, DiscoveryConfig, HealthCheckConfig};

/// The health check's defaults: `GET /` with `Host: localhost` every 10 s,
/// 2 s to answer 200.
const DEFAULT_HEALTH_PATH: &str = "/";
const DEFAULT_HEALTH_HOST: &str = "localhost";
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_STATUS: u16 = 200;
/// How often backend host names are resolved again.
const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// HAProxy's resolvers hold an NXDOMAIN answer's last addresses 30 s by default.
const DEFAULT_HOLD_MISSING: Duration = Duration::from_secs(30);

pub(super) fn parse_health_check(
    written: HealthCheckFile,
    errors: &mut Problems,
) -> HealthCheckConfig {
    let kind = super::transport::parse_health_check_kind(written.kind, errors);
    let path = written.path.unwrap_or_else(|| DEFAULT_HEALTH_PATH.into());
    if !path.starts_with('/') {
        errors.add("health_check.path", format!("{path:?}: must start with /"));
    }
    let interval = positive_duration(
        "health_check.interval",
        written.interval,
        DEFAULT_HEALTH_INTERVAL,
        errors,
    );
    let timeout = positive_duration(
        "health_check.timeout",
        written.timeout,
        DEFAULT_HEALTH_TIMEOUT,
        errors,
    );
    let expected_status = written
        .expected_status
        .unwrap_or_else(|| vec![DEFAULT_HEALTH_STATUS]);
    if expected_status.is_empty() {
        errors.add("health_check.expected_status", "the list is empty");
    }
    for status in &expected_status {
        if !(100..=599).contains(status) {
            errors.add(
                "health_check.expected_status",
                format!("{status}: not an HTTP status (100 to 599)"),
            );
        }
    }
    let mut threshold = |key: &str, value: Option<i64>| {
        let value = value.unwrap_or(1);
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or_else(|| {
                errors.add(
                    format!("health_check.{key}"),
                    format!("{value}: must be a whole number of at least 1"),
                );
                NonZeroUsize::MIN
            })
    };
    let healthy_threshold = threshold("healthy_threshold", written.healthy_threshold);
    let unhealthy_threshold = threshold("unhealthy_threshold", written.unhealthy_threshold);
    HealthCheckConfig {
        kind,
        path,
        interval,
        timeout,
        host: written.host.unwrap_or_else(|| DEFAULT_HEALTH_HOST.into()),
        expected_status,
        healthy_threshold,
        unhealthy_threshold,
        reuse_connection: written.reuse_connection.unwrap_or(true),
        on_marked_down: written.on_marked_down.unwrap_or_default(),
    }
}

pub(super) fn parse_discovery(written: DiscoveryFile, errors: &mut Problems) -> DiscoveryConfig {
    let interval = positive_duration(
        "discovery.interval",
        written.interval,
        DEFAULT_DISCOVERY_INTERVAL,
        errors,
    );
    let resolver = written
        .resolver
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.add(
                    "discovery.resolver",
                    format!("{text:?}: must be ip:port, e.g. 127.0.0.1:53"),
                );
                None
            }
        });
    DiscoveryConfig {
        interval,
        resolver,
        hold_missing: written.hold_missing.unwrap_or(DEFAULT_HOLD_MISSING),
    }
}

/// The admin section; `env_token` is `LB_ADMIN_TOKEN`, used when the file
/// sets no token.
pub(super) fn parse_admin(
    written: AdminFile,
    env_token: Option<String>,
    errors: &mut Problems,
) -> Option<AdminConfig> {
    let AdminFile { listen, token } = written;
    let token = token.or(env_token).filter(|t| !t.is_empty());
    // A token without a listener is harmless: LB_ADMIN_TOKEN may be set for later.
    let text = listen?;
    let listen = match resolve(&text) {
        Ok(addr) => addr,
        Err(why) => {
            errors.add("admin.listen", format!("{text:?}: {why}"));
            return None;
        }
    };
    if !listen.ip().is_loopback() && token.is_none() {
        errors.add(
            "admin.token",
            format!(
                "required when admin.listen ({listen}) is not a loopback address; \
                 set it or LB_ADMIN_TOKEN"
            ),
        );
    }
    Some(AdminConfig { listen, token })
}

/// Names a YAML value's kind for error messages.
pub(super) fn describe(value: &serde_yaml_ng::Value) -> &'static str {
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
