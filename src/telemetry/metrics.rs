//! Prometheus metrics, served as text at `GET /metrics` on the admin listener.
//!
//! One process-wide registry. Per-backend series carry two labels: the
//! pool (`upstream`) and the address (`backend`), so one address in two
//! pools is two series. Counters a request touches are resolved to their
//! label values once (per backend state, when it is made) so the request
//! path pays an atomic add, not a label lookup. Gauges that describe the
//! pools (health, ejection, draining, in-flight) are read from the current
//! pools when scraped, so a pool a reload removed leaves no gauge behind.
//! A backend that leaves its pool (admin API, DNS, reload) has its
//! counters and histograms removed too ([`Metrics::remove_backend`]):
//! without it, 20 add/remove cycles left 860 stale series until restart.

use std::sync::OnceLock;

pub use super::protocols::{Protocol, ProtocolMetrics};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Bucket bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The labels of a per-backend series: its pool and its address. Requests
/// lb answered itself have `none` for both.
const BACKEND_LABELS: &[&str] = &["upstream", "backend"];

/// The label value of requests no backend answered, for both labels.
const NONE: &str = "none";

/// Status classes, indexed by `status / 100` (0 for "no response").
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Outcomes of an active health check, indexed by whether it passed.
const CHECK_OUTCOMES: [&str; 2] = ["fail", "pass"];

/// Every metric lb exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    backend_healthy: IntGaugeVec,
    backend_ejected: IntGaugeVec,
    backend_draining: IntGaugeVec,
    backend_in_flight: IntGaugeVec,
    retries: IntCounterVec,
    pub retry_budget_refusals: IntCounter,
    /// Pooled backend connections Pingora found unusable as it took them
    /// (its log line `failed to acquire reusable stream`), each replaced
    /// by a new connection.
    pub upstream_reuse_races: IntCounter,
    health_checks: IntCounterVec,
    /// Client connections: open, in their handshake, refused.
    pub connections: super::connections::ConnectionMetrics,
    /// `lb_upstream_connections_total` for reused = false and true,
    /// resolved once: every request counts one.
    upstream_connections: [IntCounter; 2],
    reloads: IntCounterVec,
    /// `lb_config_info{hash}`: 1 for the config running.
    config_info: IntGaugeVec,
    /// Requests no backend answered (lb's own 4xx/5xx), by status class.
    unrouted: BackendMetrics,
    /// TLS handshakes, certificates and requests by protocol.
    pub protocols: ProtocolMetrics,
    /// Policy decisions and PROXY protocol errors.
    pub policies: super::policies::PolicyMetrics,
}

/// One backend's state as the scrape-time gauges show it.
#[derive(Debug, Clone, Copy)]
pub struct BackendGauges {
    pub healthy: bool,
    pub ejected: bool,
    pub draining: bool,
    pub in_flight: usize,
}

/// The handles one backend's requests and health checks update.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    by_class: [IntCounter; 6],
    duration: Histogram,
    upstream: Histogram,
    /// `lb_health_checks_total` by [`CHECK_OUTCOMES`]; None for requests
    /// no backend answered. Resolved once, so a check that ends after its
    /// backend left the pool cannot bring its series back.
    checks: Option<[IntCounter; 2]>,
}

impl BackendMetrics {
    /// Counts one finished request with its status (0: none sent) and
    /// times in seconds.
    pub fn observe(&self, status: u16, total: f64, upstream: Option<f64>) {
        let class = usize::from(status / 100).min(5);
        self.by_class[class].inc();
        self.duration.observe(total);
        if let Some(upstream) = upstream {
            self.upstream.observe(upstream);
        }
    }

    /// Counts an active health check of this backend.
    pub fn health_check(&self, passed: bool) {
        if let Some(checks) = &self.checks {
            checks[usize::from(passed)].inc();
        }
    }

    /// This backend's latency histogram (for the status page's percentiles).
    pub fn duration(&self) -> &Histogram {
        &self.duration
    }

