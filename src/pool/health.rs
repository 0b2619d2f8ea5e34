//! Active health checks: an HTTP probe of each backend with thresholds.
//!
//! [`HttpProbe`] wraps Pingora's `HttpHealthCheck` (which sends the request
//! and reads the response) and adds what it lacks: a limit on the whole
//! probe, a pass on any of the configured statuses, settings that a reload
//! replaces in place, a record of each backend's last check, and log lines
//! that say why a backend went down (`backend 127.0.0.1:8081 down: status
//! 500`). The pool's background service runs it every interval, all
//! backends in parallel; Pingora applies the thresholds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::prelude::*;

use super::members::{CheckRecord, Members};
use super::outlier::OutlierDetector;
use crate::config::HealthCheckConfig;
use crate::telemetry::metrics::metrics;

/// One version of the probe's settings.
struct ProbeSettings {
    check: HttpHealthCheck,
    timeout: Duration,
}

/// The HTTP probe of the pool's backends.
pub struct HttpProbe {
    settings: ArcSwap<ProbeSettings>,
    members: Arc<Members>,
    /// Passive health, told when a backend passes its checks again.
    outliers: Arc<OutlierDetector>,
}

impl HttpProbe {
    /// Builds the probe described by `config`.
    pub fn new(
        config: &HealthCheckConfig,
        members: Arc<Members>,
        outliers: Arc<OutlierDetector>,
    ) -> Result<Self> {
        Ok(HttpProbe {
            settings: ArcSwap::from_pointee(build_settings(config)?),
            members,
            outliers,
        })
    }

    /// Applies new settings (a reload); the next round of checks uses them.
    pub fn set_config(&self, config: &HealthCheckConfig) -> Result<()> {
        self.settings.store(Arc::new(build_settings(config)?));
        Ok(())
    }

    fn record(&self, target: &Backend, passed: bool, detail: String) {
        let Some(state) = target
            .addr
            .as_inet()
            .and_then(|addr| self.members.state(addr))
        else {
            return;
        };
        metrics().health_check(&state.addr.to_string(), passed);
        let record = CheckRecord {
            at: SystemTime::now(),
            passed,
            detail,
        };
        state.set_last_check(record);
    }

    fn last_failure(&self, target: &Backend) -> String {
        target
            .addr
            .as_inet()
            .and_then(|addr| self.members.state(addr))
            .and_then(|state| state.last_check())
            .map_or_else(|| "health check failed".into(), |r| r.detail)
    }
}

fn build_settings(config: &HealthCheckConfig) -> Result<ProbeSettings> {
    let mut check = HttpHealthCheck::new(&config.host, false);
    check.req.set_uri(config.path.parse().or_err(
        ErrorType::InternalError,
        "health_check.path is not a valid URI path",
    )?);
    check.consecutive_success = config.healthy_threshold.get();
    check.consecutive_failure = config.unhealthy_threshold.get();
    check.peer_template.options.connection_timeout = Some(config.timeout);
    check.peer_template.options.read_timeout = Some(config.timeout);
    check.peer_template.options.write_timeout = Some(config.timeout);
    let expected = config.expected_status.clone();
    check.validator = Some(Box::new(move |resp| {
        let status = resp.status.as_u16();
        if expected.contains(&status) {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::CustomCode("unexpected status", status),
                "health check",
            )
        }
    }));
    Ok(ProbeSettings {
        check,
        timeout: config.timeout,
    })
}

/// A short reason for a failed probe: `status 500`, `timeout after 2s`, or
/// the kind of connection error and its cause.
fn failure_reason(e: &Error, timeout: Duration) -> String {
    match e.etype() {
        ErrorType::CustomCode(_, status) => format!("status {status}"),
        ErrorType::ReadTimedout | ErrorType::ConnectTimedout => {
            format!("timeout after {}", humantime::format_duration(timeout))
        }
        etype => format!("{}: {}", etype.as_str(), e.root_cause()),
    }
}

#[async_trait]
impl HealthCheck for HttpProbe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let settings = self.settings.load_full();
        let outcome =
            match tokio::time::timeout(settings.timeout, settings.check.check(target)).await {
                Ok(outcome) => outcome,
                Err(_) => Error::e_explain(ErrorType::ReadTimedout, "health check took too long"),
            };
        match &outcome {
            Ok(()) => self.record(target, true, String::new()),
            Err(e) => {
                let reason = failure_reason(e, settings.timeout);
                log::debug!("backend {} probe failed: {reason}", target.addr);
                self.record(target, false, reason);
            }
        }
        outcome
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(state) = target
            .addr
            .as_inet()
            .and_then(|addr| self.members.state(addr))
        {
            state.health_changed_now();
        }
        if healthy {
            log::info!("backend {} up", target.addr);
            if let Some(state) = target
                .addr
                .as_inet()
                .and_then(|addr| self.members.state(addr))
            {
                self.outliers.readmit(&state);
            }
        } else {
            log::warn!(
                "backend {} down: {}",
                target.addr,
                self.last_failure(target)
            );
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("backend {}", target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.settings.load().check.health_threshold(success)
    }
}

/// The probe as Pingora's `LoadBalancer` holds it, shared with the pool so a
/// reload can change its settings.
pub struct SharedProbe(pub Arc<HttpProbe>);

#[async_trait]
impl HealthCheck for SharedProbe {
    async fn check(&self, target: &Backend) -> Result<()> {
        self.0.check(target).await
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.0.health_status_change(target, healthy).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.0.backend_summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.0.health_threshold(success)
    }
}
