//! Active health checks: a probe of each backend with thresholds, over the
//! same transport as requests (TLS, SNI, certificate checks, HTTP/2).
//!
//! [`Probe`] sends one of three checks (`health_check.type`):
//! - `http`: a request to `health_check.path`; any configured status passes.
//! - `tcp`: a connection, and the TLS handshake when backends use TLS.
//! - `grpc`: `grpc.health.v1.Health/Check` with an empty request, over
//!   HTTP/2; it passes on status 200, `grpc-status` 0 and SERVING.
//!
//! Pingora's `HttpHealthCheck` and `TcpHealthCheck` are not used, for three
//! reasons read from their 0.9 source: their peer template has one SNI for
//! every backend (lb's default SNI is each backend's own host name), the
//! HTTP check cannot send a request body (gRPC needs the 5-byte message
//! prefix), and its validator sees the response header only, never the body
//! or the trailers where gRPC puts its answer. The probe drives Pingora's
//! connectors itself, with the peer built by [`PeerTemplate`] like a
//! request's. It also adds a limit on the whole probe, settings that a reload
//! replaces in place, a record of each backend's last check, and log lines
//! that say why a backend went down (`backend 127.0.0.1:8081 down: status
//! 500`). The pool's background service runs it every interval, all backends
//! in parallel; Pingora applies the thresholds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;

use super::members::{CheckRecord, Members};
use super::outlier::OutlierDetector;
use super::transport::{probe_connectors, PeerTemplate};
use crate::config::{BackendTransport, HealthCheckConfig, HealthCheckKind};

/// The path of the gRPC health-checking protocol's one unary method.
const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// One version of the probe's settings.
struct ProbeSettings {
    kind: HealthCheckKind,
    /// The request an `http` probe sends over HTTP/1.1, with a `Host` header.
    request: RequestHeader,
    /// The request an `http` or `grpc` probe sends over HTTP/2: the host in
    /// `:authority` only, as Pingora's proxy sends requests (nginx refuses
    /// a `Host` header beside `:authority` as a duplicate).
    request_h2: RequestHeader,
    /// Statuses an `http` probe passes on.
    expected_status: Vec<u16>,
    /// The connection settings: the requests' own, with the probe's timeouts.
    peer: PeerTemplate,
    timeout: Duration,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
    /// How long a passed `http` check's connection is kept for the next
    /// check; None: each check connects anew.
    keep_for: Option<Duration>,
    /// Each backend's check starts this far into a round at most, at a
    /// point of its own ([`phase_of`]), so that a round's checks are spread
    /// over the interval instead of leaving together.
    phase_window: Duration,
}

/// A probe's new settings, built and checked, not yet applied.
pub struct PreparedProbe(Arc<ProbeSettings>);

/// The probe of the pool's backends.
pub struct Probe {
    settings: ArcSwap<ProbeSettings>,
    members: Arc<Members>,
    /// Passive health, told when a backend passes its checks again.
    outliers: Arc<OutlierDetector>,
    /// The pool it probes, whose usable ring follows each change of health
    /// at once, not at the end of the round.
    pub(super) pool: std::sync::OnceLock<std::sync::Weak<super::Pool>>,
}

impl Probe {
    /// Builds the probe described by `config`, reaching backends over
    /// `transport`.
    pub fn new(
        config: &HealthCheckConfig,
        transport: &BackendTransport,
        members: Arc<Members>,
        outliers: Arc<OutlierDetector>,
    ) -> Result<Self> {
        Ok(Probe {
            settings: ArcSwap::from_pointee(build_settings(config, transport)?),
            members,
            outliers,
            pool: std::sync::OnceLock::new(),
        })
    }

    /// Checks and builds new settings (a reload) without applying them.
    pub fn prepare(
        config: &HealthCheckConfig,
        transport: &BackendTransport,
    ) -> Result<PreparedProbe> {
        Ok(PreparedProbe(Arc::new(build_settings(config, transport)?)))
    }

    /// Applies settings [`Probe::prepare`] built; the next round of checks
    /// uses them.
    pub fn apply(&self, prepared: PreparedProbe) {
        self.settings.store(prepared.0);
    }