    /// Requests counted so far, and those of them with a 5xx status.
    pub fn totals(&self) -> (u64, u64) {
        let all = self.by_class.iter().map(IntCounter::get).sum();
        (all, self.by_class[5].get())
    }
}

pub(super) fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    // Names are fixed and distinct: registering cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

pub(super) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// `lb_config_reloads_total{outcome}` and `lb_config_info{hash}`.
fn config_metrics(registry: &Registry) -> (IntCounterVec, IntGaugeVec) {
    let reloads = counter_vec(
        registry,
        "lb_config_reloads_total",
        "Config reloads (SIGHUP, admin API, a change of the file), by outcome.",
        &["outcome"],
    );
    let info = gauge_vec(
        registry,
        "lb_config_info",
        "1, labelled with the hash of the config this replica runs (as lb -t and \
         /api/status show it): replicas with different hashes have drifted.",
        &["hash"],
    );
    (reloads, info)
}

pub(super) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram_vec(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(
        registry,
        HistogramVec::new(opts, BACKEND_LABELS).expect("valid metric"),
    )
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let (requests, request_duration, upstream_duration) = request_series(&registry);
        let unrouted = backend_handles(
            &requests,
            &request_duration,
            &upstream_duration,
            [NONE, NONE],
        );
        let health_checks = counter_vec(
            &registry,
            "lb_health_checks_total",
            "Active health checks, by upstream, backend and outcome.",
            &["upstream", "backend", "outcome"],
        );
        let retry_budget_refusals = counter(
            &registry,
            "lb_retry_budget_refusals_total",
            "Retries refused because the retry budget was spent.",
        );
        let upstream_reuse_races = counter(
            &registry,
            "lb_upstream_reuse_races_total",
            "Pooled backend connections lost to a race as they were taken, each replaced by a new one.",
        );
        let (reloads, config_info) = config_metrics(&registry);
        Metrics {
            backend_healthy: gauge_vec(
                &registry,
                "lb_backend_healthy",
                "1 if the active health checks pass.",
                BACKEND_LABELS,
            ),
            backend_ejected: gauge_vec(
                &registry,
                "lb_backend_ejected",
                "1 if passive health ejected the backend.",
                BACKEND_LABELS,
            ),
            backend_draining: gauge_vec(
                &registry,
                "lb_backend_draining",
                "1 if the backend is drained.",
                BACKEND_LABELS,
            ),
            backend_in_flight: gauge_vec(
                &registry,
                "lb_backend_in_flight",
                "Requests in flight to the backend.",
                BACKEND_LABELS,
            ),
            retries: counter_vec(
                &registry,
                "lb_retries_total",
                "Retries on another backend, by reason.",
                &["reason"],
            ),
            health_checks,
            upstream_connections: upstream_connection_counters(&registry),
            reloads,
            config_info,
            requests,
            request_duration,
            upstream_duration,
            retry_budget_refusals,
            connections: super::connections::ConnectionMetrics::new(&registry),
            upstream_reuse_races,
            unrouted,
            protocols: ProtocolMetrics::new(&registry),
            policies: super::policies::PolicyMetrics::new(&registry),
            registry,
        }
    }

    /// The handles for requests to `backend` (an address) of the pool
    /// `upstream`.
    pub fn for_backend(&self, upstream: &str, backend: &str) -> BackendMetrics {
        let mut handles = backend_handles(
            &self.requests,
            &self.request_duration,
            &self.upstream_duration,
            [upstream, backend],
        );
        handles.checks = Some(CHECK_OUTCOMES.map(|outcome| {
            self.health_checks
                .with_label_values(&[upstream, backend, outcome])
        }));
        handles
    }

    /// Removes every series of `backend` (an address) in the pool
    /// `upstream`: it left the pool. Handles still held (requests in
    /// flight) count on unseen; a backend that comes back starts at 0.
    pub fn remove_backend(&self, upstream: &str, backend: &str) {
        // Errors mean "no such series": nothing to remove.
        for class in STATUS_CLASSES {
            let _ = self
                .requests
                .remove_label_values(&[upstream, backend, class]);
        }
        for outcome in CHECK_OUTCOMES {
            let _ = self
                .health_checks
                .remove_label_values(&[upstream, backend, outcome]);
        }
        let labels = [upstream, backend];
        let _ = self.request_duration.remove_label_values(&labels);
        let _ = self.upstream_duration.remove_label_values(&labels);
    }

    /// The handles for requests no backend answered.
    pub fn unrouted(&self) -> &BackendMetrics {
        &self.unrouted
    }

    /// Sets the pool gauges (`lb_backend_healthy`, `_ejected`, `_draining`,
    /// `_in_flight`) to `backends`, each `(upstream, address, state)`, and
    /// drops the series of backends and pools no longer there.
    pub fn set_backend_gauges<'a>(
        &self,
        backends: impl IntoIterator<Item = (&'a str, String, BackendGauges)>,
    ) {
        let gauges = [
            &self.backend_healthy,
            &self.backend_ejected,
            &self.backend_draining,
            &self.backend_in_flight,
        ];
        for gauge in gauges {
            gauge.reset();
        }
        for (upstream, address, state) in backends {
            let labels = [upstream, address.as_str()];
            let values = [
                i64::from(state.healthy),
                i64::from(state.ejected),
                i64::from(state.draining),
                i64::try_from(state.in_flight).unwrap_or(i64::MAX),
            ];
            for (gauge, value) in gauges.iter().zip(values) {
                gauge.with_label_values(&labels).set(value);
            }
        }
    }

    /// Counts a retry; `reason` is one of a few fixed words.
    pub fn retry(&self, reason: &str) {
        self.retries.with_label_values(&[reason]).inc();
    }

    /// Counts a connection to a backend used for a request.
    pub fn upstream_connection(&self, reused: bool) {
        self.upstream_connections[usize::from(reused)].inc();
    }

    /// Counts a config reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Says which config runs: `hash`'s series is the only one.
    pub fn config_running(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }

    /// Every metric in Prometheus' text format.
    pub fn render(&self) -> Vec<u8> {
        self.protocols.refresh_expiry();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// `lb_requests_total` and the two latency histograms, by upstream and
/// backend.
fn request_series(registry: &Registry) -> (IntCounterVec, HistogramVec, HistogramVec) {
    let requests = counter_vec(
        registry,
        "lb_requests_total",
        "Requests through lb, by upstream and backend (none: lb answered itself) and status class.",
        &["upstream", "backend", "class"],
    );
    let request_duration = histogram_vec(
        registry,
        "lb_request_duration_seconds",
        "Time from a request's headers to the end of its response, by upstream and backend.",
    );
    let upstream_duration = histogram_vec(
        registry,
        "lb_upstream_duration_seconds",
        "Time from choosing a backend to its response headers, by upstream and backend.",
    );
    (requests, request_duration, upstream_duration)
}

/// `lb_upstream_connections_total` for reused = false and true.
fn upstream_connection_counters(registry: &Registry) -> [IntCounter; 2] {
    let vec = counter_vec(
        registry,
        "lb_upstream_connections_total",
        "Connections to backends used for a request: reused from the keep-alive pool or new.",
        &["reused"],
    );
    ["false", "true"].map(|reused| vec.with_label_values(&[reused]))
}

/// A counter without labels, registered in `registry`.
fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

/// The handles of one backend, `labels` being its upstream and address.
fn backend_handles(
    requests: &IntCounterVec,
    duration: &HistogramVec,
    upstream: &HistogramVec,
    labels: [&str; 2],
) -> BackendMetrics {
    let [pool, backend] = labels;
    BackendMetrics {
        by_class: STATUS_CLASSES.map(|class| requests.with_label_values(&[pool, backend, class])),
        duration: duration.with_label_values(&labels),
        upstream: upstream.with_label_values(&labels),
        checks: None,
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
