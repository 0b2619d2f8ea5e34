//! The retry budget: retries in flight may add at most a set share of the
//! requests in flight, so retries cannot multiply an outage (Envoy's
//! `retry_budget`). A small floor keeps retries possible at low traffic.
//!
//! Each request holds a [`RequestTicket`] for its lifetime; dropping it
//! releases what it counted, so no exit path can leak a count.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::config::RetryConfig;

/// Counts of requests and retries in flight, shared by all worker threads.
pub struct RetryBudget {
    active: AtomicUsize,
    retrying: AtomicUsize,
    percent: AtomicUsize,
    min_retries: AtomicUsize,
}

/// One request's hold on the budget.
pub struct RequestTicket {
    budget: &'static RetryBudget,
    /// Whether this request holds one of the retry slots.
    retrying: bool,
}

impl RetryBudget {
    /// A budget for the process's lifetime (it is read by every request).
    pub fn leak(config: &RetryConfig) -> &'static RetryBudget {
        Box::leak(Box::new(RetryBudget {
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            percent: AtomicUsize::new(config.budget_percent),
            min_retries: AtomicUsize::new(config.budget_min_retries),
        }))
    }

    /// Applies reloaded settings.
    pub fn set_config(&self, config: &RetryConfig) {
        self.percent.store(config.budget_percent, Relaxed);
        self.min_retries.store(config.budget_min_retries, Relaxed);
    }

    /// Counts a new request in flight until the ticket is dropped.
    pub fn admit(&'static self) -> RequestTicket {
        self.active.fetch_add(1, Relaxed);
        RequestTicket {
            budget: self,
            retrying: false,
        }
    }

    fn limit(&self) -> usize {
        let active = self.active.load(Relaxed);
        (active * self.percent.load(Relaxed) / 100).max(self.min_retries.load(Relaxed))
    }
}

impl RequestTicket {
    /// Takes a retry slot for this request if the budget allows; a request
    /// that already holds one keeps it for its further retries.
    pub fn try_retry(&mut self) -> bool {
        if self.retrying {
            return true;
        }
        let budget = self.budget;
        let in_flight = budget.retrying.fetch_add(1, Relaxed) + 1;
        if in_flight > budget.limit() {
            budget.retrying.fetch_sub(1, Relaxed);
            return false;
        }
        self.retrying = true;
        true
    }
}

impl Drop for RequestTicket {
    fn drop(&mut self) {
        self.budget.active.fetch_sub(1, Relaxed);
        if self.retrying {
            self.budget.retrying.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: usize, min_retries: usize) -> &'static RetryBudget {
        RetryBudget::leak(&RetryConfig {
            attempts: 2,
            budget_percent: percent,
            budget_min_retries: min_retries,
        })
    }

    #[test]
    fn the_floor_allows_retries_at_low_traffic() {
        let budget = budget(20, 2);
        let mut tickets: Vec<_> = (0..3).map(|_| budget.admit()).collect();
        assert!(tickets[0].try_retry());
        assert!(tickets[1].try_retry());
        assert!(!tickets[2].try_retry());
        // A request keeps its slot for its further retries.
        assert!(tickets[0].try_retry());
    }

    #[test]
    fn retries_are_a_share_of_active_requests() {
        let budget = budget(20, 0);
        let mut tickets: Vec<_> = (0..50).map(|_| budget.admit()).collect();
        let granted = tickets
            .iter_mut()
            .filter_map(|t| t.try_retry().then_some(()))
            .count();
        assert_eq!(granted, 10);
        drop(tickets);
        assert_eq!(budget.active.load(Relaxed), 0);
        assert_eq!(budget.retrying.load(Relaxed), 0);
    }
}
