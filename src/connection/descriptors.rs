//! Open-file headroom. A client connection can need two descriptors (the
//! client's and the backend's; three when lb keeps a second one of the
//! backend's for `on_marked_down: close`), and lb needs its own beside them
//! (listeners, health checks, logs, the admin API). At start lb raises its
//! soft open-file limit to the hard one, and when `2 × max_connections +
//! 256` (or 3 ×) still does not fit, it lowers the connection limit to fit and warns
//! once: a client flood then meets the connection limit, never the
//! open-file limit, so the health checker can always open its sockets.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Descriptors kept for lb's own use, beyond two per client connection.
pub const RESERVED: u64 = 256;

/// What the open-file limit leaves for client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The open-file limit lb runs with (the hard limit, once raised).
    pub limit: u64,
    /// `limits.max_connections` as it fits that limit.
    pub max_connections: usize,
    /// Set when `max_connections` had to be lowered: the warning to give.
    pub lowered: Option<String>,
}

/// How many client connections fit in `limit` open files, given the
/// `requested` `limits.max_connections` and the descriptors each takes.
pub fn fit(limit: u64, requested: usize, per_connection: u64) -> DescriptorBudget {
    let needed = per_connection * requested as u64 + RESERVED;
    if needed <= limit {
        return DescriptorBudget {
            limit,
            max_connections: requested,
            lowered: None,
        };
    }
    let fits = (limit.saturating_sub(RESERVED) / per_connection).max(1) as usize;
    DescriptorBudget {
        limit,
        max_connections: fits,
        lowered: Some(format!(
            "limits.max_connections: {requested} needs {needed} open files \
             ({per_connection} per connection + {RESERVED}), but the limit is {limit}: \
             lb takes at most {fits} connections (raise `ulimit -n`, or LimitNOFILE in systemd)"
        )),
    }
}

/// The hard open-file limit, which lb can raise its soft limit to; None
/// when it cannot be read or has no bound.
pub fn hard_limit() -> Option<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (hard != RLIM_INFINITY).then_some(hard)
}

/// Raises the soft open-file limit to the hard one, and returns what the
/// limit leaves for `requested` client connections.
pub fn raise_and_fit(requested: usize, per_connection: u64) -> DescriptorBudget {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return fit(u64::MAX, requested, per_connection);
    };
    let limit = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            log::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            soft
        }
    };
    if limit == RLIM_INFINITY {
        return fit(u64::MAX, requested, per_connection);
    }
    fit(limit, requested, per_connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_fits_is_kept() {
        let budget = fit(20_000, 9_872, 2);
        assert_eq!(budget.max_connections, 9_872);
        assert_eq!(budget.lowered, None);
    }

    #[test]
    fn a_limit_that_does_not_fit_is_lowered_and_said() {
        let budget = fit(1_024, 10_000, 2);
        assert_eq!(budget.max_connections, 384);
        let warning = budget.lowered.expect("a warning");
        assert!(
            warning.contains("limits.max_connections: 10000"),
            "{warning}"
        );
        assert!(warning.contains("at most 384"), "{warning}");
    }

    #[test]
    fn a_tiny_limit_still_leaves_one_connection() {
        assert_eq!(fit(100, 10, 2).max_connections, 1);
    }
}
