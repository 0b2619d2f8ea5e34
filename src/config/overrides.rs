//! The settings given on the command line, and how each replaces the
//! file's value before the checks.

use std::path::PathBuf;
use std::time::Duration;

use super::checks::Problems;
use super::file::{self, HealthCheckFile};
use super::listeners::tls_flag_entries;
use super::sections::parse_admin;
use super::{AdminConfig, Environment, DEFAULT_LISTENER};

/// Settings given on the command line; each replaces the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`: replaces the whole `listeners` list when not empty.
    pub listen: Vec<String>,
    /// `--tls-listen`: TLS listeners with the `--cert`/`--key` pairs; with
    /// `--listen`, replaces the whole `listeners` list when not empty.
    pub tls_listen: Vec<String>,
    /// `--cert`: certificate files of the `--tls-listen` listeners.
    pub certs: Vec<PathBuf>,
    /// `--key`: their keys, in the same order.
    pub keys: Vec<PathBuf>,
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
    /// `--pid-file`: replaces `server.pid_file`.
    pub pid_file: Option<String>,
    /// `--upgrade-sock`: replaces `server.upgrade_sock`.
    pub upgrade_sock: Option<String>,
    /// `--no-watch-config`: turns `watch_config` off.
    pub no_watch_config: bool,
}

impl Overrides {
    /// The flags that change what lb serves (backends, health checks),
    /// as text for the config's hash; None when there are none. Where a
    /// replica listens, keeps its pid file and upgrade socket is its own,
    /// not the config's: two replicas on one host differ there.
    pub(super) fn served(&self) -> Option<String> {
        let served = (
            &self.backends,
            &self.health_check_path,
            self.health_check_interval,
            self.health_check_timeout,
        );
        let none = (&Vec::new(), &None, None, None);
        (served != none).then(|| format!("{served:?}"))
    }

    /// The listener entries: the flags', or else the file's, or else the
    /// default.
    pub(super) fn listeners(
        &self,
        written: Option<Vec<serde_yaml_ng::Value>>,
        errors: &mut Problems,
    ) -> Vec<serde_yaml_ng::Value> {
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            if !self.certs.is_empty() || !self.keys.is_empty() {
                errors.add("--cert/--key", "given without --tls-listen");
            }
            return written.unwrap_or_else(|| vec![DEFAULT_LISTENER.into()]);
        }
        self.listen
            .iter()
            .map(|l| serde_yaml_ng::Value::String(l.clone()))
            .chain(tls_flag_entries(
                &self.tls_listen,
                &self.certs,
                &self.keys,
                errors,
            ))
            .collect()
    }

    /// The backend entries: the flags', or else the file's.
    pub(super) fn backends(
        &self,
        written: Option<Vec<serde_yaml_ng::Value>>,
    ) -> Vec<serde_yaml_ng::Value> {
        if self.backends.is_empty() {
            return written.unwrap_or_default();
        }
        self.backends
            .iter()
            .map(|b| serde_yaml_ng::Value::String(b.clone()))
            .collect()
    }

    /// Puts `--pid-file` and `--upgrade-sock` in place of the file's paths.
    pub(super) fn server_paths(&self, server: &mut pingora::server::configuration::ServerConf) {
        if let Some(pid_file) = &self.pid_file {
            server.pid_file.clone_from(pid_file);
        }
        if let Some(upgrade_sock) = &self.upgrade_sock {
            server.upgrade_sock.clone_from(upgrade_sock);
        }
    }

    /// The admin section with `--admin-listen` in place, checked.
    pub(super) fn admin(
        &self,
        written: Option<file::AdminFile>,
        environment: &Environment,
        errors: &mut Problems,
    ) -> Option<AdminConfig> {
        let mut admin = written.unwrap_or_default();
        if let Some(listen) = &self.admin_listen {
            admin.listen = Some(listen.clone());
        }
        parse_admin(admin, environment.admin_token.clone(), errors)
    }

    /// The health-check section with the flags' values in place.
    pub(super) fn health_check(&self, written: Option<HealthCheckFile>) -> HealthCheckFile {
        let mut health_check = written.unwrap_or_default();
        if let Some(path) = &self.health_check_path {
            health_check.path = Some(path.clone());
        }
        if let Some(interval) = self.health_check_interval {
            health_check.interval = Some(interval);
        }
        if let Some(timeout) = self.health_check_timeout {
            health_check.timeout = Some(timeout);
        }
        health_check
    }
}
