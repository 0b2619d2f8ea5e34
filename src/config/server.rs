//! The `server:` section: Pingora's own `ServerConf`, with lb's defaults and a
//! check of every key.
//!
//! Pingora's `ServerConf` ignores keys it does not know, so a typo would pass
//! silently. The keys Pingora knows are read off a serialized default
//! `ServerConf`, so the check follows Pingora's version without a list to keep.

use std::time::Duration;

use pingora::server::configuration::ServerConf;
use serde_yaml_ng::{Mapping, Value};

use super::checks::Problems;
use super::PoolConfig;

/// Grace period after a shutdown or upgrade signal before connections are
/// closed. Pingora's default is 300 s, longer than Docker's 10 s stop timeout.
const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Time the runtimes get to finish after the grace period. With the grace
/// period this stays under Docker's 10 s stop timeout.
const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 3;

/// What the drain leaves of the grace period for the connections to close
/// before Pingora stops the runtimes.
const DRAIN_MARGIN: Duration = Duration::from_millis(250);

/// How long a graceful stop or upgrade may wait for kept-alive client
/// connections to close: the grace period less a margin.
///
/// Not more: Pingora ends the grace period by shutting the runtimes down,
/// and that cancels every connection task at once;
/// `graceful_shutdown_timeout_seconds` only bounds how long blocking threads
/// are waited for. Measured with grace 1 s and timeout 5 s: a response in
/// flight was cut 1.5 s after SIGTERM, and the proxy runtime "exited after
/// 1.57 ms" of its shutdown timeout.
pub fn drain_window(server: &ServerConf) -> Duration {
    Duration::from_secs(server.grace_period_seconds.unwrap_or(0)).saturating_sub(DRAIN_MARGIN)
}

/// A warning when `server` leaves no time to drain client connections.
pub fn drain_warning(server: &ServerConf) -> Option<String> {
    drain_window(server).is_zero().then(|| {
        "server.grace_period_seconds: 0 leaves no time to drain kept-alive client connections \
         at a stop or upgrade: a request sent as lb closes them is lost (1 or more drains them)"
            .to_string()
    })
}

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

/// Pingora's runtime when `server.work_stealing` is not written, chosen by
/// the number of worker threads (bench/RESULTS.md, "Runtimes").
///
/// One thread: a single-threaded runtime (`false`). The work-stealing
/// runtime parks its one worker and wakes it through the scheduler for each
/// request that arrives alone: open loop at 9,000 requests/s on one core
/// its p99 was 13.4 ms against 3.6 without stealing (HAProxy 1.5).
/// More threads: work stealing (`true`). Without it each connection stays
/// on the thread it was given and a pooled backend connection released on
/// one thread is often lost by another (43 new backend connections a
/// thousand requests at 6,700/s with 2 threads, against none), and its p99
/// was no better below saturation (2.4 ms against 1.5 at 6,700/s).
pub fn work_stealing_for(threads: usize) -> bool {
    threads > 1
}

/// The idle upstream connections lb keeps when
/// `server.upstream_keepalive_pool_size` is not written: Pingora's 128, or
/// two for each backend entry of every pool when that is more. Pingora
/// keeps one pool of idle connections for all backends and drops the
/// least recently used when it is full, so a pool walked round robin
/// needs at least one idle connection a backend to reuse any: with 1,000
/// backends and 128, nearly every request opened a new connection
/// (bench/RESULTS.md, "Thousands of pools"). Fixed at start, like every
/// `server:` setting: a reload that adds backends does not resize it.
pub fn keepalive_pool_size_for(backends: usize) -> usize {
    const PINGORA_DEFAULT: usize = 128;
    PINGORA_DEFAULT.max(backends.saturating_mul(2))
}

/// Reads the `server:` section; with it, whether it writes
/// `upstream_keepalive_pool_size` (else [`size_keepalive_pool`] sizes it).
pub(super) fn build_section(written: Option<Mapping>, errors: &mut Problems) -> (ServerConf, bool) {
    let written = written.unwrap_or_default();
    let pool_size_written = written.contains_key("upstream_keepalive_pool_size");
    (build(written, errors), pool_size_written)
}

/// Sizes the idle backend connections by `pools`' backend entries when
/// the file did not.
pub(super) fn size_keepalive_pool(server: &mut ServerConf, written: bool, pools: &[PoolConfig]) {
    if !written {
        let backends = pools.iter().map(|p| p.backends.len()).sum();
        server.upstream_keepalive_pool_size = keepalive_pool_size_for(backends);
    }
}

