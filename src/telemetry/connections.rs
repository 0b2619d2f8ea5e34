//! Metrics of client connections: how many are open and in their TLS
//! handshake, and how many were closed at once by a limit.

use prometheus::{IntCounter, IntGauge, Registry};

/// Client connection metrics, part of [`super::metrics::Metrics`].
pub struct ConnectionMetrics {
    /// `lb_client_connections`: open now, TLS handshakes included.
    pub open: IntGauge,
    /// `lb_tls_handshakes_in_progress`.
    pub handshaking: IntGauge,
    /// `lb_client_connections_refused_total`, by the limit's key:
    /// `max_connections` and `max_tls_handshakes`, resolved once.
    refused: [IntCounter; 2],
}

impl ConnectionMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> ConnectionMetrics {
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "lb_client_connections_refused_total",
                "Client connections closed at once, by the limit reached \
                 (max_connections, max_tls_handshakes).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let open = IntGauge::new(
            "lb_client_connections",
            "Client connections open now, TLS connections in their handshake included.",
        )
        .expect("valid metric");
        let handshaking = IntGauge::new(
            "lb_tls_handshakes_in_progress",
            "Client connections in their TLS handshake now.",
        )
        .expect("valid metric");
        for metric in [
            Box::new(refused.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(open.clone()),
            Box::new(handshaking.clone()),
        ] {
            if let Err(e) = registry.register(metric) {
                log::warn!("cannot register a connection metric: {e}");
            }
        }
        ConnectionMetrics {
            open,
            handshaking,
            refused: ["max_connections", "max_tls_handshakes"]
                .map(|reason| refused.with_label_values(&[reason])),
        }
    }

    /// Counts a connection closed at once for the limit `key`.
    pub fn refused(&self, key: &str) {
        let index = usize::from(key == "max_tls_handshakes");
        self.refused[index].inc();
    }
}
