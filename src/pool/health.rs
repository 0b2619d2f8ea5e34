//! Active health checks: an HTTP probe of each backend with thresholds.
//!
//! [`HttpProbe`] wraps Pingora's `HttpHealthCheck` (which sends the request
//! and reads the response) and adds what it lacks: a limit on the whole
//! probe, a pass on any of the configured statuses, and log lines that say
//! why a backend went down (`backend 127.0.0.1:8081 down: status 500`).
//! Pingora's `LoadBalancer` background service runs it every interval,
//! all backends in parallel, and applies the thresholds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;

use super::outlier::OutlierDetector;
use crate::config::HealthCheckConfig;

/// The HTTP probe of the pool's backends.
pub struct HttpProbe {
    inner: HttpHealthCheck,
    timeout: Duration,
    /// Why each backend's last probe failed, for the "down" log line.
    /// Only the health-check task touches it, once per probe, never a request.
    last_failure: Mutex<HashMap<SocketAddr, String>>,
    /// Passive health, told when a backend passes its checks again.
    outliers: Arc<OutlierDetector>,
}

impl HttpProbe {
    /// Builds the probe described by `config`.
    pub fn new(config: &HealthCheckConfig, outliers: Arc<OutlierDetector>) -> Result<Self> {
        let mut inner = HttpHealthCheck::new(&config.host, false);
        inner.req.set_uri(config.path.parse().or_err(
            ErrorType::InternalError,
            "health_check.path is not a valid URI path",
        )?);
        inner.consecutive_success = config.healthy_threshold.get();
        inner.consecutive_failure = config.unhealthy_threshold.get();
        inner.peer_template.options.connection_timeout = Some(config.timeout);
        inner.peer_template.options.read_timeout = Some(config.timeout);
        inner.peer_template.options.write_timeout = Some(config.timeout);
        let expected = config.expected_status.clone();
        inner.validator = Some(Box::new(move |resp| {
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
        Ok(HttpProbe {
            inner,
            timeout: config.timeout,
            last_failure: Mutex::new(HashMap::new()),
            outliers,
        })
    }

    fn remember_failure(&self, target: &Backend, reason: String) {
        if let Ok(mut failures) = self.last_failure.lock() {
            failures.insert(target.addr.clone(), reason);
        }
    }

    fn last_failure(&self, target: &Backend) -> String {
        self.last_failure
            .lock()
            .ok()
            .and_then(|failures| failures.get(&target.addr).cloned())
            .unwrap_or_else(|| "health check failed".into())
    }
}

/// A short reason for a failed probe: `status 500`, `timeout after 2s`, or
/// Pingora's description of a connection error.
fn failure_reason(e: &Error) -> String {
    match e.etype() {
        ErrorType::CustomCode(_, status) => format!("status {status}"),
        etype => format!("{}: {}", etype.as_str(), e.root_cause()),
    }
}

#[async_trait]
impl HealthCheck for HttpProbe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let outcome = match tokio::time::timeout(self.timeout, self.inner.check(target)).await {
            Ok(outcome) => outcome,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, "health check took too long"),
        };
        if let Err(e) = &outcome {
            let reason = if matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::ConnectTimedout
            ) {
                format!("timeout after {}", humantime::format_duration(self.timeout))
            } else {
                failure_reason(e)
            };
            log::debug!("backend {} probe failed: {reason}", target.addr);
            self.remember_failure(target, reason);
        }
        outcome
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!("backend {} up", target.addr);
            if let Some(addr) = target.addr.as_inet() {
                self.outliers.readmit(addr);
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
        self.inner.health_threshold(success)
    }
}