/// What `lb -t` says of the runtime.
pub fn runtime_name(server: &ServerConf) -> String {
    if server.work_stealing {
        format!("work-stealing, {} worker threads", server.threads)
    } else {
        format!(
            "one single-threaded runtime per worker thread ({})",
            server.threads
        )
    }
}

/// Builds the `ServerConf` from the section as written, pushing one error per
/// unknown key or bad value.
pub fn build(written: Mapping, errors: &mut Problems) -> ServerConf {
    let defaults = default_server_conf();
    let Ok(Value::Mapping(mut merged)) = serde_yaml_ng::to_value(&defaults) else {
        // Serializing a plain struct to YAML cannot fail; keep the defaults if it ever does.
        return defaults;
    };
    let before = errors.len();
    let runtime_written = written.contains_key("work_stealing");
    for (key, value) in written {
        let name = key.as_str().unwrap_or_default().to_string();
        if merged.contains_key(&key) {
            merged.insert(key, value);
        } else {
            let known: Vec<&str> = merged.keys().filter_map(Value::as_str).collect();
            errors.add(
                format!("server.{name}"),
                format!(
                    "unknown key; Pingora's server settings are: {}",
                    known.join(", ")
                ),
            );
        }
    }
    if errors.len() > before {
        return defaults;
    }
    match serde_yaml_ng::from_value::<ServerConf>(Value::Mapping(merged)) {
        Ok(mut conf) => {
            if !runtime_written {
                conf.work_stealing = work_stealing_for(conf.threads);
            }
            if conf.threads == 0 {
                errors.add("server.threads", "0: must be at least 1");
            }
            check_user_and_group(&conf, errors);
            conf
        }
        Err(e) => {
            errors.add("server", e.to_string());
            defaults
        }
    }
}

/// `server.user` and `server.group` must exist on this machine: lb
/// switches to them once its listeners are bound (`process::privileges`),
/// and `lb -t` should say so before a start fails.
fn check_user_and_group(conf: &ServerConf, errors: &mut Problems) {
    if let Some(user) = &conf.user {
        if !matches!(nix::unistd::User::from_name(user), Ok(Some(_))) {
            errors.add("server.user", format!("{user}: no such user"));
        }
    }
    if let Some(group) = &conf.group {
        if !matches!(nix::unistd::Group::from_name(group), Ok(Some(_))) {
            errors.add("server.group", format!("{group}: no such group"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(yaml: &str) -> (ServerConf, Problems) {
        let written: Mapping = serde_yaml_ng::from_str(yaml).expect("test YAML parses");
        let mut errors = Problems::default();
        let conf = build(written, &mut errors);
        (conf, errors)
    }

    #[test]
    fn the_runtime_follows_the_thread_count_unless_written() {
        for threads in [1, 2, 4] {
            let (conf, errors) = built(&format!("threads: {threads}"));
            assert!(errors.is_empty());
            assert_eq!(conf.work_stealing, work_stealing_for(threads), "{threads}");
        }
        assert!(
            !work_stealing_for(1),
            "one thread runs without work stealing"
        );
    }

    #[test]
    fn a_written_runtime_is_kept() {
        for (threads, stealing) in [(1, true), (1, false), (2, true), (2, false)] {
            let yaml = format!("{{threads: {threads}, work_stealing: {stealing}}}");
            let (conf, errors) = built(&yaml);
            assert!(errors.is_empty());
            assert_eq!(conf.work_stealing, stealing, "{yaml}");
        }
    }

    #[test]
    fn the_idle_connection_pool_grows_with_the_backends() {
        assert_eq!(keepalive_pool_size_for(3), 128);
        assert_eq!(keepalive_pool_size_for(64), 128);
        assert_eq!(keepalive_pool_size_for(1_000), 2_000);
    }

    #[test]
    fn the_summary_names_the_runtime() {
        let (conf, _) = built("{threads: 1, work_stealing: false}");
        assert!(runtime_name(&conf).starts_with("one single-threaded runtime"));
        let (conf, _) = built("{threads: 3, work_stealing: true}");
        assert_eq!(runtime_name(&conf), "work-stealing, 3 worker threads");
    }
}