    fn record(&self, target: &Backend, passed: bool, detail: String) {
        let Some(state) = target
            .addr
            .as_inet()
            .and_then(|addr| self.members.state(addr))
        else {
            return;
        };
        state.metrics.health_check(passed);
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

    /// One probe of `addr`, without the overall time limit.
    async fn probe(&self, settings: &ProbeSettings, addr: SocketAddr) -> Result<()> {
        // The SNI defaults to the host name the backend was configured with.
        let state = self.members.state(&addr);
        let host = state
            .as_ref()
            .map_or_else(|| addr.ip().to_string(), |s| s.host.clone());
        let mut peer = settings.peer.peer(addr, &host);
        peer.options.connection_timeout = Some(settings.timeout);
        peer.options.read_timeout = Some(settings.timeout);
        peer.options.write_timeout = Some(settings.timeout);
        match settings.kind {
            HealthCheckKind::Tcp => probe_connectors()
                .transport
                .new_stream(&peer)
                .await
                .map(drop),
            HealthCheckKind::Http => {
                let (mut session, _) = probe_connectors().http.get_http_session(&peer).await?;
                session.set_write_timeout(peer.options.write_timeout);
                session.set_read_timeout(peer.options.read_timeout);
                let request = match session {
                    HttpSession::H2(_) => &settings.request_h2,
                    _ => &settings.request,
                };
                session
                    .write_request_header(Box::new(request.clone()))
                    .await?;
                session.finish_request_body().await?;
                session.read_response_header().await?;
                let status = session
                    .response_header()
                    .map_or(0, |resp| resp.status.as_u16());
                if !settings.expected_status.contains(&status) {
                    return Error::e_explain(
                        ErrorType::CustomCode("unexpected status", status),
                        "health check",
                    );
                }
                while session.read_response_body().await?.is_some() {}
                if settings.keep_for.is_some() {
                    probe_connectors()
                        .http
                        .release_http_session(session, &peer, settings.keep_for)
                        .await;
                }
                Ok(())
            }
            HealthCheckKind::Grpc => {
                let (session, _) = probe_connectors().http.get_http_session(&peer).await?;
                grpc_check(session, &settings.request_h2, settings.timeout).await
            }
        }
    }
}

fn build_settings(
    config: &HealthCheckConfig,
    transport: &BackendTransport,
) -> Result<ProbeSettings> {
    let (method, path) = match config.kind {
        HealthCheckKind::Grpc => ("POST", GRPC_HEALTH_PATH),
        HealthCheckKind::Http | HealthCheckKind::Tcp => ("GET", config.path.as_str()),
    };
    let mut request = RequestHeader::build(method, path.as_bytes(), None)?;
    request.insert_header("Host", &config.host)?;
    request.insert_header("User-Agent", super::PROBE_USER_AGENT)?;
    let mut request_h2 = RequestHeader::build(method, path.as_bytes(), None)?;
    request_h2.insert_header("User-Agent", super::PROBE_USER_AGENT)?;
    let scheme = if transport.tls.is_some() {
        "https"
    } else {
        "http"
    };
    request_h2.set_uri(
        http::Uri::builder()
            .scheme(scheme)
            .authority(config.host.as_str())
            .path_and_query(path)
            .build()
            .or_err(
                ErrorType::InternalError,
                "health_check.host and path do not make an HTTP/2 request",
            )?,
    );
    if config.kind == HealthCheckKind::Grpc {
        request_h2.insert_header("Content-Type", "application/grpc")?;
        request_h2.insert_header("TE", "trailers")?;
    }
    let mut peer = PeerTemplate::new(transport);
    // One stream a connection. A passed `http` check hands its connection
    // back when `reuse_connection` is on (the default, as Envoy's): the next
    // check of that backend costs a request, not a connect (Pingora checks
    // that a reused connection is still open). Off, every check connects,
    // as HAProxy's do, and so sees a backend that stopped accepting.
    peer.set_max_h2_streams(1);
    Ok(ProbeSettings {
        kind: config.kind,
        request,
        request_h2,
        expected_status: config.expected_status.clone(),
        peer,
        timeout: config.timeout,
        healthy_threshold: config.healthy_threshold.get(),
        unhealthy_threshold: config.unhealthy_threshold.get(),
        // Kept past the next check's start, so that it is there to reuse.
        keep_for: config
            .reuse_connection
            .then(|| config.interval + config.timeout),
        // So that the last check of a round ends within the interval.
        phase_window: config.interval.saturating_sub(config.timeout),
    })
}

/// Where in `window` the check of `addr` starts: a point of its own, the
/// same every round (a hash of the address), so that each backend is
/// checked once an interval and a pool's checks are spread evenly, as
/// HAProxy spreads its servers' checks.
fn phase_of(addr: SocketAddr, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 18];
    match addr.ip() {
        std::net::IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes[..16].copy_from_slice(&ip.octets()),
    }
    bytes[16..].copy_from_slice(&addr.port().to_be_bytes());
    let point = super::members::fnv1a(&bytes) as f64 / u64::MAX as f64;
    window.mul_f64(point)
}

