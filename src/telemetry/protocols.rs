//! Metrics of the client side's protocols: TLS handshakes by outcome,
//! certificate expiry, requests by protocol and by route, upgraded
//! connections. Part of [`super::metrics::Metrics`].

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::metrics::{counter_vec, gauge_vec, register};

/// Requests by protocol, indexed by [`Protocol`].
const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];

/// A client request's protocol, for `lb_requests_by_protocol_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http10 = 0,
    Http11 = 1,
    Http2 = 2,
}

impl Protocol {
    /// Its name as the access log and the metrics write it.
    pub fn name(self) -> &'static str {
        PROTOCOLS[self as usize]
    }
}

/// What the TLS listeners and the protocol mix export.
pub struct ProtocolMetrics {
    tls_handshakes: IntCounterVec,
    certificate_expiry: IntGaugeVec,
    /// Expiry of each listener's certificates, by (listener, name): the
    /// gauge is the time left, computed when scraped.
    expiries: std::sync::Mutex<Vec<(String, String, std::time::SystemTime)>>,
    by_protocol: [IntCounter; 3],
    /// Connections upgraded (WebSocket) and open now.
    pub upgraded_connections: IntGauge,
    /// Requests by route.
    route_requests: IntCounterVec,
}

impl ProtocolMetrics {
    pub(super) fn new(registry: &Registry) -> ProtocolMetrics {
        let by_protocol = counter_vec(
            registry,
            "lb_requests_by_protocol_total",
            "Client requests by protocol (HTTP/1.0, HTTP/1.1, HTTP/2).",
            &["protocol"],
        );
        ProtocolMetrics {
            tls_handshakes: counter_vec(
                registry,
                "lb_tls_handshakes_total",
                "TLS handshakes on client listeners, by listener, version and outcome \
                 (ok; failed: broken off during the handshake; not_tls: the client spoke no TLS; \
                 timeout: shut down at timeouts.tls_handshake; refused: closed at once by a limit).",
                &["listener", "version", "outcome"],
            ),
            certificate_expiry: gauge_vec(
                registry,
                "lb_tls_certificate_expiry_seconds",
                "Seconds until each listener certificate's notAfter (0 once expired), by listener and name.",
                &["listener", "name"],
            ),
            expiries: std::sync::Mutex::new(Vec::new()),
            by_protocol: PROTOCOLS.map(|p| by_protocol.with_label_values(&[p])),
            route_requests: counter_vec(
                registry,
                "lb_route_requests_total",
                "Requests by the route that matched them (none: no route matched, 404).",
                &["route"],
            ),
            upgraded_connections: register(
                registry,
                IntGauge::new(
                    "lb_upgraded_connections",
                    "Client connections upgraded (WebSocket) and open now.",
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Counts a TLS handshake on `listener`.
    pub fn tls_handshake(&self, listener: &str, version: &str, outcome: &str) {
        self.tls_handshakes
            .with_label_values(&[listener, version, outcome])
            .inc();
    }

    /// The counter of requests for the route `name` (`none`: no route
    /// matched), resolved once per config.
    pub fn route_counter(&self, name: &str) -> IntCounter {
        self.route_requests.with_label_values(&[name])
    }

    /// Counts one client request.
    pub fn request(&self, protocol: Protocol) {
        self.by_protocol[protocol as usize].inc();
    }

    /// Replaces `listener`'s certificate expiries with `names_and_expiry`.
    pub fn set_certificates(
        &self,
        listener: &str,
        names_and_expiry: impl Iterator<Item = (String, std::time::SystemTime)>,
    ) {
        let mut expiries = crate::sync::lock(&self.expiries);
        for (l, name, _) in expiries.iter().filter(|(l, _, _)| l == listener) {
            let _ = self.certificate_expiry.remove_label_values(&[l, name]);
        }
        expiries.retain(|(l, _, _)| l != listener);
        expiries.extend(names_and_expiry.map(|(name, at)| (listener.to_string(), name, at)));
    }

    /// Sets the expiry gauges to the time left now.
    pub(super) fn refresh_expiry(&self) {
        let now = std::time::SystemTime::now();
        let expiries = crate::sync::lock(&self.expiries);
        for (listener, name, at) in expiries.iter() {
            let left = at.duration_since(now).map_or(0, |d| d.as_secs());
            self.certificate_expiry
                .with_label_values(&[listener, name])
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
}
