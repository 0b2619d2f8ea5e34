//! Log set-up shared by `lb` and `be`: env_logger, `RUST_LOG` to choose.

/// What is logged when `RUST_LOG` is unset: lb's own lines at info, Pingora's
/// warnings. Pingora's load-balancing crate logs health changes in its own
/// words; lb logs them itself (`backend ... down: ...`), so that crate's
/// lines are kept to errors.
const DEFAULT_FILTER: &str = "info,pingora_load_balancing=error";

/// Starts logging to stderr.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER))
        .init();
}
