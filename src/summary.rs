//! The table `lb -t` prints: every setting as lb understood it, one a row,
//! with the routes in the order they match and the certificates as read.

use std::fmt;
use std::time::Duration;

use crate::config::{
    AccessLogTarget, Config, HealthCheckKind, OnMarkedDown, WhenAllUnhealthy, DEFAULT_POOL,
};
use crate::routing::RouteTable;
use crate::tls::ListenerCertificates;

/// A checked config and the certificates it names, as `lb -t` shows them.
pub struct Summary<'a> {
    pub config: &'a Config,
    pub certificates: &'a ListenerCertificates,
}

/// Where a route sends its requests, its rewrite and its policies, as
/// `lb -t` shows them.
fn route_target(route: &crate::config::RouteConfig) -> String {
    let mut text = match (&route.pool, &route.redirect) {
        (_, Some(redirect)) => format!("redirect {} to {}", redirect.status, redirect.to),
        (Some(pool), None) => pool.clone(),
        (None, None) => "-".to_string(),
    };
    if let Some(rewrite) = &route.rewrite {
        text.push_str(&format!(", rewrite {} to {}", rewrite.path, rewrite.to));
    }
    if !route.policies.is_empty() {
        text.push_str(&format!(", policies {}", route.policies.join(" -> ")));
    }
    text
}

