//! The `server:` section: Pingora's own `ServerConf`, with lb's defaults and a
//! check of every key.
//!
//! Pingora's `ServerConf` ignores keys it does not know, so a typo would pass
//! silently. The keys Pingora knows are read off a serialized default
//! `ServerConf`, so the check follows Pingora's version without a list to keep.

use pingora::server::configuration::ServerConf;
use serde_yaml_ng::{Mapping, Value};

/// Grace period after a shutdown or upgrade signal before connections are
/// closed. Pingora's default is 300 s, longer than Docker's 10 s stop timeout.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Time the runtimes get to finish after the grace period. With the grace
/// period this stays under Docker's 10 s stop timeout.
const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 3;

/// lb's defaults for Pingora's settings: one worker thread per CPU, per-product
/// pid and upgrade socket paths, and grace periods that suit a container.
pub fn default_server_conf() -> ServerConf {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    ServerConf {
        threads,
        pid_file: "/tmp/lb.pid".into(),
        upgrade_sock: "/tmp/lb_upgrade.sock".into(),
        grace_period_seconds: Some(DEFAULT_GRACE_PERIOD_SECONDS),
        graceful_shutdown_timeout_seconds: Some(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
        ..ServerConf::default()
    }
}

/// Builds the `ServerConf` from the section as written, pushing one error per
/// unknown key or bad value.
pub fn build(written: Mapping, errors: &mut Vec<String>) -> ServerConf {
    let defaults = default_server_conf();
    let Ok(Value::Mapping(mut merged)) = serde_yaml_ng::to_value(&defaults) else {
        // Serializing a plain struct to YAML cannot fail; keep the defaults if it ever does.
        return defaults;
    };
    let before = errors.len();
    for (key, value) in written {
        let name = key.as_str().unwrap_or_default().to_string();
        if merged.contains_key(&key) {
            merged.insert(key, value);
        } else {
            let known: Vec<&str> = merged.keys().filter_map(Value::as_str).collect();
            errors.push(format!(
                "server.{name}: unknown key; Pingora's server settings are: {}",
                known.join(", ")
            ));
        }
    }
    if errors.len() > before {
        return defaults;
    }
    match serde_yaml_ng::from_value::<ServerConf>(Value::Mapping(merged)) {
        Ok(conf) => {
            if conf.threads == 0 {
                errors.push("server.threads: 0: must be at least 1".into());
            }
            conf
        }
        Err(e) => {
            errors.push(format!("server: {e}"));
            defaults
        }
    }
}
