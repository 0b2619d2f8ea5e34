//! What the policies export: `lb_policy_decisions_total{policy,outcome}`,
//! `lb_proxy_protocol_errors_total{listener,reason}` and, for cluster
//! rate limits, `lb_rate_limit_store_errors_total{reason}`. A policy's
//! counters are resolved once, when its config is built, so a request pays
//! an atomic add; a reload that removes a policy removes its series.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::metrics::counter_vec;

/// The outcomes a policy decision is counted under.
pub const OUTCOMES: [&str; 5] = ["allowed", "denied", "limited", "unauthorized", "redirected"];

/// What a policy decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request went on.
    Allowed = 0,
    /// An access rule refused it (403, or the connection closed).
    Denied = 1,
    /// A rate or connection limit refused it (429).
    Limited = 2,
    /// Authentication refused it (401, or the auth service's answer).
    Unauthorized = 3,
    /// lb answered with a redirect.
    Redirected = 4,
}

/// The policy metrics.
pub struct PolicyMetrics {
    decisions: IntCounterVec,
    proxy_protocol_errors: IntCounterVec,
    /// Calls to the cluster limits' Redis that failed: timeout, error.
    pub store_errors: [IntCounter; 2],
}

/// One policy's decision counters, by [`Outcome`].
#[derive(Debug, Clone)]
pub struct PolicyCounters([IntCounter; 5]);

impl PolicyCounters {
    /// Counts one decision.
    pub fn count(&self, outcome: Outcome) {
        self.0[outcome as usize].inc();
    }

    /// The counts so far, by [`OUTCOMES`].
    pub fn totals(&self) -> [u64; 5] {
        [0, 1, 2, 3, 4].map(|i| self.0[i].get())
    }
}

impl PolicyMetrics {
    pub(super) fn new(registry: &Registry) -> PolicyMetrics {
        PolicyMetrics {
            decisions: counter_vec(
                registry,
                "lb_policy_decisions_total",
                "Requests each policy decided on, by policy and outcome (allowed, denied, \
                 limited, unauthorized, redirected; a route's redirect counts as policy \
                 \"redirect:<route>\").",
                &["policy", "outcome"],
            ),
            proxy_protocol_errors: counter_vec(
                registry,
                "lb_proxy_protocol_errors_total",
                "Connections closed for their PROXY protocol header, by listener and reason \
                 (missing, malformed, too_long, timeout, closed, io).",
                &["listener", "reason"],
            ),
            store_errors: {
                let errors = counter_vec(
                    registry,
                    "lb_rate_limit_store_errors_total",
                    "Calls to the Redis of cluster rate limits that failed, by reason (timeout, \
                     error); each such decision was made locally with the fallback share.",
                    &["reason"],
                );
                ["timeout", "error"].map(|reason| errors.with_label_values(&[reason]))
            },
        }
    }

    /// The counters of the policy `name`, made once per config.
    pub fn counters(&self, name: &str) -> PolicyCounters {
        PolicyCounters(OUTCOMES.map(|outcome| self.decisions.with_label_values(&[name, outcome])))
    }

    /// Removes the series of a policy a reload removed.
    pub fn forget(&self, name: &str) {
        for outcome in OUTCOMES {
            let _ = self.decisions.remove_label_values(&[name, outcome]);
        }
    }

    /// Counts a connection closed for its PROXY header.
    pub fn proxy_protocol_error(&self, listener: &str, reason: &str) {
        self.proxy_protocol_errors
            .with_label_values(&[listener, reason])
            .inc();
    }
}