/// A duration as the config file writes it (`1h 30m`).
fn d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Summary<'_> {
    /// The settings as (name, value) rows, in the order `lb -t` shows them.
    pub fn summary_rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        self.fleet_rows(&mut rows);
        self.pool_rows(&mut rows);
        self.resilience_rows(&mut rows);
        self.service_rows(&mut rows);
        rows
    }

    /// Which config this is, whether lb follows the file, and what the
    /// replicas of a fleet share.
    fn fleet_rows(&self, rows: &mut Vec<(String, String)>) {
        rows.push(("config hash".into(), self.config.hash.clone()));
        let watch = if self.config.watch_config {
            "reload when the file or its certificates change"
        } else {
            "off (reload by SIGHUP or POST /api/reload)"
        };
        rows.push(("watch config".into(), watch.into()));
        if let Some(cluster) = &self.config.cluster {
            rows.push((
                "cluster".into(),
                format!(
                    "cluster rate limits in Redis {} (keys {:?}), waiting at most {}; alone, a replica allows 1/{} of each",
                    cluster.redis_without_password(),
                    cluster.prefix,
                    d(cluster.timeout),
                    cluster.replicas
                ),
            ));
        }
    }

    /// Listeners, backends and the health check.
    fn pool_rows(&self, rows: &mut Vec<(String, String)>) {
        rows.push((
            "listeners".to_string(),
            self.config
                .listeners
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
        self.certificate_rows(rows);
        self.edge_rows(rows);
        self.routing_rows(rows);
        for b in &self.config.backends {
            rows.push((
                "backend".into(),
                format!("{}:{} weight {}", b.host, b.port, b.weight),
            ));
        }
        if let Some(default) = self.config.pools.iter().find(|u| u.name == DEFAULT_POOL) {
            rows.push(("balance".into(), default.balancing.describe()));
        }
        rows.push((
            "backend transport".into(),
            self.config.backend_transport.describe(),
        ));
        let hc = &self.config.health_check;
        let probe = match hc.kind {
            HealthCheckKind::Http => format!(
                "http: GET {} (Host: {}), pass on {:?}",
                hc.path, hc.host, hc.expected_status
            ),
            HealthCheckKind::Tcp if self.config.backend_transport.tls.is_some() => {
                "tcp: connect and TLS handshake".to_string()
            }
            HealthCheckKind::Tcp => "tcp: connect".to_string(),
            HealthCheckKind::Grpc => format!(
                "grpc: grpc.health.v1.Health/Check (Host: {}) must say SERVING",
                hc.host
            ),
        };
        rows.push((
            "health check".into(),
            format!(
                "{probe}, every {}, timeout {}, up after {}, down after {}{}{}",
                d(hc.interval),
                d(hc.timeout),
                hc.healthy_threshold,
                hc.unhealthy_threshold,
                match (hc.kind, hc.reuse_connection) {
                    (HealthCheckKind::Http, true) => ", reusing its connection",
                    (HealthCheckKind::Http, false) => ", a new connection each",
                    _ => "",
                },
                marked_down(hc.on_marked_down)
            ),
        ));
    }

    /// Each listener's PROXY protocol, trusted proxies and policy chain,
    /// then each policy's kinds.
    fn edge_rows(&self, rows: &mut Vec<(String, String)>) {
        for listener in &self.config.listeners {
            let edge = &listener.edge;
            let mut parts = Vec::new();
            if edge.proxy_protocol {
                parts.push("PROXY protocol required (a change needs a restart)".to_string());
            }
            if !edge.trusted_proxies.is_empty() {
                let nets: Vec<String> =
                    edge.trusted_proxies.iter().map(|n| n.to_string()).collect();
                parts.push(format!("trusted proxies {}", nets.join(", ")));
            }
            if !edge.policies.is_empty() {
                parts.push(format!("policies {}", edge.policies.join(" -> ")));
            }
            if !parts.is_empty() {
                rows.push((format!("listener {}", listener.addr), parts.join("; ")));
            }
        }
        for policy in &self.config.policies {
            rows.push((format!("policy {}", policy.name), policy.kinds().join(", ")));
        }
    }

    /// The routes in the order they are matched, and each named pool.
    fn routing_rows(&self, rows: &mut Vec<(String, String)>) {
        let routes = &self.config.routes;
        if let Ok(table) = RouteTable::new(routes, |route| Some(route_target(route))) {
            for route in table.in_match_order() {
                let config = &routes[route.id];
                rows.push((
                    "route".into(),
                    format!(
                        "{}: host {} path {} -> {}{}",
                        route.name,
                        config.host.as_deref().unwrap_or("*"),
                        config.path_prefix.as_deref().unwrap_or("/"),
                        route.pool,
                        if route.strip_prefix {
                            " (prefix stripped)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        for upstream in self.config.pools.iter().filter(|u| u.name != DEFAULT_POOL) {
            let backends: Vec<String> = upstream
                .backends
                .iter()
                .map(|b| format!("{}:{} weight {}", b.host, b.port, b.weight))
                .collect();
            let hc = &upstream.health_check;
            rows.push((
                "upstream".into(),
                format!(
                    "{}: {}, {}; health check {} every {}{}",
                    upstream.name,
                    upstream.balancing.describe(),
                    backends.join(", "),
                    hc.path,
                    d(hc.interval),
                    marked_down(hc.on_marked_down)
                ),
            ));
        }
    }

    /// Each TLS listener's certificates: file, names, expiry.
    fn certificate_rows(&self, rows: &mut Vec<(String, String)>) {
        for (addr, set) in self.certificates.iter() {
            for (i, c) in set.iter().enumerate() {
                rows.push((
                    "certificate".into(),
                    format!(
                        "{} {}: {}, {} {}{}",
                        addr,
                        c.files.cert.display(),
                        c.names.join(" "),
                        if c.expired() { "EXPIRED on" } else { "expires" },
                        c.expiry_text(),
                        if i == 0 { " (default)" } else { "" }
                    ),
                ));
            }
        }
    }

    /// Timeouts, headers, retries and passive health.
    fn resilience_rows(&self, rows: &mut Vec<(String, String)>) {
        let t = &self.config.timeouts;
        rows.push((
            "timeouts".into(),
            format!(
                "connect {}, upstream response {}, upstream idle {}, client header {}, client body {}, client idle {}, tunnel idle {}, request {}, TLS handshake {}",
                d(t.connect),
                d(t.upstream_response),
                d(t.upstream_idle),
                d(t.client_header),
                d(t.client_body),
                d(t.client_idle),
                d(t.tunnel_idle),
                if t.request.is_zero() { "none".into() } else { d(t.request) },
                d(t.tls_handshake)
            ),
        ));
        let on_off = |on: bool| if on { "on" } else { "off" };
        rows.push((
            "headers".into(),
            format!(
                "X-Forwarded-For/-Proto/-Host {}, X-Request-Id {}",
                on_off(self.config.headers.forwarded),
                on_off(self.config.headers.request_id)
            ),
        ));
        let r = &self.config.retry;
        rows.push((
            "retry".into(),
            format!(
                "{} attempt(s), budget {}% of active requests (at least {})",
                r.attempts, r.budget_percent, r.budget_min_retries
            ),
        ));
        let p = &self.config.passive_health;
        rows.push((
            "passive health".into(),
            if p.consecutive_failures == 0 {
                "off".into()
            } else {
                format!(
                    "eject after {} failures in a row for {} (up to {}), at most {}% of the pool, 5xx {}",
                    p.consecutive_failures,
                    d(p.ejection_time),
                    d(p.max_ejection_time),
                    p.max_ejected_percent,
                    if p.count_5xx { "counts" } else { "does not count" }
                )
            },
        ));
        rows.push((
            "when all unhealthy".into(),
            match self.config.when_all_unhealthy {
                WhenAllUnhealthy::Fail => "fail (503)".into(),
                WhenAllUnhealthy::TryAll => "try_all".into(),
            },
        ));
    }

    /// Limits, discovery, the admin API, the access log and Pingora's server.
    fn service_rows(&self, rows: &mut Vec<(String, String)>) {
        let l = &self.config.limits;
        rows.push((
            "limits".into(),
            format!(
                "header {} B, {} headers, URI {} B, body {}, {} connections ({} in their TLS handshake)",
                l.max_header_bytes,
                l.max_request_headers,
                l.max_uri_bytes,
                if l.max_body_bytes == 0 {
                    "unlimited".to_string()
                } else {
                    format!("{} B", l.max_body_bytes)
                },
                l.max_connections,
                l.max_tls_handshakes
            ),
        ));
        rows.push((
            "discovery".into(),
            format!(
                "every {} by {}; a missing name is held {}",
                d(self.config.discovery.interval),
                self.config.discovery.resolver.map_or_else(
                    || "the system resolver".to_string(),
                    |r| format!("DNS server {r}")
                ),
                d(self.config.discovery.hold_missing)
            ),
        ));
        rows.push((
            "admin".into(),
            match &self.config.admin {
                Some(a) => format!(
                    "http://{} ({})",
                    a.listen,
                    if a.token.is_some() {
                        "bearer token required"
                    } else {
                        "no token"
                    }
                ),
                None => "off".into(),
            },
        ));
        rows.push((
            "access log".into(),
            match &self.config.access_log {
                Some(a) => format!(
                    "{:?} to {}",
                    a.format,
                    match &a.target {
                        AccessLogTarget::Stdout => "stdout".to_string(),
                        AccessLogTarget::File(p) => p.display().to_string(),
                    }
                )
                .to_lowercase(),
                None => "through RUST_LOG (target lb::access)".into(),
            },
        ));
        self.server_rows(rows);
    }

    /// Pingora's server settings, then every warning.
    fn server_rows(&self, rows: &mut Vec<(String, String)>) {
        let s = &self.config.server;
        rows.push(("threads".into(), s.threads.to_string()));
        rows.push(("runtime".into(), crate::config::runtime_name(s)));
        rows.push((
            "backend idle pool".into(),
            format!(
                "at most {} idle connections to backends",
                s.upstream_keepalive_pool_size
            ),
        ));
        rows.push((
            "grace period".into(),
            format!(
                "{}s, then {}s to shut down",
                s.grace_period_seconds.unwrap_or_default(),
                s.graceful_shutdown_timeout_seconds.unwrap_or_default()
            ),
        ));
        rows.push(("pid file".into(), s.pid_file.clone()));
        rows.push(("upgrade socket".into(), s.upgrade_sock.clone()));
        for warning in self
            .config
            .warnings
            .iter()
            .chain(&self.certificates.expired())
        {
            rows.push(("warning".into(), warning.clone()));
        }
    }
}

impl fmt::Display for Summary<'_> {
    /// The table `lb -t` prints: one setting a row, names aligned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.summary_rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (i, (key, value)) in rows.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{key:width$}  {value}")?;
        }
        Ok(())
    }
}

/// What `lb -t` says of `on_marked_down`: nothing for the default.
fn marked_down(on_marked_down: OnMarkedDown) -> &'static str {
    match on_marked_down {
        OnMarkedDown::Keep => "",
        OnMarkedDown::Close => {
            "; requests in flight to a backend marked down are cut off and retried"
        }
    }
}