/// A short reason for a failed probe: `status 500`, `timeout after 2s`,
/// `NOT_SERVING`, or the kind of connection error and its cause.
fn failure_reason(e: &Error, timeout: Duration) -> String {
    match e.etype() {
        ErrorType::CustomCode(_, status) => format!("status {status}"),
        ErrorType::Custom(_) => e
            .context
            .as_ref()
            .map_or_else(|| "health check failed".into(), |c| c.as_str().to_string()),
        ErrorType::ReadTimedout | ErrorType::ConnectTimedout => {
            format!("timeout after {}", humantime::format_duration(timeout))
        }
        // The TLS errors' context names what failed ("certificate verify
        // failed", the SNI); their cause only names the local address.
        ErrorType::InvalidCert | ErrorType::TLSHandshakeFailure => {
            format!(
                "{}: {}",
                e.etype().as_str(),
                e.context.as_ref().map_or("", |c| c.as_str())
            )
        }
        etype => format!("{}: {}", etype.as_str(), e.root_cause()),
    }
}

#[async_trait]
impl HealthCheck for Probe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let settings = self.settings.load_full();
        let Some(addr) = target.addr.as_inet().copied() else {
            return Err(failed("not an IP backend"));
        };
        let phase = phase_of(addr, settings.phase_window);
        if !phase.is_zero() {
            tokio::time::sleep(phase).await;
        }
        let outcome =
            match tokio::time::timeout(settings.timeout, self.probe(&settings, addr)).await {
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
        let state = target
            .addr
            .as_inet()
            .and_then(|addr| self.members.state(addr));
        if let Some(state) = &state {
            state.health_changed_now();
        }
        let pool = self.pool.get().and_then(std::sync::Weak::upgrade);
        if let Some(pool) = &pool {
            pool.health_changed().await;
        }
        if healthy {
            // One line per return, also when it ends an ejection.
            let ejected = state.as_ref().is_some_and(|s| self.outliers.readmit(s));
            let ended = if ejected { ", its ejection ended" } else { "" };
            log::info!("backend {} up{ended}", target.addr);
            if let Some(state) = state {
                state.start_ramp();
            }
        } else {
            let closed = match (&pool, target.addr.as_inet()) {
                (Some(pool), Some(addr)) => pool.marked_down(*addr),
                _ => None,
            };
            let closed = closed.map_or(String::new(), |n| {
                format!("; {n} connection(s) of requests in flight to it shut down (on_marked_down: close)")
            });
            log::warn!(
                "backend {} down: {}{closed}",
                target.addr,
                self.last_failure(target)
            );
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("backend {}", target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        let settings = self.settings.load();
        if success {
            settings.healthy_threshold
        } else {
            settings.unhealthy_threshold
        }
    }
}

/// The probe as Pingora's `LoadBalancer` holds it, shared with the pool so a
/// reload can change its settings.
pub struct SharedProbe(pub Arc<Probe>);

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

mod grpc;

#[cfg(test)]
use grpc::{check_grpc_status, serving_status};
use grpc::{failed, grpc_check};

#[cfg(test)]
mod tests;
