//! Log set-up shared by `lb` and `be`: env_logger, `RUST_LOG` to choose,
//! behind a filter that lowers the few lines Pingora logs at ERROR for
//! what clients (or a benign race) cause, so that any client cannot write
//! ERROR lines to lb's log at will.
//!
//! Each lowered line is named by its module (the log target) and the start
//! of its message, as Pingora 0.9 writes it: lowering a whole module would
//! hide its real faults (`Accept() failed` shares a module with the
//! handshake errors). Everything else passes unchanged.

use std::fmt::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::telemetry::metrics::metrics;

/// What is logged when `RUST_LOG` is unset: lb's own lines at info, Pingora's
/// warnings. Pingora's load-balancing crate logs health changes in its own
/// words; lb logs them itself (`backend ... down: ...`), so that crate's
/// lines are kept to errors.
const DEFAULT_FILTER: &str = "info,pingora_load_balancing=error";

/// A Pingora line lb logs at a lower level than Pingora does.
struct Lowered {
    /// The module that logs it, exactly (`log`'s target).
    target: &'static str,
    /// The start of its message.
    prefix: &'static str,
    /// What lb also does with it: count it in a metric.
    count: Option<fn()>,
}

/// Pingora's client-caused ERROR lines, logged at debug instead.
const LOWERED: &[Lowered] = &[
    // services/listening.rs: a TLS handshake a client broke off, or plain
    // HTTP or garbage on a TLS port. Counted by lb in
    // `lb_tls_handshakes_total` (outcome `failed` or `not_tls`).
    Lowered {
        target: "pingora_core::services::listening",
        prefix: "Downstream handshake error",
        count: None,
    },
    Lowered {
        target: "pingora_core::services::listening",
        prefix: "Downstream handshake timeout",
        count: None,
    },
    // apps/mod.rs: an HTTP/2 client whose first frames were not HTTP/2's.
    Lowered {
        target: "pingora_core::apps",
        prefix: "H2 handshake error",
        count: None,
    },
    // server/transfer_fd: the new process of an upgrade waiting, once a
    // second, for the old one to hand over its listening sockets: every
    // normal upgrade logs it until the old process gets SIGQUIT.
    Lowered {
        target: "pingora_core::server::transfer_fd",
        prefix: "No incoming socket transfer",
        count: None,
    },
    // connectors/mod.rs: a pooled backend connection raced with its idle
    // watcher; Pingora drops it and opens a new one. Benign, but each is a
    // wasted connection: counted.
    Lowered {
        target: "pingora_core::connectors",
        prefix: "failed to acquire reusable stream",
        count: Some(count_reuse_race),
    },
];

fn count_reuse_race() {
    metrics().upstream_reuse_races.inc();
}

/// The rule that lowers `record`, if one does. Only Pingora's errors are
/// looked at; the message is formatted only as far as the prefix.
fn lowered(record: &Record<'_>) -> Option<&'static Lowered> {
    if record.level() != Level::Error || !record.target().starts_with("pingora_core") {
        return None;
    }
    LOWERED
        .iter()
        .filter(|rule| rule.target == record.target())
        .find(|rule| message_starts_with(record.args(), rule.prefix))
}

/// Whether `args`, formatted, starts with `prefix`. Formats no further than
/// the prefix, into no buffer.
fn message_starts_with(args: &fmt::Arguments<'_>, prefix: &str) -> bool {
    if let Some(text) = args.as_str() {
        return text.starts_with(prefix);
    }
    /// Compares what is written with what is left of the prefix; stops the
    /// formatting (with an error) at the first difference or at its end.
    struct Prefix<'a>(&'a [u8]);
    impl Write for Prefix<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let n = s.len().min(self.0.len());
            if s.as_bytes()[..n] != self.0[..n] {
                return Err(fmt::Error);
            }
            self.0 = &self.0[n..];
            if self.0.is_empty() {
                Err(fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut rest = Prefix(prefix.as_bytes());
    let _ = rest.write_fmt(*args);
    rest.0.is_empty()
}

/// env_logger behind the [`LOWERED`] rules.
struct Logger {
    inner: env_logger::Logger,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let Some(rule) = lowered(record) else {
            self.inner.log(record);
            return;
        };
        if let Some(count) = rule.count {
            count();
        }
        self.inner.log(
            &Record::builder()
                .args(*record.args())
                .level(Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Starts logging to stderr.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER))
            .build();
    // Errors always reach the logger, even with `RUST_LOG=off`: the lowered
    // lines are counted whatever is logged.
    let max = inner.filter().max(LevelFilter::Error);
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_lowered(target: &str, args: fmt::Arguments<'_>) -> bool {
        let record = Record::builder()
            .level(Level::Error)
            .target(target)
            .args(args)
            .build();
        lowered(&record).is_some()
    }

    #[test]
    fn pingora_client_errors_are_lowered_by_module_and_message() {
        let addr = "127.0.0.1:5000";
        let listening = "pingora_core::services::listening";
        assert!(record_lowered(
            listening,
            format_args!("Downstream handshake error from {addr}: bad")
        ));
        assert!(record_lowered(
            listening,
            format_args!("Downstream handshake timeout")
        ));
        // The same module's real faults stay errors.
        assert!(!record_lowered(
            listening,
            format_args!("Accept() failed {addr}")
        ));
        // The same words from another module stay errors.
        assert!(!record_lowered(
            "pingora_core::apps",
            format_args!("Downstream handshake timeout")
        ));
        assert!(record_lowered(
            "pingora_core::connectors",
            format_args!("failed to acquire reusable stream")
        ));
    }

    #[test]
    fn a_prefix_is_matched_across_formatted_arguments() {
        let part = "handshake";
        assert!(message_starts_with(
            &format_args!("Downstream {part} error from x"),
            "Downstream handshake error"
        ));
        assert!(!message_starts_with(
            &format_args!("Downstream {part}"),
            "Downstream handshake error"
        ));
        assert!(!message_starts_with(
            &format_args!("Upstream {part} error"),
            "Downstream handshake error"
        ));
    }
}
