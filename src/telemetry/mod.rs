//! What lb tells operators about itself while it runs: Prometheus metrics,
//! the access log, and the set-up of `RUST_LOG` logging.

pub mod access_log;
pub mod connections;
pub mod logging;
pub mod metrics;
pub mod policies;
pub mod protocols;
pub mod throttled;
